"""Dynamic Cache Updating (``dcu``), the mandatory update window (``window``) and the preset
``dynamic-dllm-cache`` (= ``dcu+window``) — Dynamic-dLLM, ICLR 2026 (paper Eq. 4–7; released code
TianyiWu233/DYNAMIC-DLLM @ 43cb93b7, ``dynamic_dllm_cache/hooks/cache_hook_LLaDA.py``).

``dcu`` (paper Eq. 4–6), per batch row b, step t, layer l:

* token dynamics ``d_i = 1 − cos(x_i^t, x_i^{t−1})`` with ``x`` the *normalised layer input*
  (``score=input``, the paper) or the layer's V projection (``score=value``, the released code:
  fresh V of all rows vs. the V cache, which is then overwritten for all rows as in dLLM-Cache);
  padding rows are never candidates and do not enter the means;
* layer dynamics ``s_l = mean_i d_i`` over the valid rows of the sequence (prompt + response);
* layer budget ``B_l = (budget · n_layers) · s_l^{t−1} / Σ_k s_k^{t−1}`` from the *previous* step's
  dynamics (``allocation=proportional``, the paper), or ``B_l = budget`` for every layer
  (``allocation=uniform``, what the released code does in effect: its softmax(s · 1e-8) weights
  are uniform). Integer rule in :func:`allocate_budgets`: largest remainder (Hamilton), ties to
  the lower layer index, each layer capped at the row's valid length with the overflow handed on
  proportionally to the uncapped layers with s > 0. A layer whose input did not change at the
  previous step (s = 0) gets no budget. If no layer changed at all the split is uniform;
* update set ``U_l = top-B_l rows by d_i``.
* First step of a generation: full refresh (nothing to compare with). Second step: no previous
  dynamics yet, so the uniform split is used (as the released code does on its forward 2).

Unlike the released code (layer 0 always fully recomputed, response rows only, batch 1) this
follows the paper: every layer is scored, candidates are all valid rows of the canvas, and each
batch row has its own dynamics, budgets and index sets.

Bookkeeping cost: per layer one multiply, one norm and one dot product over ``[B, L, d]`` and one
stable sort of ``[B, L]`` (ties left to right): the cosine of RMSNorm outputs equals the cosine of
``w ⊙ x`` (the per-row ``1/rms`` cancels, see :func:`scale_free_input`), so the all-row
normalisation is skipped; the inverse norms are kept from the previous step; budgets are computed
once per step for all layers. The previous step's vectors are kept by reference (no copy).

``window`` (paper Eq. 7): every layer also recomputes the ``size`` rows centred on the key token —
the position committed at the previous step. With several commits the *rightmost* one is the key
(the released code appends the committed positions in ascending order and takes the last one);
a batch row that committed nothing keeps its previous key; before the first commit the key is the
last prompt position ``P − 1`` (as in the released code). Centre row ``c = key − logit_shift``:
for Dream (AR-initialised, the logits of position p come from hidden row p − 1) the rows whose
outputs predict the key token's neighbours are one to the left. Rows ``[c − (size−1)//2,
c − (size−1)//2 + size)`` (for even sizes one more row right of the centre, where decoding goes
next), shifted (not truncated) to stay inside the row's valid span ``[first real token, L)``;
``size`` ≥ that span = every row. The released code uses ``2·(size//2)+1`` rows clipped to the
response region; this uses exactly ``size`` rows, as the issue states.

Composition is by union (the engine ORs the rows of all active cache policies): ``dcu+window`` =
``U_l = window ∪ top-B_l``, the paper's update set; ``dynamic-dllm-cache`` is that preset.
"""

from __future__ import annotations

from typing import Optional

import attrs
import torch
import torch.nn.functional as F

from ..core.hookspecs import hookimpl
from ..core.policy import CachePolicy, RunInfo
from ..models.base import RMSNorm
from .scores import select_top_k

SCORES = ("input", "value")
ALLOCATIONS = ("proportional", "uniform")


def _optional_non_negative_int(instance, attribute, value):
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise ValueError(f"{attribute.name} must be an integer >= 0 (or none for gen_length/8), got {value!r}")


def _choice(options):
    def check(instance, attribute, value):
        if value not in options:
            raise ValueError(f"{attribute.name} must be one of {', '.join(options)}; got {value!r}")
    return check


