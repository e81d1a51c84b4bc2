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

Token dynamics are computed from ``2d = |v − u|²`` of the unit vectors ``u, v`` (``d`` = ``1 − cos``, but
exactly 0 for an unchanged vector and without ``1 − cos``'s cancellation for small changes). The
cosine of RMSNorm outputs equals the cosine of ``w ⊙ x`` (the per-row ``1/rms`` cancels; the model's
norm says so through ``scale_free``, see
:meth:`~dynamic_dllm.core.executor.LayerContext.cosine_input`), so no norm is run. Per layer DCU
keeps the unit vectors of the last step.

Bookkeeping cost: a row's layer input can differ from the previous step's only if its token
changed or an earlier layer of this step recomputed it (every other row adds the same cached
attention and FFN outputs to the same input, bit for bit); elsewhere ``d = 0`` exactly. On large
canvases (:data:`EXACT_ROWS_MIN_ELEMENTS`) DCU scores only those rows: per layer a gather, a
multiply, a norm, a difference, a dot product and two scatters over about
``changed tokens + window + max B_l`` rows (:meth:`DynamicCacheUpdating._changed_rows`), then one
stable sort of ``[B, L]`` (ties left to right). On small ones, and after a step with waiting rows,
it scores every row (the same bits). The budgets are split once per step for all layers, on the
host (:func:`split_budget`), after the step's one host sync (the previous step's layer dynamics
and the changed-token count; none for the uniform split when not tracking changed rows). A
layer's row set is the first ``max_b B_l[b]`` of the sorted order, entries past ``B_l[b]``
padding (computed, not written).

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

import math
from typing import Optional, Sequence

import attrs
import torch

from ..core.validators import integer, one_of
from ..core.policy import CachePolicy, RunInfo
from ..core.registry import Alias
from ..core.rows import RowSet, flat_rows

SCORES = ("input", "value")
ALLOCATIONS = ("proportional", "uniform")

#: ``dynamic-dllm-cache``: the paper's DCU = dcu + window, with the parameters of both
PRESET = Alias("dcu+window", params={"budget": "dcu.budget", "window": "window.size", "score": "dcu.score",
                                     "allocation": "dcu.allocation"},
               summary="Dynamic-dLLM cache preset = dcu + window (union of DCU's top-B_l rows and the update window).")


def _largest_remainder(quota: Sequence[float], total: int) -> list:
    """Floors of ``quota`` plus one for the ``total − Σ floor`` largest fractional parts (ties to
    the lower index)."""
    base = [math.floor(q) for q in quota]
    frac = [q - b for q, b in zip(quota, base)]
    for i in sorted(range(len(base)), key=lambda i: -frac[i])[:round(total - sum(base))]:
        base[i] += 1
    return base


def split_budget(total: int, weights: Sequence[float], cap: int) -> list:
    """One batch row of :func:`allocate_budgets`, in host arithmetic (doubles): passes that split
    what remains over the open layers (weight > 0, under ``cap``) by largest remainder, cap, and
    carry the overflow to the next pass (at most one pass per layer)."""
    n = len(weights)
    w = [float(x) for x in weights] if sum(weights) > 0 else [1.0] * n
    alloc, remaining, open_ = [0] * n, total, [x > 0 for x in w]
    for _ in range(n):
        wsum = sum(x for x, o in zip(w, open_) if o)
        if remaining <= 0 or wsum <= 0:
            break
        add = _largest_remainder([remaining * x / wsum if o else 0.0 for x, o in zip(w, open_)], remaining)
        remaining = 0
        for i in range(n):
            a = alloc[i] + add[i]
            alloc[i] = min(a, cap)
            remaining += a - alloc[i]
            open_[i] = open_[i] and alloc[i] < cap
    return alloc


