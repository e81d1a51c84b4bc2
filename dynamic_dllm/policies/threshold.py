"""Fast-dLLM confidence-threshold parallel decoding (``threshold``).

Source: Fast-dLLM paper §3.3 and ``NVlabs/Fast-dLLM``
``llada/generate.py: get_transfer_index`` with ``threshold`` set, including the forced argmax of
NVlabs/Fast-dLLM#45 (without it decoding never ends, #42).

Rule, per step, on the masked positions M of the current block with tokens ``x_i = argmax(z_i/T +
Gumbel)`` and confidences ``c_i = softmax(z_i)[x_i]`` computed in float64 (as Fast-dLLM)::

    commit { i ∈ M : c_i ≥ threshold }  ∪  { argmax_{i ∈ M} c_i }

Default threshold 0.9 (Fast-dLLM's default). With ``threshold = 1.0`` (or any value above every
confidence) exactly one token — the most confident — is committed per step, which is LLaDA
``low-confidence`` with one token per step. Float64 matters here: in float32 a confident token's
probability rounds to exactly 1.0 and would meet a threshold of 1.0 (the shipped ``tiny`` model
does this on about a quarter of its positions); in float64 that needs a logit gap of about
37 + ln V, which no tested model reaches.
"""

from __future__ import annotations

import attrs

import torch

from .compose import RulePolicy, ThresholdRule, number_in, probability_float64


@attrs.define
class ThresholdDecoding(RulePolicy):
    """Fast-dLLM threshold: commit every masked block token with confidence ≥ threshold (at least the most confident)."""

    exact_in_batches = True  # per-row rule, no random draws at temperature 0

    threshold: float = attrs.field(default=0.9, validator=number_in("Fast-dLLM threshold rule", 0.0, 1.0))

    def score(self, view) -> torch.Tensor:
        return probability_float64(view)  # Fast-dLLM's softmax is float64

    def make_rule(self) -> ThresholdRule:
        return ThresholdRule(threshold=self.threshold)
