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
``w ⊙ x`` (the per-row ``1/rms`` cancels; the model's norm says so through ``scale_free``, see
:meth:`~dynamic_dllm.core.executor.LayerContext.cosine_input`), so the all-row normalisation is
skipped; the inverse norms are kept from the previous step. Budgets are computed once per step
for all layers, with one host sync (the per-layer maximum ``max_b B_l[b]``, the row set's size);
with ``allocation=uniform`` once per generation. A layer's row set is the first ``max_b B_l[b]``
of the sorted order, entries past ``B_l[b]`` padding (computed, not written). Each layer's vectors
go into one of two buffers kept per layer, alternating (this step's and the previous step's).

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

Composition is by union (the engine unites the rows of all active cache policies): ``dcu+window``
= ``U_l = window ∪ top-B_l``, the paper's update set, computed as ``B_l + W`` rows with the overlap
not written (no sync to learn the union's size); ``dynamic-dllm-cache`` is a registry alias of that
spec (:data:`PRESET`).
"""

from __future__ import annotations

from typing import Optional

import attrs
import torch
import torch.nn.functional as F

from ..core.validators import integer, one_of
from ..core.policy import CachePolicy, RunInfo
from ..core.registry import Alias
from ..core.rows import RowSet

SCORES = ("input", "value")
ALLOCATIONS = ("proportional", "uniform")

#: ``dynamic-dllm-cache``: the paper's DCU = dcu + window, with the parameters of both
PRESET = Alias("dcu+window", params={"budget": "dcu.budget", "window": "window.size", "score": "dcu.score",
                                     "allocation": "dcu.allocation"},
               summary="Dynamic-dLLM cache preset = dcu + window (union of DCU's top-B_l rows and the update window).")


def _largest_remainder(quota: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """Integers ``[B, n]`` with row sums ``total`` ``[B]``: floors of ``quota`` plus one for the
    ``total − Σ floor`` largest fractional parts (ties to the lower index)."""
    base = quota.floor()
    short = (total - base.sum(1)).round().long()
    order = torch.sort(quota - base, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(quota.shape[1], device=quota.device).expand_as(order))
    return base.long() + (rank < short[:, None]).long()


class _Split:
    """State of :func:`allocate_budgets`' passes: each pass splits the remaining total over the
    open layers by largest remainder, caps, and carries the overflow to the next pass. The first
    pass (:meth:`first`) is the common case and needs no host sync; :meth:`finish` runs the rest."""

    def __init__(self, total: torch.Tensor, weights: torch.Tensor, cap: torch.Tensor):
        dead = weights.sum(1, keepdim=True) <= 0
        self.weights = torch.where(dead, torch.ones_like(weights), weights)
        self.cap = cap
        self.total = total

    def first(self) -> None:
        """Pass 1, where every layer with weight > 0 is open and the whole total remains: the
        general pass with its masks folded away (``where(open, w, 0) = w`` as ``w ≥ 0``; rows with
        a zero total get quota 0)."""
        w = self.weights
        quota = self.total[:, None].double() * w / w.sum(1, keepdim=True).clamp_min(1e-300)
        alloc = _largest_remainder(quota, self.total)
        over = (alloc - self.cap[:, None]).clamp_min(0)
        self.alloc = alloc - over
        self.remaining = over.sum(1)

    def live(self) -> torch.Tensor:
        return (self.remaining > 0) & (torch.where(self.open, self.weights, 0.0).sum(1) > 0)

    def step(self) -> None:
        """One pass (a no-op where nothing is live, so the first needs no check)."""
        w = torch.where(self.open, self.weights, torch.zeros_like(self.weights))
        wsum = w.sum(1)
        live = (self.remaining > 0) & (wsum > 0)
        quota = torch.where(live[:, None], self.remaining[:, None].double() * w / wsum.clamp_min(1e-300)[:, None],
                            torch.zeros_like(w))
        self.alloc = self.alloc + _largest_remainder(quota, torch.where(live, self.remaining, torch.zeros_like(self.remaining)))
        over = (self.alloc - self.cap[:, None]).clamp_min(0)
        self.alloc = self.alloc - over
        self.remaining = torch.where(live, over.sum(1), torch.zeros_like(self.remaining))
        self.open = self.open & (self.alloc < self.cap[:, None])

    def finish(self) -> torch.Tensor:
        """The remaining passes (at most ``n − 1``; each closes a layer or ends the overflow)."""
        self.open = (self.weights > 0) & (self.alloc < self.cap[:, None])
        for _ in range(self.weights.shape[1] - 1):
            if not bool(self.live().any()):
                break
            self.step()
        return self.alloc


def _split(total, weights: torch.Tensor, cap) -> _Split:
    weights = weights.double()
    B = weights.shape[0]
    device = weights.device
    if isinstance(total, torch.Tensor):
        total = total.to(device).long().expand(B)
    else:
        total = torch.full((B,), int(total), dtype=torch.long, device=device)
    return _Split(total, weights, torch.as_tensor(cap, device=device).long().expand(B))


def allocate_budgets(total, weights: torch.Tensor, cap) -> torch.Tensor:
    """Split ``total`` rows over layers in proportion to ``weights`` ``[B, n]`` (≥ 0).

    Returns long ``[B, n]``: each entry in ``[0, cap]`` (``cap`` int or ``[B]``), zero where the
    weight is zero (unless a row's weights are all zero: then uniform), rounded by largest
    remainder; a layer over ``cap`` is capped and its overflow redistributed (same rule) over the
    uncapped layers with weight > 0. Row sums equal ``min(total, cap · #layers with weight > 0)``
    — exactly ``total`` whenever the layers that changed can absorb it.
    """
    if bool((torch.as_tensor(total) < 0).any()):
        raise ValueError("the total budget must be >= 0")
    if bool((weights < 0).any()) or not bool(torch.isfinite(weights).all()):
        raise ValueError("layer weights must be finite and >= 0")
    split = _split(total, weights, cap)
    split.first()
    return split.finish()


#: token dynamics below this are rounding noise of an unchanged vector (fp32 dot vs. norms) and count as 0
ROUNDING_TOLERANCE = 1e-6


def _f32(t: torch.Tensor) -> torch.Tensor:
    return t if t.dtype == torch.float32 else t.float()


def _inverse_norm(t: torch.Tensor) -> torch.Tensor:
    """``1 / ||t||`` along the last axis in fp32, ``[B, L]`` (zero vectors: 1e12)."""
    return torch.linalg.vector_norm(t, dim=-1, dtype=torch.float32).clamp_min_(1e-12).reciprocal_()


def _cosine_distance(cur: torch.Tensor, cur_inv: torch.Tensor, prev: torch.Tensor, prev_inv: torch.Tensor) -> torch.Tensor:
    """``1 − cos`` along the last axis in fp32, ``[B, L]``, from the vectors and their inverse norms;
    values up to :data:`ROUNDING_TOLERANCE` (an unchanged vector up to rounding) are 0, so an
    unchanged layer has dynamics exactly 0."""
    dot = torch.einsum("bld,bld->bl", _f32(cur), _f32(prev))
    return F.threshold(1.0 - dot.mul_(cur_inv).mul_(prev_inv), ROUNDING_TOLERANCE, 0.0)


@attrs.define
class DynamicCacheUpdating(CachePolicy):
    """Dynamic-dLLM DCU: per layer, recompute the top-B_l rows by cosine change of the layer input; budgets follow the previous step's layer dynamics."""

    exact_for_waiting_rows = True

    budget: Optional[int] = attrs.field(default=None, validator=integer(0, optional=True, note="none: gen_length/8"))
    score: str = attrs.field(default="input", validator=one_of(SCORES))
    allocation: str = attrs.field(default="proportional", validator=one_of(ALLOCATIONS))

    def start(self, run: RunInfo) -> None:
        self.layer_budget = self.budget if self.budget is not None else run.config.gen_length // 8
        self.total = self.layer_budget * run.n_layers
        self.prev: list = [None] * run.n_layers          # previous step's (vectors [B, L, ·], 1/norms [B, L])
        self.spare: list = [None] * run.n_layers         # per layer, the buffer the next step's vectors go to
        self.sums: list = [None] * run.n_layers           # Σ_i d_i [B] per layer, this step
        self.dynamics: Optional[torch.Tensor] = None    # s [B, n_layers] of the current step (after its last layer)
        self.prev_dynamics: Optional[torch.Tensor] = None
        self.budgets: Optional[torch.Tensor] = None     # B_l [B, n_layers] of the current step
        self.sizes: list = []                            # max_b B_l[b] per layer (host ints)
        self.uniform = None                              # (budgets, sizes) of the uniform split, computed once
        self.full = True
        valid = run.valid
        self.pad = None if bool(valid.all()) else ~valid
        self.valid_len = valid.sum(1)
        self.n_pad = (~valid).sum(1).float()

    def _budgets(self, weights: Optional[torch.Tensor], batch: int, n_layers: int) -> tuple:
        """(B_l ``[B, n_layers]``, per-layer max and min over the batch) with one host sync (more
        only when a layer overflows its row's length)."""
        if weights is None and self.uniform is not None:
            return self.uniform
        w = weights if weights is not None else torch.ones(batch, n_layers, device=self.valid_len.device)
        split = _split(self.total, w, self.valid_len)
        split.first()
        extremes = lambda: torch.cat([split.alloc.amax(0), split.alloc.amin(0)])  # noqa: E731
        *bounds, overflow = torch.cat([extremes(), split.remaining.amax().view(1)]).tolist()
        if overflow > 0:
            split.finish()
            bounds = extremes().tolist()
        out = (split.alloc, bounds[:n_layers], bounds[n_layers:])
        if weights is None:
            self.uniform = out
        return out

    def step_start(self, state) -> bool:
        self.full = state.step == 0 or (self.score == "input" and self.prev[0] is None)
        # rows waiting for the rest of the batch keep their scoring state (their caches are restored
        # by the engine), so each decodes as alone
        self.waiting = torch.tensor(state.waiting, device=state.x.device) if state.waiting else None
        self.budgets = None
        if not self.full:
            proportional = self.allocation == "proportional" and self.prev_dynamics is not None
            self.budgets, self.sizes, self.smallest = self._budgets(self.prev_dynamics if proportional else None,
                                                                    state.batch_size, state.n_layers)
        return self.full

    def layer_rows(self, state, layer: int, context) -> Optional[RowSet]:
        if self.score == "input":
            # two buffers per layer, alternating: this step's vectors and the previous step's
            # (reusing memory: a fresh multi-MB tensor per layer and step costs page faults)
            cur = context.cosine_input(out=self.spare[layer])
            inv = _inverse_norm(cur)
            prev, self.prev[layer] = self.prev[layer], (cur, inv)
            self.spare[layer] = None if prev is None else prev[0]
        elif self.full:
            return None  # value mode: the V cache is filled by this full step
        else:
            cur = context.values()
            inv = _inverse_norm(cur)
            ref = context.cached_values()  # still the previous step's V: the executor writes V after this call
            prev = (ref, _inverse_norm(ref))
        if prev is None:
            return None
        d = _cosine_distance(cur, inv, *prev)
        if self.waiting is not None and self.score == "input":
            cur.index_copy_(0, self.waiting, prev[0].index_select(0, self.waiting))
            inv.index_copy_(0, self.waiting, prev[1].index_select(0, self.waiting))
        if self.pad is not None:
            d.masked_fill_(self.pad, -1.0)  # padding: never a candidate; its -1s are undone in the sum
            self.sums[layer] = d.sum(1) + self.n_pad
        else:
            self.sums[layer] = d.sum(1)
        if layer == state.n_layers - 1:
            dynamics = torch.stack(self.sums, 1) / self.valid_len[:, None]
            if self.waiting is not None:  # no previous dynamics yet: the uniform split (all-ones weights)
                if self.prev_dynamics is None:
                    dynamics.index_fill_(0, self.waiting, 1.0)
                else:
                    dynamics.index_copy_(0, self.waiting, self.prev_dynamics.index_select(0, self.waiting))
            self.dynamics = self.prev_dynamics = dynamics
        if self.full or self.sizes[layer] == 0:
            return None
        if self.smallest[layer] == state.length:  # every row of every batch row: a dense layer
            return RowSet.span(0, state.length)
        # the top B_l[b] rows of each batch row; equal scores (e.g. unchanged rows, d = 0) are taken
        # left to right, so the choice does not depend on how many padding rows precede a sequence
        return RowSet.top(d, self.budgets[:, layer], self.sizes[layer])


@attrs.define
class UpdateWindow(CachePolicy):
    """Dynamic-dLLM mandatory update window: every layer recomputes the rows centred on the last committed (rightmost) position."""

    exact_for_waiting_rows = True

    size: Optional[int] = attrs.field(default=None, validator=integer(0, optional=True, note="none: gen_length/8"))

    def start(self, run: RunInfo) -> None:
        self.width = self.size if self.size is not None else run.config.gen_length // 8
        self.key = torch.full((run.batch_size,), run.prompt_length - 1, dtype=torch.long, device=run.device)
        self.rows: Optional[RowSet] = None
        L = run.length
        self.first = run.valid.long().argmax(1)                      # first real token of each row
        n = torch.clamp(L - self.first, max=self.width)              # the window's rows in each batch row
        counts = n.tolist()                                          # once per generation
        self.n, self.R = n, max(counts)
        self.offsets = torch.arange(self.R, device=run.device)
        self.writable = None if min(counts) == self.R else self.offsets < n[:, None]
        self.everything = self.R == L and self.writable is None     # every row of every batch row

    def step_start(self, state) -> bool:
        committed = state.last_committed
        L = committed.shape[1]
        rightmost = L - 1 - committed.flip(1).long().argmax(1)
        self.key = torch.where(committed.any(1), rightmost, self.key)
        if self.width == 0:
            self.rows = None
        elif self.everything:
            self.rows = RowSet.span(0, L)
        else:
            self.rows = window_rows(self.key, self.first, self.n, self.offsets, self.writable, L, self.width,
                                    state.logit_shift)
        return False

    def layer_rows(self, state, layer: int, context) -> Optional[RowSet]:
        return self.rows


def window_rows(key: torch.Tensor, first: torch.Tensor, n: torch.Tensor, offsets: torch.Tensor,
                writable: Optional[torch.Tensor], length: int, size: int, shift: int) -> RowSet:
    """The ``n[b] = min(size, length − first[b])`` rows centred on ``key − shift`` per batch row
    (one more row to the right for even sizes), shifted to stay inside ``[first[b], length)``;
    as an index of ``len(offsets)`` entries, those past ``n[b]`` not writable."""
    start = key - shift - (size - 1) // 2
    start = torch.maximum(torch.minimum(start, length - n), first)
    index = start[:, None] + offsets
    if writable is not None:
        index = index.clamp(max=length - 1)
    return RowSet.indexed(index, writable)
