"""dLLM-Cache (``dllm-cache``) — Liu et al., arXiv 2506.06295; released code maomaocun/dLLM-cache
@ 17235bff (``dllm_cache/cache/Cache.py``, ``hooks/cache_hook_LLaDA.py``, ``hooks/cache_hook_Dream.py``).

Rule, as the released hooks behave (step ``t`` = the 0-based step count, i.e. the code's
``current_step − 1``; the counter runs over the whole generation, never reset at block starts; in a
batch each row counts its own steps — a row waiting for the others does not — so it decodes as alone):

* ``refresh_prompt = t % prompt_interval == 0`` (K_p), ``refresh_response = t % response_interval == 0`` (K_r).
* Both: full step (every row of every layer).
* **Layer 0 is always fully recomputed** (the hooks force both refresh flags on layer 0).
* Response refresh only: every response row recomputed (attention against cached prompt K/V);
  prompt attention/FFN outputs reused.
* Otherwise the *V-verify* partial update (if ``ratio`` ρ > 0): V is re-projected for all response
  rows (the response part of the V cache is overwritten, the prompt part is not — this uses
  :meth:`LayerContext.values` with a row subset), and the ``int(G · ρ)`` response rows whose fresh V
  is least cosine-similar to the previous step's cached V are recomputed (Q, K, attention over all
  keys, FFN). On a prompt refresh step the prompt rows are recomputed as well.

"Response rows" are the hidden rows from ``P − logit_shift`` on: for LLaDA the G generated
positions exactly as in the released code; for Dream also the last prompt row ``P − 1``, whose
hidden state produces the logits of the first generated position (the released Dream hook splits at
``P`` and would leave that row frozen between prompt refreshes — a deliberate deviation, so that
every row whose output is decoded can be refreshed). ``int(G · ρ)`` is unchanged. Prompt rows include
left padding, as ``x[:, :P]`` does in the released code. Defaults K_p = 100, K_r = 7, ρ = 0.25 are
the released demo / FLOPs-script settings (the Dynamic-dLLM paper's LLaDA baseline uses 50 / 7).
"""

from __future__ import annotations

from typing import Optional

import attrs
import torch
import torch.nn.functional as F

from ..core.validators import integer, number_in
from ..core.policy import CachePolicy, RunInfo
from ..core.rows import RowSet, union
from .dcu import ROUNDING_TOLERANCE


@attrs.define
class DllmCache(CachePolicy):
    """dLLM-Cache: prompt refreshed every K_p steps, response every K_r; in between V-verify recomputes the ρ·G least V-similar response rows (layer 0 always full)."""

    exact_for_waiting_rows = True

    prompt_interval: int = attrs.field(default=100, validator=integer(1))
    response_interval: int = attrs.field(default=7, validator=integer(1))
    ratio: float = attrs.field(default=0.25, validator=number_in("share of response rows V-verify recomputes", 0.0, 1.0))

    def start(self, run: RunInfo) -> None:
        self.response_start = max(run.prompt_length - run.logit_shift, 0)
        self.n_replace = int(run.config.gen_length * self.ratio)
        B, L = run.batch_size, run.length
        self.shape = (B, L)
        self.response_rows = RowSet.span(self.response_start, L)
        self.prompt_rows = RowSet.span(0, self.response_start)
        self.all_rows = RowSet.span(0, L)
        self.k = min(self.n_replace, L - self.response_start)

        self.count = [0] * B  # per batch row: the steps it took part in (its own step number)
        self.mixed = None

    def step_start(self, state) -> bool:
        """Refresh flags from each batch row's own step count — equal to the global step in a single
        run; in a batch a row waiting for the others (``state.waiting``) does not count, so it decodes
        as alone. When the active rows disagree, the step's rows are chosen per batch row (:meth:`_mixed_rows`)."""
        active = [b for b in range(len(self.count)) if b not in state.waiting] or list(range(len(self.count)))
        flags = {b: (self.count[b] % self.prompt_interval == 0, self.count[b] % self.response_interval == 0) for b in active}
        for b in active:
            self.count[b] += 1
        distinct = set(flags.values())
        if len(distinct) == 1:
            self.mixed = None
            self.refresh_prompt, self.refresh_response = distinct.pop()
            return self.refresh_prompt and self.refresh_response
        device = state.x.device
        rp = torch.tensor([flags.get(b, (False, False))[0] for b in range(len(self.count))], device=device)
        rr = torch.tensor([flags.get(b, (False, False))[1] for b in range(len(self.count))], device=device)
        self.mixed = (rp[:, None], rr[:, None])
        self.refresh_prompt = self.refresh_response = False
        return False

    def _mixed_rows(self, context) -> RowSet:
        """Every row of every batch row, writable where that batch row's own rule recomputes: all
        rows (both refreshes), response rows (response refresh), prompt rows (prompt refresh) and
        its V-verify top rows (no response refresh)."""
        rp, rr = self.mixed
        B, L = self.shape
        pos = torch.arange(L, device=rp.device)[None]
        response = pos >= self.response_start
        want = (rr & response) | (rp & ~response)
        if self.n_replace:
            top = torch.zeros(self.shape, dtype=torch.bool, device=rp.device).scatter_(1, self._top(context), True)
            want = want | (top & ~rr)
        return RowSet.indexed(pos.expand(B, L), want)

    def _top(self, context) -> torch.Tensor:
        """``[B, k]`` canvas positions of the V-verify rows: the ``k`` response rows whose fresh V
        is least cosine-similar to the cached V (the previous step's; written back after this call).
        1 − cos counts the rounding noise of an unchanged row as 0, and equal changes are taken left
        to right, so the choice does not depend on the padding before a sequence."""
        r0 = self.response_start
        fresh = context.values(rows=self.response_rows)[:, r0:]
        cached = context.cached_values()[:, r0:]
        change = F.threshold(1.0 - F.cosine_similarity(fresh.float(), cached.float(), dim=-1), ROUNDING_TOLERANCE, 0.0)
        return torch.sort(change, dim=1, descending=True, stable=True).indices[:, :self.k] + r0

    def layer_rows(self, state, layer: int, context) -> Optional[RowSet]:
        if layer == 0 or (self.refresh_prompt and self.refresh_response):
            return self.all_rows
        if self.mixed is not None:
            return self._mixed_rows(context)
        if self.refresh_response:
            return self.response_rows
        prompt = self.prompt_rows if self.refresh_prompt else None
        if self.n_replace == 0:
            return prompt
        replaced = RowSet.indexed(self._top(context))  # exactly k rows in every batch row: all writable
        return union([prompt, replaced], *self.shape, replaced.index.device)
