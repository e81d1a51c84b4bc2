"""Cache policy ``none``: every row of every layer recomputed at every step (the reference)."""

from __future__ import annotations

import attrs

from ..core.policy import CachePolicy


@attrs.define
class NoCache(CachePolicy):
    """No caching: a full forward at every step."""

    exact_for_waiting_rows = True

    supports_cfg = True
    reuses_cache = False  # the executor keeps no cache: every step is a plain forward

    def step_start(self, state) -> bool:
        return True
