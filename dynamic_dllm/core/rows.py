"""Row sets: the rows one layer recomputes, with a size the host knows before the layer runs.

A :class:`RowSet` is either a **span** ``[start, end)`` shared by every batch row (Fast-dLLM's
block, a refresh region; the executor slices, no gather), or an **index** ``[B, R]`` of canvas
positions with an optional ``writable`` ``[B, R]`` mask: entries that are not writable are padding
(computed, then discarded) — that is how a per-batch-row count ``k_b ≤ R`` or the overlap of a
union is paid for with padding instead of a device→host sync. ``R`` (``size``) is a Python int.

Invariant: the writable entries of a row point at distinct positions. Unwritable entries may point
anywhere in ``[0, L)``; the executor writes them to a discarded row ``L``.

A set memoizes what is derived from it (broadcast indexes, its claimed-rows mask), so a set a
policy answers for every layer of a step (``dual``'s block, ``dkv-cache``'s rows, the window) pays
for them once per step.
"""

from __future__ import annotations

from typing import Optional, Sequence

import attrs
import torch


@attrs.frozen(eq=False)
class RowSet:
    size: int
    start: int = 0
    index: Optional[torch.Tensor] = None     # [B, size] long; None = the span [start, start + size)
    writable: Optional[torch.Tensor] = None  # [B, size] bool; None = every entry
    #: for a :func:`union`, the sets it unites (each the answer of one policy); else empty
    parts: tuple = ()
    _memo: dict = attrs.field(factory=dict, init=False, repr=False)

    def _cached(self, key, make):
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    @classmethod
    def span(cls, start: int, end: int) -> "RowSet":
        """Rows ``[start, end)`` of every batch row."""
        return cls(size=max(end - start, 0), start=start)

    @classmethod
    def indexed(cls, index: torch.Tensor, writable: Optional[torch.Tensor] = None, parts: tuple = ()) -> "RowSet":
        return cls(size=index.shape[1], index=index, writable=writable, parts=parts)

    @classmethod
    def top(cls, scores: torch.Tensor, k: torch.Tensor, size: int) -> "RowSet":
        """The ``k[b] ≤ size`` highest ``scores`` ``[B, L]`` of each row (ties: lower position
        first), padded to ``size`` entries: the next-ranked positions, not writable."""
        return cls.ranked(scores, torch.arange(size, device=scores.device) < k[:, None])

    @classmethod
    def ranked(cls, scores: torch.Tensor, writable: torch.Tensor) -> "RowSet":
        """The ``R`` highest ``scores`` ``[B, L]`` of each row in rank order (ties: lower position
        first), ``R`` = ``writable.shape[1]``; rank ``r`` of batch row ``b`` written where
        ``writable[b, r]`` (:meth:`top` with the mask ``r < k[b]`` made by the caller, e.g. once a step)."""
        size = writable.shape[1]
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :size]
        return cls(size=size, index=order, writable=writable)

    @classmethod
    def from_mask(cls, mask: torch.Tensor) -> "RowSet":
        """The True positions of bool ``[B, L]`` (ascending), padded to the largest row count (a
        span of every row when that count is ``L`` in every row). Costs one host sync (the counts):
        call it once per step, not per layer."""
        counts = mask.sum(1)
        size, smallest = torch.stack([counts.max(), counts.min()]).tolist()
        if smallest == mask.shape[1]:
            return cls.span(0, size)
        index = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices[:, :size]
        return cls(size=size, index=index, writable=torch.arange(size, device=mask.device) < counts[:, None])

    @property
    def is_span(self) -> bool:
        return self.index is None

    def covers(self, length: int) -> bool:
        """Every row of a canvas of ``length`` (the layer is dense)."""
        return self.is_span and self.start <= 0 and self.start + self.size >= length

    def positions(self, batch: int, device) -> torch.Tensor:
        """``[B, size]`` canvas positions (a span's arange broadcast)."""
        if self.index is not None:
            return self.index
        return self._cached(("positions", batch), lambda: torch.arange(self.start, self.start + self.size, device=device).expand(batch, -1))

    def targets(self, length: int) -> torch.Tensor:
        """``[B, size]`` write positions: the index, with unwritable entries sent to row ``length``."""
        if self.writable is None:
            return self.index
        return self._cached(("targets", length), lambda: torch.where(self.writable, self.index, length))

    def read_index(self, like: torch.Tensor) -> torch.Tensor:
        """The index broadcast over the trailing dims of ``like`` ``[B, L, ...]`` (for ``gather``)."""
        return self._cached(("read", like.shape[2:]), lambda: _broadcast(self.positions(like.shape[0], like.device), like))

    def write_index(self, like: torch.Tensor, length: int) -> torch.Tensor:
        """:meth:`targets` broadcast over the trailing dims of ``like`` (for ``scatter_``)."""
        return self._cached(("write", like.shape[2:], length), lambda: _broadcast(self.targets(length), like))

    def flat_read(self, offsets: torch.Tensor, length: int) -> torch.Tensor:
        """``[B·size]`` row numbers of the set's positions in a row-flattened ``[B·L, ·]`` tensor,
        ``offsets`` = ``b·L`` ``[B, 1]`` (for ``index_select``)."""
        return self._cached(("flat-read", length),
                            lambda: flat_rows(self.positions(offsets.shape[0], offsets.device), offsets))

    def flat_write(self, offsets: torch.Tensor, length: int) -> torch.Tensor:
        """``[B·size]`` row numbers of the targets in a row-flattened ``[B·(L+1), ·]`` tensor,
        ``offsets`` = ``b·(L+1)`` (for ``index_copy_``; unwritable entries land on the batch row's
        discarded row L)."""
        return self._cached(("flat-write", length), lambda: flat_rows(self.targets(length), offsets))

    def writable_or_all(self, batch: int, device) -> torch.Tensor:
        """``[B, size]`` bool: the writable mask, all True when there is none."""
        if self.writable is not None:
            return self.writable
        return self._cached(("all", batch, device), lambda: torch.ones(batch, self.size, dtype=torch.bool, device=device))

    def claimed(self, batch: int, length: int, device) -> torch.Tensor:
        """Bool ``[B, L + 1]``: the rows this set writes (column L: none)."""
        def make():
            out = torch.zeros(batch, length + 1, dtype=torch.bool, device=device)
            if self.is_span:
                out[:, self.start:self.start + self.size] = True
            else:
                out.scatter_(1, self.targets(length), True)
                out[:, length] = False
            return out
        return self._cached(("claimed", batch, length), make)

    def mask(self, batch: int, length: int, device) -> torch.Tensor:
        """Bool ``[B, L]`` of the writable rows (a new tensor)."""
        return self.claimed(batch, length, device)[:, :length].clone()

    def chosen(self, batch: int, length: int):
        """Distinct rows this set writes, summed over the batch (an int for spans and unpadded
        sets, else a 0-d tensor: no sync)."""
        if self.writable is None:
            return batch * self.size
        return self.writable.sum()


