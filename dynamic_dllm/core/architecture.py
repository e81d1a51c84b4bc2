"""The architecture contract every model adapter fulfils, and the pieces LLaDA and Dream share.

A masked-diffusion LM here is a pre-norm transformer:

    h   = x + O(Attn(RoPE(nq(Q(n1(x)))), RoPE(nk(K(n1(x)))), V(n1(x))))
    out = h + FFN(n2(h))

with ``nq``/``nk`` the optional per-head QK-norm (Qwen3 layout: an RMSNorm over ``head_dim``, before
RoPE; identity for LLaDA and Dream), ``FFN`` the SwiGLU ``Down(SiLU(Gate(·)) ⊙ Up(·))`` or a
mixture of SwiGLU experts (:mod:`dynamic_dllm.core.moe`; LLaDA-MoE), and attention either bidirectional over every key, or
*block-causal* (block-diffusion models such as SDAR: position i sees position j iff
``j // block ≤ i // block``, blocks counted from position 0; see :func:`block_causal_mask`).

Adapters expose each layer as a :class:`LayerParts` (norms, projections, FFN) so the partial-layer
executor can run any subset of rows; :meth:`DecoderModel.forward` is the plain full forward the
executor is checked against.
"""

from __future__ import annotations

import abc
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """``weight * (x / sqrt(mean(x^2) + eps))``, normalised in fp32 and cast back (LLaDA/Dream)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x if x.dtype == torch.float32 else x.float()  # no cast op when already fp32
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * (xf if xf.dtype == x.dtype else xf.to(x.dtype))

    def scale_free(self, x: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``w ⊙ x`` (into ``out`` if given): its row-wise cosine equals that of ``forward(x)`` (the
        per-row ``1/rms`` cancels), at one multiply instead of the norm's passes (DCU's token dynamics)."""
        return x * self.weight if out is None else torch.mul(x, self.weight, out=out)


class LayerParts(NamedTuple):
    attn_norm: nn.Module
    q_proj: nn.Linear
    k_proj: nn.Linear
    v_proj: nn.Linear
    o_proj: nn.Linear
    ffn_norm: nn.Module
    #: the dense SwiGLU's projections (None on a mixture-of-experts layer)
    gate_proj: Optional[nn.Linear]
    up_proj: Optional[nn.Linear]
    down_proj: Optional[nn.Linear]
    #: per-head QK-norm applied to ``[..., heads, head_dim]`` before RoPE (None: none)
    q_norm: Optional[nn.Module] = None
    k_norm: Optional[nn.Module] = None
    #: a mixture-of-experts FFN (:class:`~dynamic_dllm.core.moe.SparseMoE`) in place of the SwiGLU,
    #: and the shared expert added to it (None: none)
    moe: Optional[nn.Module] = None
    shared_expert: Optional[nn.Module] = None


def ffn(p: LayerParts, hn: torch.Tensor) -> torch.Tensor:
    """The layer's FFN of normalised rows ``hn`` ``[..., d]``: SwiGLU, or the experts' mixture
    plus the shared expert. Each row's output depends on that row only."""
    if p.moe is None:
        return p.down_proj(F.silu(p.gate_proj(hn)) * p.up_proj(hn))
    out = p.moe(hn)
    return out if p.shared_expert is None else out + p.shared_expert(hn)


def query_heads(p: LayerParts, q: torch.Tensor, n_heads: int, head_dim: int) -> torch.Tensor:
    """Projected queries ``[..., H·D]`` as heads ``[..., H, D]``, QK-normed if the layer has one."""
    q = q.view(*q.shape[:-1], n_heads, head_dim)
    return q if p.q_norm is None else p.q_norm(q)


def key_heads(p: LayerParts, k: torch.Tensor, n_kv_heads: int, head_dim: int) -> torch.Tensor:
    """Projected keys ``[..., Hkv·D]`` as heads ``[..., Hkv, D]``, QK-normed if the layer has one."""
    k = k.view(*k.shape[:-1], n_kv_heads, head_dim)
    return k if p.k_norm is None else p.k_norm(k)