def _largest_remainder(quota: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """Integers ``[B, n]`` with row sums ``total`` ``[B]``: floors of ``quota`` plus one for the
    ``total − Σ floor`` largest fractional parts (ties to the lower index)."""
    base = quota.floor()
    short = (total - base.sum(1)).round().long()
    order = torch.sort(quota - base, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(quota.shape[1], device=quota.device).expand_as(order))
    return base.long() + (rank < short[:, None]).long()


def allocate_budgets(total, weights: torch.Tensor, cap) -> torch.Tensor:
    """Split ``total`` rows over layers in proportion to ``weights`` ``[B, n]`` (≥ 0).

    Returns long ``[B, n]``: each entry in ``[0, cap]`` (``cap`` int or ``[B]``), zero where the
    weight is zero (unless a row's weights are all zero: then uniform), rounded by largest
    remainder; a layer over ``cap`` is capped and its overflow redistributed (same rule) over the
    uncapped layers with weight > 0. Row sums equal ``min(total, cap · #layers with weight > 0)``
    — exactly ``total`` whenever the layers that changed can absorb it.
    """
    weights = weights.double()
    B, n = weights.shape
    device = weights.device
    if isinstance(total, torch.Tensor):
        total = total.to(device).long().expand(B)
    else:
        total = torch.full((B,), int(total), dtype=torch.long, device=device)
    if bool((total < 0).any()):
        raise ValueError("the total budget must be >= 0")
    cap = torch.as_tensor(cap, device=device).long().expand(B)
    if bool((weights < 0).any()) or not bool(torch.isfinite(weights).all()):
        raise ValueError("layer weights must be finite and >= 0")
    dead = weights.sum(1, keepdim=True) <= 0
    weights = torch.where(dead, torch.ones_like(weights), weights)
    alloc = torch.zeros(B, n, dtype=torch.long, device=device)
    open_ = weights > 0
    remaining = total.clone()
    for _ in range(n):  # each pass closes at least one layer or ends the overflow
        w = torch.where(open_, weights, torch.zeros_like(weights))
        wsum = w.sum(1)
        live = (remaining > 0) & (wsum > 0)
        if not bool(live.any()):
            break
        quota = torch.where(live[:, None], remaining[:, None].double() * w / wsum.clamp_min(1e-300)[:, None], torch.zeros_like(w))
        alloc = alloc + _largest_remainder(quota, torch.where(live, remaining, torch.zeros_like(remaining)))
        over = (alloc - cap[:, None]).clamp_min(0)
        alloc = alloc - over
        remaining = torch.where(live, over.sum(1), torch.zeros_like(remaining))
        open_ = open_ & (alloc < cap[:, None])
    return alloc


#: token dynamics below this are rounding noise of an unchanged vector (fp32 dot vs. norms) and count as 0
ROUNDING_TOLERANCE = 1e-6


def _inverse_norm(t: torch.Tensor) -> torch.Tensor:
    """``1 / ||t||`` along the last axis in fp32, ``[B, L]`` (zero vectors: 1e12)."""
    return torch.linalg.vector_norm(t, dim=-1, dtype=torch.float32).clamp_min_(1e-12).reciprocal_()


def _cosine_distance(cur: torch.Tensor, cur_inv: torch.Tensor, prev: torch.Tensor, prev_inv: torch.Tensor) -> torch.Tensor:
    """``1 − cos`` along the last axis in fp32, ``[B, L]``, from the vectors and their inverse norms;
    values up to :data:`ROUNDING_TOLERANCE` (an unchanged vector up to rounding) are 0, so an
    unchanged layer has dynamics exactly 0."""
    dot = torch.linalg.vecdot(cur.float(), prev.float())
    return F.threshold(1.0 - dot.mul_(cur_inv).mul_(prev_inv), ROUNDING_TOLERANCE, 0.0)


def scale_free_input(context) -> torch.Tensor:
    """What DCU compares between steps for ``score=input``: a tensor whose row-wise cosine equals
    that of the normalised layer input. For RMSNorm (LLaDA, Dream), ``n(x) = w ⊙ x / rms(x)`` and the
    per-row factor ``1 / rms(x)`` cancels in a cosine, so ``w ⊙ x`` is used: one multiply instead of
    the norm's five passes, and the executor then normalises only the rows it recomputes. Any other
    norm falls back to ``context.normed()``."""
    norm = context.parts.attn_norm
    if isinstance(norm, RMSNorm):
        return context.hidden * norm.weight
    return context.normed()


@attrs.define
class DynamicCacheUpdating(CachePolicy):
    """Dynamic-dLLM DCU: per layer, recompute the top-B_l rows by cosine change of the layer input; budgets follow the previous step's layer dynamics."""

    budget: Optional[int] = attrs.field(default=None, validator=_optional_non_negative_int)
    score: str = attrs.field(default="input", validator=_choice(SCORES))
    allocation: str = attrs.field(default="proportional", validator=_choice(ALLOCATIONS))

    def start(self, run: RunInfo) -> None:
        self.layer_budget = self.budget if self.budget is not None else run.config.gen_length // 8
        self.total = self.layer_budget * run.n_layers
        self.prev: list = [None] * run.n_layers          # previous step's (vectors [B, L, ·], 1/norms [B, L])
        self.sums = torch.zeros(run.n_layers, run.batch_size, device=run.device)  # Σ_i d_i per layer, this step
        self.dynamics: Optional[torch.Tensor] = None    # s [B, n_layers] of the current step (after its last layer)
        self.prev_dynamics: Optional[torch.Tensor] = None
        self.budgets: Optional[torch.Tensor] = None     # B_l [B, n_layers] of the current step
        self.full = True

    @hookimpl
    def cache_step_start(self, state) -> Optional[bool]:
        self.full = state.step == 0 or (self.score == "input" and self.prev[0] is None)
        if state.step == 0:
            valid = state.valid
            self.pad = None if bool(valid.all()) else ~valid
            self.valid_len = valid.sum(1)
            self.n_pad = (~valid).sum(1).float()
        self.budgets = None
        if not self.full:
            if self.allocation == "uniform" or self.prev_dynamics is None:
                weights = torch.ones(state.batch_size, state.n_layers, device=state.x.device)
            else:
                weights = self.prev_dynamics
            self.budgets = allocate_budgets(self.total, weights, self.valid_len)
            self.k_max = self.budgets.max(0).values.tolist()
        return True if self.full else None

    @hookimpl
    def cache_rows(self, state, layer: int, context) -> Optional[torch.Tensor]:
        if self.score == "input":
            cur = scale_free_input(context)
            inv = _inverse_norm(cur)
            prev, self.prev[layer] = self.prev[layer], (cur, inv)
        elif self.full:
            return None  # value mode: the V cache is filled by this full step
        else:
            cur = context.values()
            inv = _inverse_norm(cur)
            ref = context.cached_values()  # still the previous step's V: the executor writes V after this hook
            prev = (ref, _inverse_norm(ref))
        if prev is None:
            return None
        d = _cosine_distance(cur, inv, *prev)
        if self.pad is not None:
            d.masked_fill_(self.pad, -1.0)  # padding: never a candidate; its -1s are undone in the sum
            torch.add(d.sum(1), self.n_pad, out=self.sums[layer])
        else:
            torch.sum(d, 1, out=self.sums[layer])
        if layer == state.n_layers - 1:
            self.dynamics = self.prev_dynamics = (self.sums / self.valid_len).T.contiguous()
        if self.full:
            return None
        k = self.k_max[layer]
        if k == 0:
            return None
        # the top B_l[b] rows of each batch row; equal scores (e.g. unchanged rows, d = 0) are taken
        # left to right, so the choice does not depend on how many padding rows precede a sequence
        return select_top_k(d, self.budgets[:, layer])


def window_rows(key: torch.Tensor, valid: torch.Tensor, size: int, shift: int) -> torch.Tensor:
    """Bool ``[B, L]``: the ``size`` rows centred on ``key − shift`` per batch row (one more row to
    the right for even sizes), shifted to stay inside the row's valid span ``[first valid, L)``."""
    B, L = valid.shape
    first = valid.long().argmax(1)
    span = L - first
    n = torch.clamp(span, max=size)
    start = key - shift - (size - 1) // 2
    start = torch.maximum(torch.minimum(start, L - n), first)
    pos = torch.arange(L, device=valid.device)
    return (pos >= start[:, None]) & (pos < (start + n)[:, None])


@attrs.define
class UpdateWindow(CachePolicy):
    """Dynamic-dLLM mandatory update window: every layer recomputes the rows centred on the last committed (rightmost) position."""

    size: Optional[int] = attrs.field(default=None, validator=_optional_non_negative_int)

    def start(self, run: RunInfo) -> None:
        self.width = self.size if self.size is not None else run.config.gen_length // 8
        self.key = torch.full((run.batch_size,), run.prompt_length - 1, dtype=torch.long, device=run.device)
        self.rows: Optional[torch.Tensor] = None

    @hookimpl
    def cache_step_start(self, state) -> None:
        committed = state.last_committed
        L = committed.shape[1]
        rightmost = L - 1 - committed.flip(1).long().argmax(1)
        self.key = torch.where(committed.any(1), rightmost, self.key)
        self.rows = window_rows(self.key, state.valid, self.width, state.logit_shift) if self.width > 0 else None
        return None

    @hookimpl
    def cache_rows(self, state, layer: int, context) -> Optional[torch.Tensor]:
        return self.rows


@attrs.define
class DynamicDllmCache(CachePolicy):
    """Dynamic-dLLM cache preset = dcu + window (union of DCU's top-B_l rows and the update window)."""

    budget: Optional[int] = attrs.field(default=None, validator=_optional_non_negative_int)
    window: Optional[int] = attrs.field(default=None, validator=_optional_non_negative_int)
    score: str = attrs.field(default="input", validator=_choice(SCORES))
    allocation: str = attrs.field(default="proportional", validator=_choice(ALLOCATIONS))

    def __attrs_post_init__(self):
        self.dcu = DynamicCacheUpdating(budget=self.budget, score=self.score, allocation=self.allocation)
        self.win = UpdateWindow(size=self.window)

    def start(self, run: RunInfo) -> None:
        self.dcu.generation_start(run)
        self.win.generation_start(run)

    @hookimpl
    def cache_step_start(self, state) -> Optional[bool]:
        full = self.dcu.cache_step_start(state)
        self.win.cache_step_start(state)
        return full

    @hookimpl
    def cache_rows(self, state, layer: int, context) -> Optional[torch.Tensor]:
        a = self.dcu.cache_rows(state, layer, context)
        b = self.win.cache_rows(state, layer, context)
        return b if a is None else (a if b is None else a | b)
