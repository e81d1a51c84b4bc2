"""LLaDA (LLaDA-8B-Base/Instruct, LLaDA-1.5) as a native module — no ``trust_remote_code``.

Layout of the HF checkpoint (``block_type = "llama"``): RMSNorm in fp32, half-split RoPE with
``rope_theta`` from config (fp32 rotation), SwiGLU ``ff_out(silu(ff_proj(x)) * up_proj(x))``, no
biases, bidirectional attention, untied head. Parameter names are exactly the checkpoint keys:
``model.transformer.{wte, blocks.N.{attn_norm, q_proj, k_proj, v_proj, attn_out, ff_norm, ff_proj,
up_proj, ff_out}, ln_f, ff_out}``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.architecture import DecoderModel, LayerParts, RMSNorm
from ..core.validators import check_config_fields, with_defaults

#: config.json fields this adapter reads (LLaDA's own names) and their defaults.
LLADA_CONFIG_DEFAULTS = {
    "d_model": 4096,
    "n_layers": 32,
    "n_heads": 32,
    "n_kv_heads": None,
    "mlp_hidden_size": 12288,
    "vocab_size": 126464,
    "embedding_size": None,
    "rope_theta": 500000.0,
    "rms_norm_eps": 1e-5,
    "max_sequence_length": 4096,
    "mask_token_id": 126336,
    "eos_token_id": 126081,
    "pad_token_id": 126081,
}


class LLaDABlock(nn.Module):
    def __init__(self, d: int, n_heads: int, n_kv_heads: int, d_ff: int, eps: float):
        super().__init__()
        head_dim = d // n_heads
        self.attn_norm = RMSNorm(d, eps)
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, n_kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(d, n_kv_heads * head_dim, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.ff_norm = RMSNorm(d, eps)
        self.ff_proj = nn.Linear(d, d_ff, bias=False)
        self.up_proj = nn.Linear(d, d_ff, bias=False)
        self.ff_out = nn.Linear(d_ff, d, bias=False)


class LLaDAModel(DecoderModel):
    #: HF ``architectures`` names this adapter loads (the loader dispatches on them first)
    architectures = ("LLaDAModelLM",)
    family = "llada"
    logit_shift = 0
    rope_full_precision = True

    def __init__(self, config: dict):
        super().__init__()
        c = with_defaults(LLADA_CONFIG_DEFAULTS, config)
        check_config_fields(c, positive=("d_model", "n_layers", "n_heads", "n_kv_heads", "mlp_hidden_size", "vocab_size",
                                         "embedding_size", "max_sequence_length"),
                            numbers=("rope_theta", "rms_norm_eps"), token_ids=("mask_token_id", "eos_token_id", "pad_token_id"),
                            vocab=c.get("embedding_size") or c.get("vocab_size"))
        if c.get("block_type", "llama") != "llama" or c.get("include_bias", False):
            raise ValueError(
                f"unsupported LLaDA variant: block_type={c.get('block_type')!r}, include_bias={c.get('include_bias')!r}"
                " (only the 'llama' block without biases is implemented)"
            )
        if c.get("scale_logits", False):
            raise ValueError("scale_logits=true is not supported (no LLaDA checkpoint uses it)")
        #: tied embeddings (iLLaDA-style): logits = h · wteᵀ, no separate ff_out head
        self.tied = bool(c.get("weight_tying", False))
        self.config = c
        self.d_model = c["d_model"]
        self.n_layers = c["n_layers"]
        self.n_heads = c["n_heads"]
        self.n_kv_heads = c["n_kv_heads"] or c["n_heads"]
        if self.d_model % self.n_heads or self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"d_model={self.d_model} must divide by n_heads={self.n_heads}, and n_heads by n_kv_heads={self.n_kv_heads}"
            )
        self.head_dim = self.d_model // self.n_heads
        self.d_ff = c["mlp_hidden_size"]
        self.vocab_size = c["embedding_size"] or c["vocab_size"]
        self.rope_theta = float(c["rope_theta"])
        self.max_length = c["max_sequence_length"]
        self.mask_id = c["mask_token_id"]
        self.eos_id = c["eos_token_id"]
        self.pad_id = c["pad_token_id"]
        eps = c["rms_norm_eps"]
        self.model = nn.Module()
        self.model.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(self.vocab_size, self.d_model),
                "blocks": nn.ModuleList(
                    LLaDABlock(self.d_model, self.n_heads, self.n_kv_heads, self.d_ff, eps) for _ in range(self.n_layers)
                ),
                "ln_f": RMSNorm(self.d_model, eps),
            }
        )
        if not self.tied:
            self.model.transformer["ff_out"] = nn.Linear(self.d_model, self.vocab_size, bias=False)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.transformer["wte"](input_ids)

    def layer(self, index: int) -> LayerParts:
        b = self.model.transformer["blocks"][index]
        return LayerParts(b.attn_norm, b.q_proj, b.k_proj, b.v_proj, b.attn_out, b.ff_norm, b.ff_proj, b.up_proj, b.ff_out)

    def final_norm(self, h: torch.Tensor) -> torch.Tensor:
        return self.model.transformer["ln_f"](h)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        if self.tied:
            return F.linear(h, self.model.transformer["wte"].weight)
        return self.model.transformer["ff_out"](h)