def block_causal_mask(length: int, block: int, device=None) -> torch.Tensor:
    """Bool ``[length, length]``: query i may attend to key j iff ``j // block <= i // block``
    (bidirectional inside a block, causal across blocks, blocks counted from position 0)."""
    blocks = torch.arange(length, device=device) // block
    return blocks[None, :] <= blocks[:, None]


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 ``cos``/``sin`` of shape ``[*positions.shape, head_dim]`` for half-split RoPE:
    ``inv_freq_j = theta^(-2j/head_dim)``, angles duplicated over the two halves."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    angles = positions.float().unsqueeze(-1) * inv_freq
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, full_precision: bool) -> torch.Tensor:
    """Rotate ``x`` ``[B, R, H, D]`` by angles ``cos/sin`` ``[B, R, D]`` (NeoX half-split:
    ``x*cos + rotate_half(x)*sin`` with ``rotate_half([a, b]) = [-b, a]``). With ``full_precision``
    the rotation runs in (at least) fp32 (LLaDA's ``rope_full_precision``); otherwise cos/sin are cast to x's
    dtype first (HF Qwen2/Dream). With cos/sin narrower than ``x`` (partial RoPE, ``rope_dim < D``)
    only the first ``rope_dim`` dimensions rotate (half-split within them)."""
    if cos.shape[-1] < x.shape[-1]:  # partial RoPE: the first rope_dim dimensions rotate, the rest pass
        rd = cos.shape[-1]
        return torch.cat([apply_rope(x[..., :rd], cos, sin, full_precision), x[..., rd:]], -1)
    dtype = x.dtype
    cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)
    if full_precision:
        x = x.float() if x.element_size() < 4 else x  # fp16/bf16 rotate in fp32; fp32/fp64 as they are
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    else:
        cos, sin = cos.to(dtype), sin.to(dtype)
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x * cos + rotated * sin).to(dtype)