def allocate_budgets(total, weights: torch.Tensor, cap) -> torch.Tensor:
    """Split ``total`` rows over layers in proportion to ``weights`` ``[B, n]`` (≥ 0).

    Returns long ``[B, n]``: each entry in ``[0, cap]`` (``cap`` int or ``[B]``), zero where the
    weight is zero (unless a row's weights are all zero: then uniform), rounded by largest
    remainder; a layer over ``cap`` is capped and its overflow redistributed (same rule) over the
    uncapped layers with weight > 0. Row sums equal ``min(total, cap · #layers with weight > 0)``
    — exactly ``total`` whenever the layers that changed can absorb it. (:func:`split_budget` per row.)
    """
    B = weights.shape[0]
    totals = torch.as_tensor(total).expand(B).tolist()
    caps = torch.as_tensor(cap).expand(B).tolist()
    if min(totals) < 0:
        raise ValueError("the total budget must be >= 0")
    if bool((weights < 0).any()) or not bool(torch.isfinite(weights).all()):
        raise ValueError("layer weights must be finite and >= 0")
    rows = [split_budget(int(t), w, int(c)) for t, w, c in zip(totals, weights.double().tolist(), caps)]
    return torch.tensor(rows, dtype=torch.long, device=weights.device).view(B, -1)


#: token dynamics at most this count as 0 (changes below the rounding of an fp32 cosine)
ROUNDING_TOLERANCE = 1e-6

#: score only the rows whose input can have changed (see :meth:`DynamicCacheUpdating._changed_rows`)
#: when the all-row scoring pass would touch at least this many elements (``B · L · d``) on the
#: device type: below that, the pass is cheaper than the extra gathers' op launches (CPU: ~8 µs an
#: op vs. a pass over a cache-resident ``[B, L, d]``; a GPU streams far more per launch)
EXACT_ROWS_MIN_ELEMENTS = {"cpu": 1 << 17}
EXACT_ROWS_MIN_ELEMENTS_OTHER = 1 << 23


def _f32(t: torch.Tensor) -> torch.Tensor:
    return t if t.dtype == torch.float32 else t.float()


def _unit_(t: torch.Tensor) -> torch.Tensor:
    """Scales the fp32 rows of ``t`` (the caller's own) to unit length in place (zero rows stay zero)."""
    return t.div_(torch.linalg.vector_norm(t, dim=-1, keepdim=True).clamp_min_(1e-12))


