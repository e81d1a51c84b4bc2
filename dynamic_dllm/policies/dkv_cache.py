"""Cache policy ``dkv-cache`` — dKV-Cache-Decode (delayed caching of decoded tokens' K/V).

Source: Ma et al., *dKV-Cache* (arXiv 2505.15781); horseee/dKV-Cache
``generation_utils/llada_dkv_cache_decode.py`` (LLaDA) and ``dream_generation_utils.py`` with
``cache_type="decoded"`` (Dream).

Rule. The step counter ``i`` is **per block** (``StepState.step_in_block``; the reference resets
its cache and counter at every block):

* ``i == 0``, ``i == 1`` or ``i % refresh_interval == 0``: a **full step** (every row of every layer,
  all K/V refreshed — the prompt's K/V are cached from these refreshes);
* otherwise every layer recomputes the positions that were masked at the start of the previous
  step, i.e. the still-masked positions (all of them, current block and suffix) plus the tokens
  committed at the previous step; every other position's K/V is read from the cache. So a token
  committed at step ``t`` is recomputed once more, with its real token, at step ``t + 1`` (its K/V
  stored then) and read from the cache from step ``t + 2`` on (the one-step delay). Masked tokens
  are never cached.

``refresh_interval`` (reference ``cache_reloading_step`` / ``cache_steps``): ``None`` (default)
picks it from the model family — 8 for LLaDA, 4 for AR-initialised Dream (``logit_shift`` 1), the
values of the released scripts and of the Dynamic-dLLM paper. ``refresh_interval=1`` makes every
step full (exactly the ``none`` policy).

Dream (``logit_shift`` 1): hidden row ``j`` predicts token ``j + 1``, so row ``j`` is recomputed
when token ``j`` *or* token ``j + 1`` is in the set above (the reference's ``shift_type="un_right"``
rule: row ``j`` is cacheable only when both ``x[j]`` and ``x[j+1]`` are decoded). In particular the
last prompt token stays uncached while the first generated position is masked. Row sets are per
batch row.
"""

from __future__ import annotations

from typing import Optional

import attrs
import torch

from ..core.validators import integer
from ..core.policy import CachePolicy
from ..core.rows import RowSet

#: refresh intervals used when ``refresh_interval`` is None, keyed by the model's logit shift
DEFAULT_INTERVAL = {0: 8, 1: 4}


def shift_rows(fresh: torch.Tensor, logit_shift: int) -> torch.Tensor:
    """Rows that must be recomputed when the *tokens* ``fresh`` (bool ``[B, L]``) change: the rows
    themselves and, with a logit shift, the rows whose output predicts them (row ``j`` for token ``j + 1``)."""
    if not logit_shift:
        return fresh
    predicts = torch.zeros_like(fresh)
    predicts[:, :-logit_shift] = fresh[:, logit_shift:]
    return fresh | predicts


@attrs.define
class DkvCache(CachePolicy):
    """dKV-Cache-Decode: decoded tokens' K/V cached one step after commit; masks always recomputed.

    Full refresh at steps 0 and 1 of each block and every ``refresh_interval`` steps (per-block counter;
    auto: 8 LLaDA, 4 Dream)."""

    exact_for_waiting_rows = True

    refresh_interval: Optional[int] = attrs.field(default=None, validator=integer(1, optional=True, note="none: 8 for LLaDA, 4 for Dream"))
    interval: int = attrs.field(default=0, init=False)
    rows: Optional[RowSet] = attrs.field(default=None, init=False, repr=False)

    def start(self, run) -> None:
        self.interval = self.refresh_interval or DEFAULT_INTERVAL.get(run.logit_shift, 8)
        self.rows = None

    def is_refresh(self, step_in_block: int) -> bool:
        return step_in_block <= 1 or step_in_block % self.interval == 0

    def step_start(self, state) -> bool:
        if self.is_refresh(state.step_in_block):
            self.rows = None
            return True
        # the set's size is a count: taken here, once per step (one host sync), not per layer
        self.rows = RowSet.from_mask(shift_rows(state.masked | state.last_committed, state.logit_shift))
        return False

    def layer_rows(self, state, layer, context) -> Optional[RowSet]:
        return self.rows
