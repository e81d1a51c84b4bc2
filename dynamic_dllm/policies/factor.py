"""Fast-dLLM factor-based parallel decoding (``factor``).

Source: Fast-dLLM paper §3.3 (Theorem 1: n tokens each with
confidence > 1 − ε and ``(n+1)ε ≤ 1`` decode in parallel like sequentially) and ``NVlabs/Fast-dLLM``
``llada/generate.py: get_transfer_index_dynamic``.

Rule, per step, with the confidences ``c_i = softmax(z_i)[x_i]`` (float64, as Fast-dLLM) of the
masked positions of the current block sorted ``c(1) ≥ c(2) ≥ … ≥ c(m)``::

    n* = max { n ∈ 1..m : (n+1)·(1 − c(n)) < factor }      (n* = 1 when no n qualifies)
    commit the n* most confident masked positions

Default factor 1.0 (Fast-dLLM's default). ``(n+1)(1 − c(n))`` is non-decreasing in n, so the
qualifying n form a prefix; larger factors commit more per step.
"""

from __future__ import annotations

import attrs

import torch

from .compose import FactorRule, RulePolicy, number_in, probability_float64


@attrs.define
class FactorDecoding(RulePolicy):
    """Fast-dLLM factor rule: commit the top n for the largest n with (n+1)(1 - c(n)) < factor (at least one)."""

    exact_in_batches = True  # per-row rule, no random draws at temperature 0

    factor: float = attrs.field(default=1.0, validator=number_in("Fast-dLLM factor rule", low=0.0, low_open=True))

    def score(self, view) -> torch.Tensor:
        return probability_float64(view)  # Fast-dLLM's softmax is float64

    def make_rule(self) -> FactorRule:
        return FactorRule(factor=self.factor)
