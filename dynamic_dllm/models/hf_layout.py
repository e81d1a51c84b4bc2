"""The HF decoder layout Dream (Qwen2), SDAR (Qwen3) and LLaDA-MoE (OLMoE) share around their layers:
``model.embed_tokens``, ``model.layers.N.{input_layernorm, self_attn.{q,k,v,o}_proj,
post_attention_layernorm, …}``, ``model.norm``, and ``lm_head`` (absent when the embeddings are tied:
logits = h · embed_tokensᵀ)."""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..core.architecture import RMSNorm


class HFDecoderLayout:
    """Mixin for a :class:`~dynamic_dllm.core.architecture.DecoderModel`: builds and reads the outer
    modules. The adapter sets ``vocab_size``, ``d_model`` and ``tied`` before :meth:`build_outer`."""

    tied: bool = False

    def build_outer(self, layers: Iterable[nn.Module], eps: float) -> None:
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(self.vocab_size, self.d_model)
        self.model.layers = nn.ModuleList(layers)
        self.model.norm = RMSNorm(self.d_model, eps)
        if not self.tied:
            self.lm_head = nn.Linear(self.d_model, self.vocab_size, bias=False)

    def attention_parts(self, index: int) -> tuple:
        """Layer ``index``'s (input norm, q, k, v, o projections, post-attention norm): the first six
        :class:`~dynamic_dllm.core.architecture.LayerParts` fields."""
        b = self.model.layers[index]
        a = b.self_attn
        return b.input_layernorm, a.q_proj, a.k_proj, a.v_proj, a.o_proj, b.post_attention_layernorm

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.embed_tokens(input_ids)

    def final_norm(self, h: torch.Tensor) -> torch.Tensor:
        return self.model.norm(h)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h, self.model.embed_tokens.weight) if self.tied else self.lm_head(h)