class Rotary:
    """RoPE for a fixed canvas: ``cos`` and a sign-folded ``sin`` ``[B, L, 1, D]`` precomputed once
    in the dtype the rotation runs in, so a rotation is ``x·cos + roll(x, D/2)·sin±`` (four ops).
    With ``sin± = [−sin_lo, sin_hi]``, ``roll(x)·sin± = [−x_hi·sin, x_lo·sin] = rotate_half(x)·sin``
    exactly, so :meth:`rotate` equals :func:`apply_rope` bit for bit."""

    def __init__(self, positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype, full_precision: bool,
                 rope_dim: Optional[int] = None):
        self.rope_dim = rope_dim or head_dim
        cos, sin = rope_cos_sin(positions, self.rope_dim, theta)
        self.dtype = (torch.float32 if dtype.itemsize < 4 else dtype) if full_precision else dtype
        self.half = self.rope_dim // 2
        self.cos = cos.unsqueeze(2).to(self.dtype)
        self.sin = torch.cat([-sin[..., :self.half], sin[..., self.half:]], -1).unsqueeze(2).to(self.dtype)

    def rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, R, H, D]`` by the angles ``cos``/``sin`` ``[B, R, 1, rope_dim]`` (slices or gathers of
        the tables); with ``rope_dim < D`` the remaining dimensions pass unrotated."""
        if self.rope_dim < x.shape[-1]:
            return torch.cat([self.rotate(x[..., :self.rope_dim], cos, sin), x[..., self.rope_dim:]], -1)
        xr = x if x.dtype == self.dtype else x.to(self.dtype)
        out = xr * cos + xr.roll(self.half, -1) * sin
        return out if out.dtype == x.dtype else out.to(x.dtype)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_valid: Optional[torch.Tensor]) -> torch.Tensor:
    """Bidirectional attention of queries ``[B, R, H, D]`` over keys/values ``[B, L, Hkv, D]``
    (GQA: each KV head serves ``H // Hkv`` query heads); ``key_valid`` ``[B, L]`` (or already
    ``[B, 1, 1, L]``) hides padding. Returns ``[B, R, H*D]``."""
    n_rep = q.shape[2] // k.shape[2]
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if n_rep > 1:
        k = k.repeat_interleave(n_rep, dim=1)
        v = v.repeat_interleave(n_rep, dim=1)
    mask = key_valid if key_valid is None or key_valid.dim() == 4 else key_valid[:, None, None, :]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=False)
    return out.transpose(1, 2).flatten(2)


class DecoderModel(nn.Module, abc.ABC):
    """Base class of model adapters. Subclasses build their modules under the checkpoint's key
    names and implement :meth:`embed`, :meth:`layer`, :meth:`final_norm`, :meth:`head`.

    Attributes every adapter sets: ``n_layers``, ``d_model``, ``n_heads``, ``n_kv_heads``,
    ``head_dim``, ``d_ff``, ``vocab_size``, ``rope_theta``, ``rope_full_precision``,
    ``max_length``, ``mask_id``, ``eos_id``, ``pad_id``, ``logit_shift``; and may set
    ``sampling_defaults`` (what the family's own sampler uses for settings a caller leaves unset,
    e.g. Dream's ``top_k``; read by samplers whose parameter is ``"checkpoint"``).

    Block-diffusion models set ``block_causal = True`` and ``block_size`` (the block length they
    were trained with): their attention is :func:`block_causal_mask` over blocks of the generation's
    ``block_length``, which must equal ``block_size``.
    """

    family: str = ""
    logit_shift: int = 0
    rope_full_precision: bool = True
    sampling_defaults: dict = {}
    block_causal: bool = False
    block_size: Optional[int] = None
    #: the cache spec ``cache="auto"`` means for this model: an exact one (``none`` recomputes
    #: everything; block-diffusion models keep finished blocks' K/V with ``block-kv``)
    default_cache: str = "none"
    #: dimensions of each head RoPE rotates (partial RoPE, e.g. LLaDA2's ``head_dim / 2``); None: all
    rope_dim: Optional[int] = None

    @abc.abstractmethod
    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        ...

    @abc.abstractmethod
    def layer(self, index: int) -> LayerParts:
        ...

    @abc.abstractmethod
    def final_norm(self, h: torch.Tensor) -> torch.Tensor:
        ...

    @abc.abstractmethod
    def head(self, h: torch.Tensor) -> torch.Tensor:
        ...

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    def layer_flops(self, rows: int, keys: int) -> int:
        """Multiply-add FLOPs (x2) of one layer for ``rows`` query rows over ``keys`` keys, with
        ``q = n_heads·head_dim``: Q/O projections ``2*2*d*q``, K/V ``2*2*d*kv``, attention
        ``2*2*keys*q``, FFN :meth:`ffn_row_flops`."""
        d, q = self.d_model, self.n_heads * self.head_dim
        per_row = 4 * d * q + 4 * d * self.kv_dim + 4 * keys * q + self.ffn_row_flops()
        return rows * per_row

    def ffn_row_flops(self) -> int:
        """FLOPs of one row's FFN, averaged over layers: SwiGLU ``2*3*d*d_ff``; a mixture: its
        ``row_flops()`` (router + top-k experts) plus a shared expert's SwiGLU."""
        total = 0
        for i in range(self.n_layers):
            p = self.layer(i)
            if p.moe is None:
                total += 6 * self.d_model * p.up_proj.out_features
            else:
                shared = 0 if p.shared_expert is None else 6 * self.d_model * p.shared_expert.up_proj.out_features
                total += p.moe.row_flops() + shared
        return total // self.n_layers

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
        block_length: Optional[int] = None,
    ) -> torch.Tensor:
        """Plain full forward: logits ``[B, L, V]`` for every position (no cache, no shift);
        ``attention_mask`` ``[B, L]`` hides padding keys; a block-causal model needs
        ``block_length`` (default: its ``block_size``)."""
        B, L = input_ids.shape
        if position_ids is None:
            position_ids = torch.arange(L, device=input_ids.device).expand(B, L)
        cos, sin = rope_cos_sin(position_ids, self.rope_dim or self.head_dim, self.rope_theta)
        mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
        if self.block_causal:
            causal = block_causal_mask(L, block_length or self.block_size, input_ids.device)[None, None]
            mask = causal if mask is None else causal & mask
        x = self.embed(input_ids)
        for i in range(self.n_layers):
            p = self.layer(i)
            xn = p.attn_norm(x)
            q = apply_rope(query_heads(p, p.q_proj(xn), self.n_heads, self.head_dim), cos, sin, self.rope_full_precision)
            k = apply_rope(key_heads(p, p.k_proj(xn), self.n_kv_heads, self.head_dim), cos, sin, self.rope_full_precision)
            v = p.v_proj(xn).view(B, L, self.n_kv_heads, self.head_dim)
            x = x + p.o_proj(attention(q, k, v, mask))
            x = x + ffn(p, p.ffn_norm(x))
        return self.head(self.final_norm(x))
