"""Dynamic Cache Updating as the released code runs it (``dcu-released``) — TianyiWu233/DYNAMIC-DLLM
@ 43cb93b7, ``dynamic_dllm_cache/hooks/cache_hook_LLaDA.py`` (``_cache_hook_feature_window_budget``,
``_do_partial_selection``, ``_compute_sim_for_budget_full_refresh``, ``_get_centered_window_indices``)
and ``dynamic_dllm_cache/cache/Cache.py``. The paper's rules are ``dcu+window``
(:mod:`~dynamic_dllm.policies.dcu`, the default); this policy reproduces the released code's
tokens, rule by rule (docs/paper_vs_released.md), for users who want its reported numbers.

Forwards are counted over the whole generation, ``t = 1, 2, …`` (block boundaries do nothing).

* **Refreshes.** Prompt rows refresh at forwards with ``(t − 1) % prompt_interval == 0``,
  response rows with ``(t − 1) % response_interval == 0`` (shipped 5000/5000: only forward 1,
  which is a full forward). Layer 0 recomputes every row at every forward.
* **Layers ≥ 1 without a response refresh** (when ``window > 0`` or ``budget > 0``; else they
  reuse everything): V is re-projected for every *response* row (and written to the V cache);
  Q, K, attention and FFN only for the chosen rows U; prompt rows keep their K, V, attention and
  FFN of the last prompt refresh (recomputed in full on a prompt refresh).
* **Dynamics** on response rows only: ``d_i = 1 − n(a_i) · n(b_i)`` (``n`` = L2 normalisation),
  ``score=value``: ``a`` = this forward's V, ``b`` = the V cache (the previous forward's V);
  ``score=input``: ``a`` = the normalised layer input ``n1(x)``, ``b`` = the same layer's ``a`` at
  the previous forward — at forward 2 there is none, and ``a`` is compared with itself (``d`` is
  rounding noise), as in the released code. Layer 0, and layers on a response refresh, record
  ``mean_i d_i`` over every 4th response row (all rows when the response has ≤ 4) with their
  quirks: ``value`` compares the fresh V with itself; ``input`` compares the *raw* layer input
  with the kept vector, and keeps the raw input.
* **Budget.** ``B_l = budget`` at forward 2; from forward 3 on,
  ``B_l = int(budget · 32 · softmax(10⁻⁸ · s)_l)`` with ``s`` the previous forward's per-layer mean
  dynamics — the softmax is uniform to fp32 precision and the 32 is hard-coded, so
  ``B_l = 32·budget / n_layers``; clipped to ``[0, gen_length]``.
* **Window.** ``2·(window//2) + 1`` response rows centred on the rightmost position committed at
  the previous forward (every response row when ``window ≥ gen_length``), shifted to stay inside
  the response. **U = window + top-B_l of the rows outside it** (``torch.topk(sorted=False)`` on the
  ``[1, gen_length]`` dynamics with the window at −∞; a budget larger than the rows outside the
  window picks window rows again — they are computed once more and written once).

Departures from the paper (see :mod:`~dynamic_dllm.policies.dcu`): layer 0 always dense; prompt
rows never rescored nor recomputed; V of all response rows recomputed at every layer; window and
top-B disjoint (``B_l + |W|`` rows); budgets ``32·budget/n_layers`` instead of proportional to the
layer dynamics. Batch 1 and LLaDA-layout models (no logit shift) only, as released. Ties among
equal dynamics follow ``torch.topk``, which is device-dependent: results equal the released code's
on the same device.
"""

from __future__ import annotations

from typing import Optional

import attrs
import torch
import torch.nn.functional as F

from ..core.validators import integer, one_of
from ..core.policy import CachePolicy, RunInfo
from ..core.rows import RowSet


def dissimilarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``1 − n(a) · n(b)`` along the last axis, with ``n`` = ``F.normalize`` (the released
    ``_compute_sim_token``, op for op)."""
    return 1.0 - (F.normalize(a, p=2, dim=-1) * F.normalize(b, p=2, dim=-1)).sum(dim=-1)


#: the released code's hard-coded layer count in ``total_budget = layer_budget * 32``
RELEASED_LAYERS = 32


@attrs.define
class ReleasedDynamicCache(CachePolicy):
    """Dynamic-dLLM DCU as released (TianyiWu233/DYNAMIC-DLLM): window + top-B outside it on response rows, layer 0 and prompt as released."""

    budget: int = attrs.field(default=32, validator=integer(0))
    window: int = attrs.field(default=32, validator=integer(0))
    score: str = attrs.field(default="value", validator=one_of(("value", "input"), note="released select_from v, x"))
    prompt_interval: int = attrs.field(default=5000, validator=integer(1))
    response_interval: int = attrs.field(default=5000, validator=integer(1))

    def start(self, run: RunInfo) -> None:
        if run.batch_size != 1:
            raise ValueError(f"dcu-released reproduces the released code, which decodes one sequence at a time; "
                             f"got a batch of {run.batch_size} (use dcu+window for batches)")
        if run.logit_shift != 0:
            raise ValueError("dcu-released reproduces the released code for LLaDA-layout models; this model shifts "
                             "its logits (Dream layout): use dcu+window")
        self.P, self.L = run.prompt_length, run.length
        self.G = run.length - run.prompt_length
        self.forward = 0
        self.sims: list = []                     # per-layer mean dynamics [1] of this forward, in layer order
        self.kept: list = [None] * run.n_layers  # score=input: the vector the next forward compares with
        self.key = torch.full((1,), run.prompt_length - 1, dtype=torch.long, device=run.device)
        self.n_window = self.G if self.window >= self.G else 2 * (self.window // 2) + 1
        self.offsets = torch.arange(self.n_window, device=run.device)

    def step_start(self, state) -> bool:
        self.forward += 1
        t = self.forward
        self.refresh_prompt = (t - 1) % self.prompt_interval == 0
        self.refresh_response = (t - 1) % self.response_interval == 0
        committed = state.last_committed
        rightmost = committed.shape[1] - 1 - committed.flip(1).long().argmax(1)
        self.key = torch.where(committed.any(1), rightmost, self.key)
        self.budgets = self._budgets(state.n_layers)
        self.prev_sims, self.sims = self.sims, []
        return self.refresh_prompt and self.refresh_response

    def _budgets(self, n_layers: int) -> list:
        """``B_l`` per layer for this forward (one host read from forward 3 on)."""
        if self.forward <= 2 or not self.sims:
            return [max(0, min(self.budget, self.G))] * n_layers
        weights = torch.softmax(torch.stack(self.sims, 0) * 1e-8, dim=0).view(-1)
        total = self.budget * RELEASED_LAYERS
        known = (total * weights).tolist()
        return [max(0, min(int(known[i] if i < len(known) else total * (1.0 / RELEASED_LAYERS)), self.G))
                for i in range(n_layers)]

    def _record_refresh(self, layer: int, context, dense: bool) -> None:
        """The mean dynamics a refreshed layer records (every 4th response row). A response-only
        refresh projects V on the response rows only: the prompt keeps its cached V."""
        P = self.P
        if self.score == "value":
            a = b = context.values(None if dense else RowSet.span(P, self.L))[:, P:]
        else:
            a = context.hidden[:, P:]
            b = self.kept[layer] if self.kept[layer] is not None else a
        if self.G > 4:
            a, b = a[:, ::4], b[:, ::4]
        self.sims.append(dissimilarity(a, b).mean(dim=-1))
        if self.score == "input":
            self.kept[layer] = context.hidden[:, P:].clone()  # the executor reuses its residual buffers

    def layer_rows(self, state, layer: int, context) -> Optional[RowSet]:
        P, L = self.P, self.L
        if self.forward == 1:
            return None  # the full first forward: nothing recorded
        if layer == 0 or (self.refresh_prompt and self.refresh_response):
            self._record_refresh(layer, context, dense=True)
            return RowSet.span(0, L)
        if self.refresh_response:
            self._record_refresh(layer, context, dense=False)
            return RowSet.span(P, L)
        if self.window == 0 and self.budget == 0:
            return RowSet.span(0, P) if self.refresh_prompt else None
        fresh_v = context.values(RowSet.span(P, L))  # V of every response row, whatever the score
        if self.score == "value":
            a = fresh_v[:, P:]
            b = context.cached_values()[:, P:]
        else:
            a = context.normed()[:, P:]
            b = self.kept[layer] if self.kept[layer] is not None else a
            self.kept[layer] = a
        d = dissimilarity(a, b)
        self.sims.append(d.mean(dim=-1))
        index = self._chosen(d, self.budgets[layer])
        if self.refresh_prompt:
            prompt = torch.arange(P, device=index.device)[None]
            index = torch.cat([prompt, index + P], 1)
        else:
            index = index + P
        first = torch.ones_like(index, dtype=torch.bool)
        first[:, 1:] = index[:, 1:] != index[:, :-1]  # sorted: a row chosen twice is written once
        return RowSet.indexed(index, first)

    def _chosen(self, d: torch.Tensor, budget: int) -> torch.Tensor:
        """Sorted response-relative rows ``[1, |W| + B]``: the window, then the top-``budget``
        dynamics outside it (window rows at −∞)."""
        G, n = self.G, self.n_window
        start = torch.clamp(self.key - self.P - self.window // 2, min=0).clamp(max=G - n)
        window = (start[:, None] + self.offsets).expand(d.shape[0], -1)
        index = window
        if budget > 0:
            vote = d.scatter(1, window, float("-inf"))
            index = torch.cat([window, torch.topk(vote, k=budget, dim=1, sorted=False).indices], 1)
        return torch.sort(index, dim=1).values
