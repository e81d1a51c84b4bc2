"""Cache policy ``block-kv`` — the native KV cache of block-diffusion models (SDAR).

A block-causal model's position i attends only to blocks ≤ its own, so the K/V of a finished block
never change once its tokens are final; the reference sampler (SDAR ``block_diffusion_generate``)
keeps them and runs each denoising step on the current block alone. Rule, per step:

* the generation's first step is a full step (the prompt's blocks and the first block — SDAR's
  prefill and first decoding step in one forward);
* step 0 of every later block recomputes the previous block (its tokens are now final: SDAR's
  extra ``store_kv`` forward, here fused into the same forward — the previous block's queries see
  only blocks ≤ their own, so its rows come out as in a forward of their own) and the current block;
* every other step recomputes the current block's rows only.

Exact for block-causal models: tokens equal those of ``none`` (every row recomputed every step),
which the tests check. Rows of later blocks are never computed after the first step; no query
before them attends to them. On a bidirectional model (LLaDA, Dream) earlier blocks' K/V would go
stale, so it is refused there (use ``prefix`` / ``dual``).

NFE: one per denoising step; SDAR's reference counts one more per block (the store forward).
"""

from __future__ import annotations

from typing import Optional

import attrs

from ..core.policy import CachePolicy, RunInfo
from ..core.rows import RowSet


@attrs.define
class BlockKV(CachePolicy):
    """Block-diffusion native KV cache: recompute the current block (and, at a block's first step, the block just finished)."""

    exact_for_waiting_rows = True

    rows: Optional[RowSet] = attrs.field(default=None, init=False, repr=False)

    def start(self, run: RunInfo) -> None:
        if not run.block_causal:
            raise ValueError("cache 'block-kv' keeps earlier blocks' K/V, exact only for block-causal models (SDAR);"
                             " this model attends bidirectionally — use 'prefix' or 'dual'")

    def step_start(self, state) -> bool:
        if state.step == 0:
            self.rows = None
            return True
        Lb = state.block_end - state.block_start
        start = state.block_start - Lb if state.step_in_block == 0 and state.block > 0 else state.block_start
        self.rows = RowSet.span(start, state.block_end)
        return False

    def layer_rows(self, state, layer, context) -> Optional[RowSet]:
        return self.rows
