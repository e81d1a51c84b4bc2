"""Cache policy ``prefix`` — Fast-dLLM (v1) PrefixCache.

Source: Wu et al., *Fast-dLLM* (arXiv 2505.22618), ``generate_with_prefix_cache`` in
NVlabs/Fast-dLLM ``llada/generate.py`` (and ``dream/model/generation_utils_block.py``).

Rule, per block:

* step 0 of the block is a **full step**: every row of every layer is recomputed, refreshing every
  cached K/V; its logits also decode that step (one NFE, as Fast-dLLM counts it);
* every later step recomputes, in every layer, the rows from the current block to the end of the
  canvas (current block + all later, still masked positions); the prefix (prompt + finished
  blocks) is read from the K/V cached at the block start.

Dream (``logit_shift`` 1): the logits of block position ``i`` come from hidden row ``i − 1``, so the
rows read for the block are ``[block_start − 1, block_end − 1)`` while the tokens that change are
``[block_start, block_end)``. Both must be fresh, so the recomputed rows start at
``block_start − 1`` (the last token before the block; Fast-dLLM's Dream port instead feeds only
``x[block_start:]`` and reads the first block position from the block's own first row — a quirk it
hides by committing that position unconditionally at the refresh step). For LLaDA the rows start
at ``block_start``. Rows are the same canvas positions for every batch row (left padding keeps the
generation region aligned).
"""

from __future__ import annotations

from typing import Optional

import attrs

from ..core.policy import CachePolicy
from ..core.rows import RowSet


def block_rows(state, to_end: bool = False) -> RowSet:
    """The span of hidden rows ``[block_start − logit_shift, block_end)`` — the rows whose logits
    decode the current block united with the block's own rows (whose tokens change); with
    ``to_end`` up to the end of the canvas instead of ``block_end``."""
    return RowSet.span(max(state.block_start - state.logit_shift, 0), state.length if to_end else state.block_end)


@attrs.define
class PrefixCache(CachePolicy):
    """Fast-dLLM PrefixCache: full forward at each block start, then recompute the block and everything after it.

    The prefix's (prompt + finished blocks) K/V are reused from the block-start refresh."""

    exact_for_waiting_rows = True

    rows: Optional[RowSet] = attrs.field(default=None, init=False, repr=False)
    to_end = True

    def step_start(self, state) -> bool:
        refresh = state.step_in_block == 0
        self.rows = None if refresh else block_rows(state, to_end=self.to_end)
        return refresh

    def layer_rows(self, state, layer, context) -> Optional[RowSet]:
        return self.rows
