"""Row sets: the rows one layer recomputes, with a size the host knows before the layer runs.

A :class:`RowSet` is either a **span** ``[start, end)`` shared by every batch row (Fast-dLLM's
block, a refresh region; the executor slices, no gather), or an **index** ``[B, R]`` of canvas
positions with an optional ``writable`` ``[B, R]`` mask: entries that are not writable are padding
(computed, then discarded) — that is how a per-batch-row count ``k_b ≤ R`` or the overlap of a
union is paid for with padding instead of a device→host sync. ``R`` (``size``) is a Python int.

Invariant: the writable entries of a row point at distinct positions. Unwritable entries may point
anywhere in ``[0, L)``; the executor writes them to a discarded row ``L``.
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

    @classmethod
    def span(cls, start: int, end: int) -> "RowSet":
        """Rows ``[start, end)`` of every batch row."""
        return cls(size=max(end - start, 0), start=start)

    @classmethod
    def indexed(cls, index: torch.Tensor, writable: Optional[torch.Tensor] = None) -> "RowSet":
        return cls(size=index.shape[1], index=index, writable=writable)

    @classmethod
    def top(cls, scores: torch.Tensor, k: torch.Tensor, size: int) -> "RowSet":
        """The ``k[b] ≤ size`` highest ``scores`` ``[B, L]`` of each row (ties: lower position
        first), padded to ``size`` entries: the next-ranked positions, not writable."""
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :size]
        return cls(size=size, index=order, writable=torch.arange(size, device=scores.device) < k[:, None])

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
        return torch.arange(self.start, self.start + self.size, device=device).expand(batch, -1)

    def targets(self, length: int) -> torch.Tensor:
        """``[B, size]`` write positions: the index, with unwritable entries sent to row ``length``."""
        if self.writable is None:
            return self.index
        return torch.where(self.writable, self.index, length)

    def mask(self, batch: int, length: int, device) -> torch.Tensor:
        """Bool ``[B, L]`` of the writable rows."""
        if self.is_span:
            out = torch.zeros(batch, length, dtype=torch.bool, device=device)
            out[:, self.start:self.start + self.size] = True
            return out
        out = torch.zeros(batch, length + 1, dtype=torch.bool, device=device)
        out.scatter_(1, self.targets(length), True)
        return out[:, :length]

    def chosen(self, batch: int, length: int):
        """Distinct rows this set writes, summed over the batch (an int for spans and unpadded
        sets, else a 0-d tensor: no sync)."""
        if self.writable is None:
            return batch * self.size
        return self.writable.sum()


def union(sets: Sequence[Optional[RowSet]], batch: int, length: int, device) -> Optional[RowSet]:
    """The union of several row sets (None entries ignored; None if none is left). Overlapping or
    adjacent spans merge into one span; otherwise the indexes are concatenated (size = Σ sizes) and
    an entry already written by an earlier set is marked not writable."""
    sets = [s for s in sets if s is not None and s.size > 0]
    if len(sets) <= 1:
        return sets[0] if sets else None
    if all(s.is_span for s in sets):
        ordered = sorted(sets, key=lambda s: s.start)
        start, end = ordered[0].start, ordered[0].start + ordered[0].size
        for s in ordered[1:]:
            if s.start > end:
                break
            end = max(end, s.start + s.size)
        else:
            return RowSet.span(start, end)
    claimed = torch.zeros(batch, length + 1, dtype=torch.bool, device=device)
    index, writable = [], []
    for i, s in enumerate(sets):
        pos = s.positions(batch, device)
        if i == 0:
            w = s.writable if s.writable is not None else torch.ones(pos.shape, dtype=torch.bool, device=device)
        else:
            w = ~claimed.gather(1, pos)
            if s.writable is not None:
                w &= s.writable
        if i < len(sets) - 1:
            claimed.scatter_(1, torch.where(w, pos, length), True)
        index.append(pos)
        writable.append(w)
    return RowSet.indexed(torch.cat(index, 1), torch.cat(writable, 1))
