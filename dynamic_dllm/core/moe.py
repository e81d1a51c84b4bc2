"""Feed-forward parts: the SwiGLU MLP and a top-k mixture of SwiGLU experts.

SwiGLU: ``Down(SiLU(Gate(x)) ⊙ Up(x))``.

Sparse MoE over E experts, top k, for rows ``x`` ``[N, d]`` (OLMoE / LLaDA-MoE router)::

    p      = softmax(fp32(Router(x)))              # [N, E], over every expert (fp64 stays fp64)
    p      = p + b                                 # only with an expert bias (added to the weights too)
    w, e   = topk(p, k)                            # per row: weights and expert ids
    w      = w / Σ w                               # only with ``normalise``
    out_n  = Σ_j  cast(w_nj) · Expert_{e_nj}(x_n)  # over the k slots in order; + Shared(x_n) if any

The group-limited sigmoid router (:class:`GroupLimitedMoE`, LLaDA2 / DeepSeek-V3 style)::

    s      = sigmoid(fp32(Router(x)))               # [N, E]
    g      = top-2 sum of (s + b) within each of G groups; keep the best ``topk_group`` groups
    e      = topk(s + b over the kept groups, k)    # the bias steers the choice only
    w      = scale · s_e / (Σ s_e + 1e-20)          # (no normalisation when k = 1)
    out_n  = cast(Σ_j w_nj · fp32(Expert_{e_nj}(x_n))) + Shared(x_n)

No capacity limit: every row reaches its k experts. Rows are dispatched sorted by expert, each
expert runs once on its contiguous slice, and the outputs go back to (row, slot) order to be
summed over the slots — no atomic adds, so a GPU gives the same result every run. The only host
read is the per-expert row count (one ``tolist`` per MoE layer call — the slice bounds). A row's output depends only on that row, so the
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
        """Weights ``[N, k]`` (in the dtype the experts' outputs are mixed in: ``x``'s here) and expert
        ids ``[N, k]`` of rows ``x`` ``[N, d]``."""
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
        if x.shape[0] == 0:
            return torch.zeros(shape, dtype=x.dtype, device=x.device)
        weights, experts = self.route(x)
        flat = experts.view(-1)
        order = flat.argsort(stable=True)            # (row, slot) pairs grouped by expert
        counts = torch.zeros(self.n_experts, dtype=torch.long, device=x.device).scatter_add_(0, flat, torch.ones_like(flat))
        xs = x.index_select(0, order // self.top_k)
        outs, start = [], 0
        for expert, n in zip(self.experts, counts.tolist()):  # the one host read: the slices' bounds
            if n:
                outs.append(expert(xs[start:start + n]))
                start += n
        # back to (row, slot) order, then Σ over each row's k slots: deterministic (no atomic adds)
        y = torch.empty_like(xs).index_copy_(0, order, torch.cat(outs))
        out = (y.to(weights.dtype) * weights.reshape(-1, 1)).view(-1, self.top_k, shape[-1]).sum(1).to(x.dtype)
        shared = getattr(self, "shared_experts", None)
        return (out if shared is None else out + shared(x)).view(shape)

    def row_flops(self) -> int:
        """Multiply-add FLOPs (x2) per row: router ``2·d·E`` + k SwiGLU experts ``k·6·d·d_expert``."""
        d, d_expert = self.experts[0].up_proj.in_features, self.experts[0].up_proj.out_features
        return 2 * d * self.n_experts + self.top_k * 6 * d * d_expert


class SigmoidGate(nn.Module):
    """The group-limited router's parameters: ``weight`` ``[E, d]`` and the ``expert_bias`` buffer ``[E]``."""

    def __init__(self, d: int, n_experts: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_experts, d))
        self.register_buffer("expert_bias", torch.zeros(n_experts))


class GroupLimitedMoE(SparseMoE):
    """:class:`SparseMoE` with the group-limited sigmoid router (module docstring) under ``gate``
    (``gate.weight``, ``gate.expert_bias``) and, when ``d_shared``, a SwiGLU ``shared_experts``
    added to every row. Routing and mixing run in at least fp32 (the weights stay in it)."""

    def __init__(self, d: int, d_expert: int, n_experts: int, top_k: int, n_group: int, topk_group: int,
                 scaling: float, d_shared: Optional[int] = None):
        super().__init__(d, d_expert, n_experts, top_k)
        if (n_experts % n_group or n_experts // n_group < 2 or not 1 <= topk_group <= n_group
                or top_k > topk_group * (n_experts // n_group)):
            raise ValueError(f"n_group={n_group} must divide num_experts={n_experts} into groups of at least 2,"
                             f" topk_group={topk_group} lie in [1, n_group], and the kept groups hold at least"
                             f" num_experts_per_tok={top_k} experts")
        self.n_group, self.topk_group, self.scaling = n_group, topk_group, scaling
        self.gate = SigmoidGate(d, n_experts)
        if d_shared:
            self.shared_experts = SwiGLU(d, d_shared)

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        N, dtype = x.shape[0], torch.promote_types(x.dtype, torch.float32)  # fp32 (fp64 stays fp64)
        scores = torch.sigmoid(F.linear(x.to(dtype), self.gate.weight.to(dtype)))
        biased = scores + self.gate.expert_bias
        groups = biased.view(N, self.n_group, -1).topk(2, dim=-1).values.sum(-1)
        keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, groups.topk(self.topk_group, dim=-1).indices, True)
        keep = keep[:, :, None].expand(N, self.n_group, self.n_experts // self.n_group).reshape(N, -1)
        experts = biased.masked_fill(~keep, float("-inf")).topk(self.top_k, dim=-1).indices
        weights = scores.gather(1, experts)
        if self.top_k > 1:
            weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
        return weights * self.scaling, experts

    def row_flops(self) -> int:
        """:meth:`SparseMoE.row_flops` plus the shared experts' SwiGLU."""
        shared = getattr(self, "shared_experts", None)
        return super().row_flops() + (0 if shared is None else 6 * shared.up_proj.in_features * shared.up_proj.out_features)