def _twice_distance_(prev: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
    """``2d = |v − u|²`` of unit rows ``v`` (``prev``, overwritten by ``v − u``) and ``u`` (``cur``)
    in fp32 along the last axis (``[B, L]`` or ``[R]``), where ``d = 1 − cos``; ``d`` up to
    :data:`ROUNDING_TOLERANCE` gives 0. Equal vectors give exactly 0 and small changes keep their
    precision (no ``1 − cos`` cancellation). Computed per row the same way for any leading shape
    (a gathered ``[R, d]`` gives the bits of the same rows of ``[B, L, d]``)."""
    diff = prev.sub_(cur)
    return torch.threshold(torch.linalg.vecdot(diff, diff), 2 * ROUNDING_TOLERANCE, 0.0)


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
        self.prev: list = [None] * run.n_layers          # per layer, the kept unit vectors [B, L, ·] (fp32)
        self.spare: list = [None] * run.n_layers         # per layer, the buffer an all-row scoring writes to
        self.kept_rows: list = [None] * run.n_layers     # per layer, the kept vectors as [B·L, ·] (a view)
        self.dynamics: Optional[torch.Tensor] = None    # s [B, n_layers] of the current step (after its last layer)
        self.prev_dynamics: Optional[torch.Tensor] = None
        self.budgets: Optional[torch.Tensor] = None     # B_l [B, n_layers] of the current step
        self.sizes: list = []                            # max_b B_l[b] per layer (host ints)
        self.full = True
        self.tokens: Optional[torch.Tensor] = None      # the canvas of the last step scored
        self.was_waiting = False
        self.changed: Optional[torch.Tensor] = None     # flat rows b·L + i whose input may have changed; None = all
        valid = run.valid
        B, L = valid.shape
        self.pad = None if bool(valid.all()) else ~valid
        #: 2d of every layer this step [B, n_layers, L] (padding: -2, never a candidate) and its per-layer
        #: views (2d: the scale is exact, ranks the same, and is undone once a step in the dynamics)
        self.d_start = torch.zeros(B, run.n_layers, L, device=valid.device)
        if self.pad is not None:
            self.d_start.masked_fill_(self.pad[:, None], -2.0)
        self.d = self.d_start.clone()
        self.d_layers = self.d.unbind(1)
        self.valid_len = valid.sum(1)
        self.n_pad = (~valid).sum(1).float() * 2
        self.caps = self.valid_len.tolist()                # once per generation
        self.uniform = None                                # the uniform split's budgets (host), made once
        self.ranks = torch.arange(L, device=valid.device)
        minimum = EXACT_ROWS_MIN_ELEMENTS.get(torch.device(run.device).type, EXACT_ROWS_MIN_ELEMENTS_OTHER)
        self.track = self.score == "input" and B * L * run.d_model >= minimum
        if self.track:
            offsets = torch.arange(B, device=valid.device)[:, None] * L
            first = valid.long().argmax(1)[:, None]
            #: flat rows of each batch row's first valid positions, in order (where DCU's zero-d picks fall)
            self.lead = (first + self.ranks).clamp_(max=L - 1) + offsets
            self.offsets = offsets

    def _budgets(self, weights: Optional[torch.Tensor], n_layers: int, moved: Optional[torch.Tensor]) -> tuple:
        """(B_l ``[B, n_layers]`` on the device, per-layer max and min over the batch, the most changed
        tokens in a batch row): the layer weights and the changed-token counts come to the host in
        one sync (none for the uniform split without tracking), the split is host arithmetic."""
        B = len(self.caps)
        present = [t.reshape(-1).float() for t in (weights, moved) if t is not None]
        values = torch.cat(present).tolist() if present else []
        n_moved = int(max(values[-B:])) if moved is not None else None
        if weights is not None:
            budgets = [split_budget(self.total, values[b * n_layers:(b + 1) * n_layers], self.caps[b]) for b in range(B)]
        else:
            if self.uniform is None:
                self.uniform = [split_budget(self.total, [1.0] * n_layers, cap) for cap in self.caps]
            budgets = self.uniform
        columns = list(zip(*budgets))
        device = self.valid_len.device
        return (torch.tensor(budgets, dtype=torch.long, device=device), [max(c) for c in columns],
                [min(c) for c in columns], n_moved)

    def step_start(self, state) -> bool:
        self.full = state.step == 0 or (self.score == "input" and self.prev[0] is None)
        # rows waiting for the rest of the batch keep their scoring state (their caches are restored
        # by the engine), so each decodes as alone
        self.waiting = torch.tensor(state.waiting, device=state.x.device) if state.waiting else None
        self.budgets = None
        # only rows whose token changed, or that an earlier layer recomputed, can have d > 0: score
        # those (all rows after a step with waiting rows: their kept vectors are older)
        exact = self.track and not (self.full or state.waiting or self.was_waiting)
        self.was_waiting = bool(state.waiting)
        self.changed = None
        if not self.full:
            moved = state.x != self.tokens if exact else None
            proportional = self.allocation == "proportional" and self.prev_dynamics is not None
            self.budgets, self.sizes, self.smallest, n_moved = self._budgets(
                self.prev_dynamics if proportional else None, state.n_layers, None if moved is None else moved.sum(1))
            # rank r of layer l's top set is written where r < B_l[b]: per layer [B, max_l size]
            self.writable = (self.ranks[:max(self.sizes)] < self.budgets[:, :, None]).unbind(1)
            if exact and 2 * n_moved <= state.length:
                rows = torch.topk(moved.view(torch.uint8), n_moved, dim=1, sorted=False).indices  # all changed, any order
                self.changed = flat_rows(rows, self.offsets)
                self.included: dict = {}   # the other policies' row sets already in `changed` (by id)
                self.lead_rows = 0         # the leading rows already in `changed`
                self.own = None            # this policy's answer at the previous layer
                self.d.copy_(self.d_start)  # the rows not scored keep d = 0
        self.tokens = state.x
        return self.full

    def _changed_rows(self, context, length: int) -> Optional[torch.Tensor]:
        """This layer's flat rows (``b·L + i``, entries may repeat) whose input may differ from the
        kept vectors, or None (score every row: an earlier layer was dense, or the rows would reach
        half the canvas). A row's input differs only if its token changed or an earlier layer of
        this step recomputed it (:attr:`~dynamic_dllm.core.executor.LayerContext.upstream`). Of an
        earlier layer's union, the other policies' sets are added once each (the same object at
        every layer, e.g. the window, is added once); this policy's own top-B set adds only its
        first ``B`` valid rows: its rows with d > 0 are changed rows already, and rows with d = 0
        are taken left to right, so they lie among the first ``B`` valid positions."""
        up = context.upstream
        if self.changed is None or up is None:
            return self.changed
        if up.covers(length):
            self.changed = None
            return None
        new = []
        for part in up.parts or (up,):
            if part is self.own:
                if part.size > self.lead_rows:  # at once the leading rows of every layer's set this step
                    size = max(self.sizes)
                    new.append(self.lead[:, self.lead_rows:size].reshape(-1))
                    self.lead_rows = size
            elif id(part) not in self.included:
                self.included[id(part)] = part
                new.append(part.flat_read(self.offsets, length))
        if new:
            self.changed = torch.cat([self.changed, *new])
            if 2 * self.changed.shape[0] > self.offsets.numel() * length:
                self.changed = None
        return self.changed

    def _score_rows(self, context, layer: int, rows: torch.Tensor) -> None:
        """Writes ``d`` of the flat ``rows`` into this layer's ``d`` (zero elsewhere: those inputs are
        the kept vectors, bit for bit) and updates their kept vectors in place (repeated rows write
        equal values)."""
        kept = self.kept_rows[layer]
        cur = _unit_(_f32(context.cosine_rows(rows)))
        d = _twice_distance_(kept.index_select(0, rows), cur)
        kept.index_copy_(0, rows, cur)
        self.d_layers[layer].put_(rows, d)

    def _score_all(self, context, layer: int) -> bool:
        """Writes ``d`` of every row into this layer's ``d`` (False on the first scoring of a layer:
        nothing to compare with); this step's vectors go to the layer's spare buffer, which becomes
        the kept one."""
        if self.score == "input":
            spare = self.spare[layer]
            cur = _unit_(_f32(context.cosine_input(out=spare if spare is not None and spare.dtype == context.hidden.dtype else None)))
            prev, self.prev[layer] = self.prev[layer], cur
            self.spare[layer] = prev
            if self.track:
                self.kept_rows[layer] = cur.view(-1, cur.shape[-1])
        elif self.full:
            return False  # value mode: the V cache is filled by this full step
        else:
            cur = _unit_(context.values().to(torch.float32, copy=True))
            # still the previous step's V: the executor writes V after this call
            prev = _unit_(context.cached_values().to(torch.float32, copy=True))
        if prev is None:
            return False
        saved = prev.index_select(0, self.waiting) if self.waiting is not None and self.score == "input" else None
        self.d_layers[layer].copy_(_twice_distance_(prev, cur))  # prev: the spare buffer, or a copy
        if saved is not None:  # a waiting row keeps its vectors
            cur.index_copy_(0, self.waiting, saved)
        return True

    def layer_rows(self, state, layer: int, context) -> Optional[RowSet]:
        rows = self._changed_rows(context, state.length)
        if rows is not None:
            self._score_rows(context, layer, rows)
        elif not self._score_all(context, layer):
            return None
        d = self.d_layers[layer]
        if self.pad is not None:
            d.masked_fill_(self.pad, -2.0)  # padding: never a candidate (its -2s are undone in the sums)
        if layer == state.n_layers - 1:
            dynamics = (self.d.sum(2) + self.n_pad[:, None]).mul_(0.5) / self.valid_len[:, None]
            if self.waiting is not None:  # no previous dynamics yet: the uniform split (all-ones weights)
                if self.prev_dynamics is None:
                    dynamics.index_fill_(0, self.waiting, 1.0)
                else:
                    dynamics.index_copy_(0, self.waiting, self.prev_dynamics.index_select(0, self.waiting))
            self.dynamics = self.prev_dynamics = dynamics
        if self.full or self.sizes[layer] == 0:
            self.own = None
            return None
        if self.smallest[layer] == state.length:  # every row of every batch row: a dense layer
            self.own = RowSet.span(0, state.length)
        else:
            # the top B_l[b] rows of each batch row; equal scores (e.g. unchanged rows, d = 0) are taken
            # left to right, so the choice does not depend on how many padding rows precede a sequence
            self.own = RowSet.ranked(d, self.writable[layer][:, :self.sizes[layer]])
        return self.own


@attrs.define
class UpdateWindow(CachePolicy):
    """Dynamic-dLLM mandatory update window: every layer recomputes the rows centred on the last committed (rightmost) position."""

    exact_for_waiting_rows = True

    size: Optional[int] = attrs.field(default=None, validator=integer(0, optional=True, note="none: gen_length/8"))

    def start(self, run: RunInfo) -> None:
        self.width = self.size if self.size is not None else run.config.gen_length // 8
        L = run.length
        #: key + 1 per batch row [B, 1] (0 would be "no key"; before the first commit: the last prompt position)
        self.key_next = torch.full((run.batch_size, 1), run.prompt_length, dtype=torch.long, device=run.device)
        self.places = torch.arange(1, L + 1, device=run.device)      # position + 1
        self.rows: Optional[RowSet] = None
        self.first = run.valid.long().argmax(1, keepdim=True)        # first real token of each row [B, 1]
        n = torch.clamp(L - self.first, max=self.width)              # the window's rows in each batch row
        counts = n.view(-1).tolist()                                 # once per generation
        self.R = max(counts)
        self.last_start = L - n                                      # the last start keeping n rows inside
        self.offsets = torch.arange(self.R, device=run.device)
        self.writable = None if min(counts) == self.R else self.offsets < n
        self.everything = self.R == L and self.writable is None     # every row of every batch row

    def step_start(self, state) -> bool:
        reach = (state.last_committed * self.places).amax(1, keepdim=True)  # rightmost commit + 1, or 0
        self.key_next = torch.where(reach > 0, reach, self.key_next)
        L = state.last_committed.shape[1]
        if self.width == 0:
            self.rows = None
        elif self.everything:
            self.rows = RowSet.span(0, L)
        else:
            self.rows = window_rows(self.key_next, self.first, self.last_start, self.offsets, self.writable, L,
                                    self.width, state.logit_shift)
        return False

    def layer_rows(self, state, layer: int, context) -> Optional[RowSet]:
        return self.rows


def window_rows(key_next: torch.Tensor, first: torch.Tensor, last_start: torch.Tensor, offsets: torch.Tensor,
                writable: Optional[torch.Tensor], length: int, size: int, shift: int) -> RowSet:
    """The ``n[b] = min(size, length − first[b])`` rows centred on ``key − shift`` per batch row
    (``key_next`` = key + 1, ``[B, 1]``; one more row to the right for even sizes), shifted to stay
    inside ``[first[b], length)`` (``last_start`` = ``length − n``); as an index of ``len(offsets)``
    entries, those past ``n[b]`` not writable."""
    start = key_next - (1 + shift + (size - 1) // 2)
    start = torch.maximum(torch.minimum(start, last_start), first)
    index = start + offsets
    if writable is not None:
        index = index.clamp(max=length - 1)
    return RowSet.indexed(index, writable)