def flat_rows(index: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Positions ``index`` ``[B, R]`` as row numbers of a row-flattened tensor, ``(index + offsets)``
    flattened (``offsets`` ``[B, 1]``: where each batch row starts); one batch row has offset 0, so
    its index is flattened as is."""
    return index.reshape(-1) if index.shape[0] == 1 else (index + offsets).view(-1)


def _broadcast(index: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return index.view(*index.shape, *([1] * (like.dim() - 2))).expand(*index.shape, *like.shape[2:])


def union(sets: Sequence[Optional[RowSet]], batch: int, length: int, device) -> Optional[RowSet]:
    """The union of several row sets (None entries ignored; None if none is left). A set covering
    every row is the union; overlapping or adjacent spans merge into one span; otherwise the indexes
    are concatenated (size = Σ sizes) and an entry already written by an earlier set is marked not
    writable. Sets without padding go first (their claimed-rows mask is memoized, so a set shared
    by every layer builds it once). A union of several sets keeps them as ``parts``."""
    sets = [s for s in sets if s is not None and s.size > 0]
    if len(sets) <= 1:
        return sets[0] if sets else None
    for s in sets:
        if s.covers(length):  # every row already: the layer is dense
            return s
    if all(s.is_span for s in sets):
        ordered = sorted(sets, key=lambda s: s.start)
        start, end = ordered[0].start, ordered[0].start + ordered[0].size
        for s in ordered[1:]:
            if s.start > end:
                break
            end = max(end, s.start + s.size)
        else:
            return RowSet(size=end - start, start=start, parts=tuple(sets))
    sets = sorted(sets, key=lambda s: s.writable is not None)
    first = sets[0]
    claimed = first.claimed(batch, length, device)
    index, writable = [first.positions(batch, device)], [first.writable_or_all(batch, device)]
    for i, s in enumerate(sets[1:], 2):
        pos = s.positions(batch, device)
        w = ~claimed.gather(1, pos)
        if s.writable is not None:
            w &= s.writable
        if i < len(sets):
            claimed = claimed.scatter(1, torch.where(w, pos, length), True)
        index.append(pos)
        writable.append(w)
    return RowSet.indexed(torch.cat(index, 1), torch.cat(writable, 1), parts=tuple(sets))
