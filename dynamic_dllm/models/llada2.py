"""LLaDA2.0 (LLaDA2.0-mini / flash) as a native module — no ``trust_remote_code``.

The Ling-2.0 (BailingMoeV2) layout with block-causal attention at inference (the checkpoint's
``generate`` builds a block-lower-triangular mask over blocks of ``block_length`` from position 0):
RMSNorm (eps from config), one fused ``query_key_value`` projection (bias iff ``use_qkv_bias``; rows
``[Q | K | V]``) and ``dense`` output projection (bias iff ``use_bias``), GQA, ``head_dim`` from
config, per-head QK-norm before RoPE (``use_qk_norm``), *partial* RoPE (the first
``head_dim · partial_rotary_factor`` dimensions rotate; cos/sin cast to the activation dtype).
Layers ``< first_k_dense_replace`` have a dense SwiGLU of ``intermediate_size``; the others a
mixture of ``num_experts`` SwiGLU experts of ``moe_intermediate_size``, top ``num_experts_per_tok``,
with the group-limited sigmoid router (``n_group``, ``topk_group``, ``expert_bias`` steering the
choice, weights normalised and scaled by ``routed_scaling_factor``) and ``num_shared_experts`` shared
experts fused into one SwiGLU (:class:`~dynamic_dllm.core.moe.GroupLimitedMoE`). Logits not shifted.

Keys: ``model.word_embeddings``, ``model.layers.N.{input_layernorm, attention.{query_key_value, dense,
query_layernorm, key_layernorm}, post_attention_layernorm, mlp.{gate.weight, gate.expert_bias,
experts.J.{gate,up,down}_proj, shared_experts.{gate,up,down}_proj}}`` (dense layers:
``mlp.{gate,up,down}_proj``), ``model.norm``, ``lm_head``. ``block_size`` (the attention block the
generation must use) is config.json's ``block_size`` when present, else 32 (``generate``'s default).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.architecture import DecoderModel, LayerParts, RMSNorm
from ..core.moe import GroupLimitedMoE, SwiGLU
from ..core.validators import check_config_fields, with_defaults
from .hf_layout import HFDecoderLayout, set_dimensions

#: config.json fields this adapter reads and their defaults (LLaDA2.0-mini's values as published
#: by third parties — a real config.json names them all)
LLADA2_CONFIG_DEFAULTS = {
    "hidden_size": 2048,
    "intermediate_size": 5120,
    "num_hidden_layers": 20,
    "num_attention_heads": 16,
    "num_key_value_heads": 4,
    "head_dim": None,
    "num_experts": 256,
    "num_shared_experts": 1,
    "num_experts_per_tok": 8,
    "n_group": 8,
    "topk_group": 4,
    "routed_scaling_factor": 2.5,
    "moe_intermediate_size": 512,
    "first_k_dense_replace": 1,
    "partial_rotary_factor": 0.5,
    "vocab_size": 157184,
    "rms_norm_eps": 1e-6,
    "rope_theta": 600000.0,
    "max_position_embeddings": 32768,
    "block_size": 32,
    "mask_token_id": 156895,
    "eos_token_id": 156892,
    "pad_token_id": None,
}


class RowsOf(nn.Module):
    """Rows ``[start, end)`` of a fused linear layer as a linear layer of their own (a view: the
    fused weight stays the checkpoint's one tensor)."""

    def __init__(self, fused: nn.Linear, start: int, end: int):
        super().__init__()
        self.fused, self.start, self.end = fused, start, end

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.fused.bias is None else self.fused.bias[self.start:self.end]
        return F.linear(x, self.fused.weight[self.start:self.end], bias)


class LLaDA2Attention(nn.Module):
    def __init__(self, c: dict, head_dim: int, n_kv_heads: int):
        super().__init__()
        d, H, eps = c["hidden_size"], c["num_attention_heads"], c["rms_norm_eps"]
        self.query_key_value = nn.Linear(d, (H + 2 * n_kv_heads) * head_dim, bias=bool(c.get("use_qkv_bias", False)))
        self.dense = nn.Linear(H * head_dim, d, bias=bool(c.get("use_bias", False)))
        if c.get("use_qk_norm", True):
            self.query_layernorm = RMSNorm(head_dim, eps)
            self.key_layernorm = RMSNorm(head_dim, eps)


class LLaDA2Layer(nn.Module):
    def __init__(self, c: dict, head_dim: int, n_kv_heads: int, moe: bool):
        super().__init__()
        d, eps = c["hidden_size"], c["rms_norm_eps"]
        self.input_layernorm = RMSNorm(d, eps)
        self.attention = LLaDA2Attention(c, head_dim, n_kv_heads)
        self.post_attention_layernorm = RMSNorm(d, eps)
        if moe:
            shared = c["moe_intermediate_size"] * c["num_shared_experts"] if c["num_shared_experts"] else None
            self.mlp = GroupLimitedMoE(d, c["moe_intermediate_size"], c["num_experts"], c["num_experts_per_tok"],
                                       c["n_group"], c["topk_group"], float(c["routed_scaling_factor"]), shared)
        else:
            self.mlp = SwiGLU(d, c["intermediate_size"])


class LLaDA2Model(HFDecoderLayout, DecoderModel):
    #: HF ``architectures`` names this adapter loads
    architectures = ("LLaDA2MoeModelLM",)
    family = "llada2"
    logit_shift = 0
    rope_full_precision = False
    block_causal = True
    default_cache = "block-kv"
    embed_key = "word_embeddings"

    def __init__(self, config: dict):
        super().__init__()
        c = with_defaults(LLADA2_CONFIG_DEFAULTS, config)
        check_config_fields(c, positive=("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                         "num_key_value_heads", "head_dim", "num_experts", "num_experts_per_tok", "n_group",
                                         "topk_group", "moe_intermediate_size", "vocab_size", "max_position_embeddings",
                                         "block_size"),
                            numbers=("rope_theta", "rms_norm_eps", "routed_scaling_factor", "partial_rotary_factor"),
                            token_ids=("mask_token_id", "eos_token_id", "pad_token_id"), vocab=c.get("vocab_size"))
        if c.get("rope_scaling") is not None:
            raise ValueError(f"config.json: rope_scaling={c['rope_scaling']!r} is not supported (LLaDA2 uses none)")
        if c.get("hidden_act", "silu") != "silu":
            raise ValueError(f"config.json: hidden_act={c['hidden_act']!r} is not supported (LLaDA2 uses silu)")
        if c.get("use_sliding_window"):
            raise ValueError("config.json: use_sliding_window=true is not supported (LLaDA2 attends to every earlier block)")
        if not isinstance(c.get("first_k_dense_replace", 0), int) or c["first_k_dense_replace"] < 0:
            raise ValueError(f"config.json: first_k_dense_replace must be an integer >= 0, got {c['first_k_dense_replace']!r}")
        set_dimensions(self, c)
        self.rope_dim = int(self.head_dim * float(c["partial_rotary_factor"]))
        if not 2 <= self.rope_dim <= self.head_dim or self.rope_dim % 2:
            raise ValueError(f"config.json: partial_rotary_factor={c['partial_rotary_factor']!r} gives {self.rope_dim} rotated"
                             f" dimensions of head_dim={self.head_dim}; it must be an even number in [2, head_dim]")
        self.block_size = c["block_size"]
        self.moe_layers = tuple(i >= c["first_k_dense_replace"] for i in range(self.n_layers))
        self.build_outer((LLaDA2Layer(c, self.head_dim, self.n_kv_heads, moe) for moe in self.moe_layers), c["rms_norm_eps"])

    def layer(self, index: int) -> LayerParts:
        b = self.model.layers[index]
        a = b.attention
        q, kv = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        qkv = (RowsOf(a.query_key_value, 0, q), RowsOf(a.query_key_value, q, q + kv),
               RowsOf(a.query_key_value, q + kv, q + 2 * kv))
        head = (b.input_layernorm, *qkv, a.dense, b.post_attention_layernorm)
        norms = (getattr(a, "query_layernorm", None), getattr(a, "key_layernorm", None))
        if isinstance(b.mlp, GroupLimitedMoE):
            return LayerParts(*head, None, None, None, *norms, moe=b.mlp)
        return LayerParts(*head, b.mlp.gate_proj, b.mlp.up_proj, b.mlp.down_proj, *norms)
