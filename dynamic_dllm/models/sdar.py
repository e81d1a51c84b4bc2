"""SDAR (JetAstra/SDAR: SDAR-1.7B/4B/8B-Chat, TraDo) as a native module — no ``trust_remote_code``.

A block-diffusion model in the Qwen3 layout (the checkpoint's ``modeling_sdar.py`` is Qwen3's with
the attention replaced): RMSNorm (eps from config), Q/K/V/O (bias iff ``attention_bias``), GQA,
``head_dim`` from config (Qwen3: not ``hidden_size / heads``), QK-norm (an RMSNorm over
``head_dim`` shared by the heads, before RoPE), HF RoPE (``rope_theta``; cos/sin cast to the
activation dtype), SwiGLU MLP, ``lm_head`` untied unless ``tie_word_embeddings``. Logits are not
shifted: position i's logits predict the token at i.

Attention is block-causal over blocks of ``block_size`` counted from position 0 (bidirectional
inside a block, causal across blocks); the reference sampler prefills the prompt's whole blocks
and decodes each later block attending to itself and to the kept K/V of every earlier block
(the ``block-kv`` cache policy; :mod:`dynamic_dllm.policies.block_kv`).

Keys: ``model.embed_tokens``, ``model.layers.N.{input_layernorm, self_attn.{q,k,v,o}_proj,
self_attn.{q,k}_norm, post_attention_layernorm, mlp.{gate,up,down}_proj}``, ``model.norm``,
``lm_head``. Differs from the reference only in rounding in half precision: its RMSNorm (a Triton
kernel) multiplies by the weight before casting back, ours after (Qwen3's order).
"""

from __future__ import annotations

from torch import nn

from ..core.architecture import DecoderModel, LayerParts, RMSNorm
from ..core.moe import SwiGLU
from ..core.validators import check_config_fields, with_defaults
from .hf_layout import HFDecoderLayout, set_dimensions

#: config.json fields this adapter reads and their defaults (SDAR-4B-Chat's values)
SDAR_CONFIG_DEFAULTS = {
    "hidden_size": 2560,
    "intermediate_size": 9728,
    "num_hidden_layers": 36,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": None,
    "vocab_size": 151936,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "max_position_embeddings": 32768,
    "block_size": 4,
    "mask_token_id": 151669,
    "eos_token_id": 151643,
    "pad_token_id": None,
}


class SDARAttention(nn.Module):
    def __init__(self, d: int, n_heads: int, n_kv_heads: int, head_dim: int, bias: bool, eps: float):
        super().__init__()
        self.q_proj = nn.Linear(d, n_heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(d, n_kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(d, n_kv_heads * head_dim, bias=bias)
        self.o_proj = nn.Linear(n_heads * head_dim, d, bias=bias)
        self.q_norm = RMSNorm(head_dim, eps)
        self.k_norm = RMSNorm(head_dim, eps)


class SDARLayer(nn.Module):
    def __init__(self, d: int, n_heads: int, n_kv_heads: int, head_dim: int, d_ff: int, bias: bool, eps: float):
        super().__init__()
        self.input_layernorm = RMSNorm(d, eps)
        self.self_attn = SDARAttention(d, n_heads, n_kv_heads, head_dim, bias, eps)
        self.post_attention_layernorm = RMSNorm(d, eps)
        self.mlp = SwiGLU(d, d_ff)  # the Qwen MLP: mlp.{gate,up,down}_proj, no bias


class SDARModel(HFDecoderLayout, DecoderModel):
    #: HF ``architectures`` names this adapter loads
    architectures = ("SDARForCausalLM",)
    family = "sdar"
    logit_shift = 0
    rope_full_precision = False
    block_causal = True
    default_cache = "block-kv"

    def __init__(self, config: dict):
        super().__init__()
        c = with_defaults(SDAR_CONFIG_DEFAULTS, config)
        check_config_fields(c, positive=("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                         "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings",
                                         "block_size"),
                            numbers=("rope_theta", "rms_norm_eps"), token_ids=("mask_token_id", "eos_token_id", "pad_token_id"),
                            vocab=c.get("vocab_size"))
        if c.get("rope_scaling") is not None:
            raise ValueError(f"config.json: rope_scaling={c['rope_scaling']!r} is not supported (SDAR checkpoints use none)")
        if c.get("hidden_act", "silu") != "silu":
            raise ValueError(f"config.json: hidden_act={c['hidden_act']!r} is not supported (SDAR uses silu)")
        set_dimensions(self, c)
        self.block_size = c["block_size"]
        eps, bias = c["rms_norm_eps"], bool(c.get("attention_bias", False))
        self.build_outer((SDARLayer(self.d_model, self.n_heads, self.n_kv_heads, self.head_dim, self.d_ff, bias, eps)
                          for _ in range(self.n_layers)), eps)

    def layer(self, index: int) -> LayerParts:
        b = self.model.layers[index]
        m = b.mlp
        return LayerParts(*self.attention_parts(index), m.gate_proj, m.up_proj, m.down_proj, b.self_attn.q_norm, b.self_attn.k_norm)
