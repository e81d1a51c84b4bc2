"""An observer that records, per step and layer, how many rows the active cache policies recompute.

It is passed as one more cache policy. Its ``cache_step_start`` and ``cache_rows`` hooks are pluggy
*wrappers*: they see the answers of every other cache policy (the full-step votes and the row
masks the engine unites) without adding an opinion of their own, so the generation is unchanged.
The counts follow the executor's rules: a full step (or the first step, when the cache is empty)
or an all-True row mask counts every row ``B * L``; otherwise the united mask's True rows.
Summed over steps they equal :attr:`GenerationStats.recomputed_rows`.
"""

from __future__ import annotations

import torch

from ..core.hookspecs import hookimpl
from ..core.policy import CachePolicy


class RecomputeObserver(CachePolicy):
    """``counts``: one list per step of per-layer recomputed row counts (summed over the batch)."""

    def __init__(self):
        self.counts: list[list[int]] = []
        self._full = False

    def start(self, run):
        self.counts = []
        self.rows_per_step = run.batch_size * run.length

    @hookimpl(wrapper=True)
    def cache_step_start(self, state):
        votes = yield
        self._full = any(votes) or not self.counts  # the executor's first forward is always full
        self.counts.append([0] * state.n_layers)
        return votes

    @hookimpl(wrapper=True)
    def cache_rows(self, state, layer, context):
        answers = yield
        rows = None
        for a in answers:
            rows = a if rows is None else rows | a
        if self._full or (rows is not None and bool(rows.all())):
            n = self.rows_per_step
        else:
            n = 0 if rows is None else int(rows.sum())
        self.counts[-1][layer] = n
        return answers

    def fractions(self) -> torch.Tensor:
        """``[n_layers, steps]`` fraction of rows recomputed."""
        return torch.tensor(self.counts, dtype=torch.float64).T / self.rows_per_step
