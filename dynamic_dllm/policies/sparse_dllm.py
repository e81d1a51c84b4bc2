"""Cache policy ``sparse-dllm`` — Sparse-dLLM: block-wise K/V cache with importance-based eviction.

Source: Song et al., *Sparse-dLLM* (arXiv 2508.02558); OpenMOSS/Sparse-dLLM
``modeling_llada.py::CustomCache.filter_cache`` and ``llada_generate.py`` (Dream: ``dream/Cache.py``).

Rule, per block, with ``i`` the step within the block (the reference's ``cache_state``):

* ``i == 0``: a **full step** (no eviction);
* ``i == 1``: another **full step**; in every layer, from that step's layer input, each non-block
  position ``j`` gets the importance ``mean over block queries q and query heads of RoPE(q)·RoPE(k_j)``
  (raw dot product; :meth:`~dynamic_dllm.core.executor.LayerContext.key_importance`), max-pooled
  over neighbouring candidates with ``kernel_size`` (stride 1, same padding), and the
  ``floor(S · keep_ratio)`` most important of the ``S`` candidates are kept (ties: the earlier
  position). The selection is delayed by one step as in the reference: it uses step-1 states;
* ``i ≥ 2``: only the block rows are recomputed (as ``dual``), and each layer's attention sees only
  the block's keys and that layer's kept keys (``layer_keys``; a layer whose keep set drops no valid
  key runs plain attention — learnt with one host sync per block, at step 2). Evictions last for the rest of
  the block; the next block starts over with full steps, so a key can come back.

Candidates are the valid (non-padding) positions outside the block rows — prompt and finished
blocks before, the masked suffix after; the pooling runs over them in canvas order with the block
cut out (the position before the block neighbours the one after it, as in the reference's cache
with the block removed), and ``S`` counts each batch row's own candidates, so a left-padded row
keeps what its single run keeps.

Dream (``logit_shift`` 1): the block rows are ``[block_start − 1, block_end)`` (the rows read for
the block's logits united with the rows whose tokens change, see :mod:`~dynamic_dllm.policies.prefix`);
they are both the recomputed rows, the scoring queries and the always-kept keys.

``keep_ratio=1`` keeps every key, which makes this exactly ``dual`` plus a second full step at
``i == 1`` (not ``none``: the block-only recompute of steps ``i ≥ 2`` is Sparse-dLLM's own).
"""

from __future__ import annotations

from typing import Optional

import attrs
import torch
import torch.nn.functional as F

from ..core.validators import integer, number_in
from ..core.policy import CachePolicy
from ..core.rows import RowSet
from .prefix import block_rows


def select_keys(importance: torch.Tensor, candidates: torch.Tensor, start: int, end: int,
                keep_ratio: float, kernel_size: int) -> torch.Tensor:
    """Bool ``[B, L]`` keep-mask: rows ``[start, end)`` always kept; among ``candidates`` (bool
    ``[B, L]``, False inside ``[start, end)``) the ``floor(count · keep_ratio)`` with the highest
    max-pooled ``importance`` ``[B, L]``, pooling over the candidates with ``[start, end)`` cut out."""
    cut = lambda t: torch.cat([t[:, :start], t[:, end:]], 1)  # noqa: E731
    cand = cut(candidates)
    score = cut(importance).float().masked_fill(~cand, float("-inf"))  # no scalar tensor: no host→device copy
    pooled = F.max_pool1d(score[:, None], kernel_size, stride=1, padding=kernel_size // 2)[:, 0]
    pooled = pooled.masked_fill(~cand, float("-inf"))
    n_keep = torch.floor(cand.sum(1).double() * keep_ratio).long()
    order = torch.sort(pooled, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    kept = cand & (rank < n_keep[:, None])
    keep = torch.ones_like(candidates)
    keep[:, :start] = kept[:, :start]
    keep[:, end:] = kept[:, start:]
    return keep


@attrs.define
class SparseDllm(CachePolicy):
    """Sparse-dLLM: per block and layer keep the keep_ratio most important non-block K/V; recompute the block.

    Steps 0 and 1 of each block are full; the keep set is scored from step 1's states; from step 2
    only the block is recomputed, attending to the block and the kept keys."""

    exact_for_waiting_rows = True

    keep_ratio: float = attrs.field(default=0.5, validator=number_in("kept share of the keys", 0.0, 1.0, low_open=True))
    kernel_size: int = attrs.field(default=3, validator=integer(1, odd=True, note="pooling kernel"))
    rows: Optional[RowSet] = attrs.field(default=None, init=False, repr=False)
    keep: list = attrs.field(factory=list, init=False, repr=False)
    restricts_keys = True

    def start(self, run) -> None:
        self.rows, self.keep = None, [None] * run.n_layers
        self.valid = run.valid

    def step_start(self, state) -> bool:
        self.rows = block_rows(state)
        if state.step_in_block == 0:
            self.keep = [None] * state.n_layers
        elif state.step_in_block == 2:  # once per block: which layers' keep sets drop a valid key
            drops = torch.stack([(self.valid & ~k).any() for k in self.keep]).tolist()
            self.keep = [k if d else None for k, d in zip(self.keep, drops)]
        return state.step_in_block <= 1

    def layer_rows(self, state, layer, context) -> Optional[RowSet]:
        return self.rows if state.step_in_block >= 2 else None

    def layer_keys(self, state, layer, context) -> Optional[torch.Tensor]:
        if state.step_in_block == 1:  # evict from this (full) step's states; applies from step 2
            start, end = self.rows.start, self.rows.start + self.rows.size
            candidates = state.valid.clone()
            candidates[:, start:end] = False
            importance = context.key_importance(self.rows)
            self.keep[layer] = select_keys(importance, candidates, start, state.block_end, self.keep_ratio, self.kernel_size)
            return None
        return self.keep[layer] if state.step_in_block >= 2 else None
