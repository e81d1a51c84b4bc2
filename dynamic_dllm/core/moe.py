"""Feed-forward parts: the SwiGLU MLP and a top-k mixture of SwiGLU experts.

SwiGLU: ``Down(SiLU(Gate(x)) ⊙ Up(x))``.

Sparse MoE over E experts, top k, for rows ``x`` ``[N, d]`` (OLMoE / LLaDA-MoE router)::

    p      = softmax(fp32(Router(x)))              # [N, E], over every expert (fp64 stays fp64)
    p      = p + b                                 # only with an expert bias (added to the weights too)
    w, e   = topk(p, k)                            # per row: weights and expert ids
    w      = w / Σ w                               # only with ``normalise``
    out_n  = Σ_j  cast(w_nj) · Expert_{e_nj}(x_n)  # + Shared(x_n) when the layer has a shared expert

No capacity limit: every row reaches its k experts. Rows are dispatched sorted by expert, each
expert runs once on its contiguous slice; the only host read is the per-expert row count (one
``tolist`` per MoE layer call — the slice bounds). A row's output depends only on that row, so the
partial-layer executor can route just the rows it recomputes.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


class SwiGLU(nn.Module):
    """``down_proj(silu(gate_proj(x)) * up_proj(x))``, no biases (the Qwen / OLMoE MLP keys)."""

    def __init__(self, d: int, d_ff: int):
        super().__init__()
        self.gate_proj = nn.Linear(d, d_ff, bias=False)
        self.up_proj = nn.Linear(d, d_ff, bias=False)
        self.down_proj = nn.Linear(d_ff, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class SparseMoE(nn.Module):
    """Router ``gate`` ``[E, d]`` and ``experts.{j}`` (:class:`SwiGLU` of width ``d_expert``);
    ``expert_bias`` ``[E]`` (a buffer in the checkpoint) when ``expert_bias``. See the module
    docstring for the formula."""

    def __init__(self, d: int, d_expert: int, n_experts: int, top_k: int, normalise: bool = False,
                 expert_bias: bool = False):
        super().__init__()
        if not 1 <= top_k <= n_experts:
            raise ValueError(f"top_k={top_k} must be in [1, n_experts={n_experts}]")
        self.n_experts, self.top_k, self.normalise = n_experts, top_k, normalise
        self.gate = nn.Linear(d, n_experts, bias=False)
        self.experts = nn.ModuleList(SwiGLU(d, d_expert) for _ in range(n_experts))
        if expert_bias:
            self.register_buffer("expert_bias", torch.zeros(n_experts))
        else:
            self.expert_bias = None

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Weights ``[N, k]`` (in ``x``'s dtype) and expert ids ``[N, k]`` of rows ``x`` ``[N, d]``."""
        logits = self.gate(x)
        probs = F.softmax(logits, dim=-1, dtype=torch.float32 if logits.element_size() < 4 else logits.dtype)
        if self.expert_bias is not None:
            probs = probs + self.expert_bias
        weights, experts = probs.topk(self.top_k, dim=-1)
        if self.normalise:
            weights = weights / weights.sum(-1, keepdim=True)
        return weights.to(x.dtype), experts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        out = torch.zeros_like(x)
        if x.shape[0] == 0:
            return out.view(shape)
        weights, experts = self.route(x)
        flat = experts.view(-1)
        order = flat.argsort(stable=True)            # (row, slot) pairs grouped by expert
        rows = order // self.top_k
        counts = torch.bincount(flat, minlength=self.n_experts).tolist()  # the one host read
        xs = x.index_select(0, rows)
        outs, start = [], 0
        for expert, n in zip(self.experts, counts):
            if n:
                outs.append(expert(xs[start:start + n]))
                start += n
        y = torch.cat(outs) * weights.view(-1).index_select(0, order)[:, None]
        return out.index_add_(0, rows, y).view(shape)

    def row_flops(self) -> int:
        """Multiply-add FLOPs (x2) per row: router ``2·d·E`` + k SwiGLU experts ``k·6·d·d_expert``."""
        d, d_expert = self.gate.in_features, self.experts[0].up_proj.out_features
        return 2 * d * self.n_experts + self.top_k * 6 * d * d_expert
