"""The HF decoder layout Dream (Qwen2), SDAR (Qwen3), Fast-dLLM v2, LLaDA-MoE (OLMoE) and LLaDA2 (Ling)
share around their layers: ``model.embed_tokens`` (LLaDA2: ``model.word_embeddings``),
``model.layers.N.{input_layernorm, self_attn.{q,k,v,o}_proj, post_attention_layernorm, …}``,
``model.norm``, and ``lm_head`` (absent when the embeddings are tied: logits = h · embeddingsᵀ); and
the standard config.json fields they read their dimensions from (:func:`set_dimensions`)."""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..core.architecture import RMSNorm


def set_dimensions(model, c: dict, d_ff: str = "intermediate_size") -> None:
    """``model``'s :class:`~dynamic_dllm.core.architecture.DecoderModel` attributes from the standard
    fields of its config ``c``: ``hidden_size``, ``num_hidden_layers``, ``num_attention_heads``,
    ``num_key_value_heads`` (absent: as many as query heads), ``head_dim`` (absent: hidden_size /
    heads, which must then divide), the field named ``d_ff``, ``vocab_size``, ``rope_theta``,
    ``max_position_embeddings``, ``mask/eos/pad_token_id`` (pad absent: EOS) and
    ``tie_word_embeddings``; the query heads must divide by the key/value heads."""
    model.config = c
    model.d_model, model.n_layers, model.n_heads = c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"]
    model.n_kv_heads = c["num_key_value_heads"] or model.n_heads
    if c.get("head_dim") is None and (model.d_model % model.n_heads or model.n_heads % model.n_kv_heads):
        raise ValueError(f"config.json: hidden_size={model.d_model} must divide by num_attention_heads={model.n_heads},"
                         f" and that by num_key_value_heads={model.n_kv_heads}")
    if model.n_heads % model.n_kv_heads:
        raise ValueError(f"config.json: num_attention_heads={model.n_heads} must divide by num_key_value_heads={model.n_kv_heads}")
    model.head_dim = c.get("head_dim") or model.d_model // model.n_heads
    model.d_ff = c[d_ff]
    model.vocab_size = c["vocab_size"]
    model.rope_theta = float(c["rope_theta"])
    model.max_length = c["max_position_embeddings"]
    model.mask_id, model.eos_id = c["mask_token_id"], c["eos_token_id"]
    model.pad_id = c["pad_token_id"] if c["pad_token_id"] is not None else model.eos_id
    model.tied = bool(c.get("tie_word_embeddings", False))


class HFDecoderLayout:
    """Mixin for a :class:`~dynamic_dllm.core.architecture.DecoderModel`: builds and reads the outer
    modules. The adapter sets ``vocab_size``, ``d_model`` and ``tied`` (:func:`set_dimensions`)
    before :meth:`build_outer`; ``embed_key`` names the embedding module under ``model``."""

    tied: bool = False
    embed_key: str = "embed_tokens"

    def build_outer(self, layers: Iterable[nn.Module], eps: float) -> None:
        self.model = nn.Module()
        setattr(self.model, self.embed_key, nn.Embedding(self.vocab_size, self.d_model))
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
        return getattr(self.model, self.embed_key)(input_ids)

    def final_norm(self, h: torch.Tensor) -> torch.Tensor:
        return self.model.norm(h)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h, getattr(self.model, self.embed_key).weight) if self.tied else self.lm_head(h)
