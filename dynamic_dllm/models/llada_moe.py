"""LLaDA-MoE (LLaDA-MoE-7B-A1B-Base/Instruct) as a native module — no ``trust_remote_code``.

The OLMoE layout with bidirectional attention (the reference ``modeling_lladamoe.py`` drops every
attention mask): RMSNorm (eps from config), Q/K/V/O (bias iff ``attention_bias``), GQA,
``head_dim = hidden_size / heads``, QK-norm when ``qk_layernorm`` (an RMSNorm over ``head_dim``
shared by the heads, before RoPE), HF RoPE (``rope_theta``; cos/sin cast to the activation dtype),
untied ``lm_head`` unless ``tie_word_embeddings``. Logits are not shifted.

FFN per layer: ``moe_layer_freq[i] == 0`` → a dense SwiGLU of ``dense_intermediate_size``, else a
mixture of ``num_experts`` SwiGLU experts of ``expert_intermediate_size``, top ``num_experts_per_tok``,
plus a shared expert of ``shared_expert_intermediate_size`` when set. The router is the reference's:
fp32 softmax over every expert, ``expert_bias`` added to the probabilities when
``moe_router_enable_expert_bias``, top-k, weights *not* renormalised — the reference hard-codes
``norm_topk_prob = False`` and ignores ``moe_router_score_function`` and ``routed_scaling_factor``,
and so does this adapter (see :mod:`dynamic_dllm.core.moe`).

Keys: ``model.embed_tokens``, ``model.layers.N.{input_layernorm, self_attn.{q,k,v,o}_proj,
self_attn.{q,k}_norm, post_attention_layernorm, mlp.gate, mlp.experts.J.{gate,up,down}_proj,
mlp.expert_bias, shared_expert.{gate,up,down}_proj}`` (dense layers: ``mlp.{gate,up,down}_proj``),
``model.norm``, ``lm_head``. The mask id is not in the released config.json: 156895 (the model
card's ``generate(..., mask_id=156895)``) unless the config names ``mask_token_id``.
"""

from __future__ import annotations

from torch import nn

from ..core.architecture import DecoderModel, LayerParts, RMSNorm
from ..core.moe import SparseMoE, SwiGLU
from ..core.validators import check_config_fields, with_defaults
from .hf_layout import HFDecoderLayout, set_dimensions

#: config.json fields this adapter reads and their defaults (LLaDA-MoE-7B-A1B's values)
LLADA_MOE_CONFIG_DEFAULTS = {
    "hidden_size": 2048,
    "num_hidden_layers": 16,
    "num_attention_heads": 16,
    "num_key_value_heads": None,
    "dense_intermediate_size": 8192,
    "expert_intermediate_size": 1024,
    "shared_expert_intermediate_size": None,
    "num_experts": 64,
    "num_experts_per_tok": 8,
    "vocab_size": 157184,
    "rms_norm_eps": 1e-5,
    "rope_theta": 50000.0,
    "partial_rotary_factor": 1.0,
    "max_position_embeddings": 8192,
    "mask_token_id": 156895,
    "eos_token_id": 156892,
    "pad_token_id": None,
}


class LLaDAMoEAttention(nn.Module):
    def __init__(self, d: int, n_heads: int, n_kv_heads: int, bias: bool, qk_norm: bool, eps: float):
        super().__init__()
        head_dim = d // n_heads
        self.q_proj = nn.Linear(d, d, bias=bias)
        self.k_proj = nn.Linear(d, n_kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(d, n_kv_heads * head_dim, bias=bias)
        self.o_proj = nn.Linear(d, d, bias=bias)
        if qk_norm:
            self.q_norm = RMSNorm(head_dim, eps)
            self.k_norm = RMSNorm(head_dim, eps)


class LLaDAMoELayer(nn.Module):
    def __init__(self, c: dict, n_kv_heads: int, moe: bool):
        super().__init__()
        d, eps = c["hidden_size"], c["rms_norm_eps"]
        self.input_layernorm = RMSNorm(d, eps)
        self.self_attn = LLaDAMoEAttention(d, c["num_attention_heads"], n_kv_heads, bool(c.get("attention_bias", False)),
                                           bool(c.get("qk_layernorm", False)), eps)
        self.post_attention_layernorm = RMSNorm(d, eps)
        if moe:
            self.mlp = SparseMoE(d, c["expert_intermediate_size"], c["num_experts"], c["num_experts_per_tok"],
                                 expert_bias=bool(c.get("moe_router_enable_expert_bias")))
            if c["shared_expert_intermediate_size"]:
                self.shared_expert = SwiGLU(d, c["shared_expert_intermediate_size"])
        else:
            self.mlp = SwiGLU(d, c["dense_intermediate_size"])


class LLaDAMoEModel(HFDecoderLayout, DecoderModel):
    #: HF ``architectures`` names this adapter loads (its ``model_type`` says ``llada``)
    architectures = ("LLaDAMoEModelLM",)
    family = "llada-moe"
    logit_shift = 0
    rope_full_precision = False

    def __init__(self, config: dict):
        super().__init__()
        c = with_defaults(LLADA_MOE_CONFIG_DEFAULTS, config)
        check_config_fields(c, positive=("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                                         "dense_intermediate_size", "expert_intermediate_size",
                                         "shared_expert_intermediate_size", "num_experts", "num_experts_per_tok",
                                         "vocab_size", "max_position_embeddings"),
                            numbers=("rope_theta", "rms_norm_eps"), token_ids=("mask_token_id", "eos_token_id", "pad_token_id"),
                            vocab=c.get("vocab_size"))
        for key in ("rope_scaling", "clip_qkv"):
            if c.get(key) is not None:
                raise ValueError(f"config.json: {key}={c[key]!r} is not supported (LLaDA-MoE checkpoints use none)")
        if float(c["partial_rotary_factor"]) != 1.0:
            raise ValueError(f"config.json: partial_rotary_factor={c['partial_rotary_factor']!r} is not supported"
                             " (LLaDA-MoE rotates every head dimension: 1.0)")
        if c.get("hidden_act", "silu") != "silu":
            raise ValueError(f"config.json: hidden_act={c['hidden_act']!r} is not supported (LLaDA-MoE uses silu)")
        if c["num_experts_per_tok"] > c["num_experts"]:
            raise ValueError(f"config.json: num_experts_per_tok={c['num_experts_per_tok']} exceeds num_experts={c['num_experts']}")
        set_dimensions(self, c, d_ff="dense_intermediate_size")
        freq = c.get("moe_layer_freq")
        freq = [1] * self.n_layers if freq is None else freq
        if not isinstance(freq, list) or len(freq) != self.n_layers or any(v not in (0, 1) for v in freq):
            raise ValueError(f"config.json: moe_layer_freq must list 0 (dense) or 1 (MoE) for each of the"
                             f" {self.n_layers} layers, got {freq!r}")
        self.moe_layers = tuple(bool(v) for v in freq)
        self.build_outer((LLaDAMoELayer(c, self.n_kv_heads, moe) for moe in self.moe_layers), c["rms_norm_eps"])

    def layer(self, index: int) -> LayerParts:
        b = self.model.layers[index]
        head, norms = self.attention_parts(index), (getattr(b.self_attn, "q_norm", None), getattr(b.self_attn, "k_norm", None))
        if isinstance(b.mlp, SparseMoE):
            return LayerParts(*head, None, None, None, *norms, moe=b.mlp, shared_expert=getattr(b, "shared_expert", None))
        return LayerParts(*head, b.mlp.gate_proj, b.mlp.up_proj, b.mlp.down_proj, *norms)
