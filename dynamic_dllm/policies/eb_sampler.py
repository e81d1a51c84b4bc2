"""Entropy-bounded sampler (``eb-sampler``).

Source: EB-Sampler (entropy-bounded unmasking, arXiv 2505.24857);
default γ = 0.001 as in d2Cache's EB-Sampler config
(``Kamichanw/d2Cache``). The running max is taken along the sorted positions of each row (d2Cache's
implementation takes ``cummax`` over the batch axis, which is wrong for batches > 1).

Rule, per step, on the masked positions of the current block: order them by confidence
``c_i = softmax(z_i)[x_i]`` (descending, ties by position), with entropies
``H_i = −Σ_v p_iv log p_iv`` of ``p_i = softmax(z_i)``; commit the longest prefix ``S`` with::

    Σ_{i ∈ S} H_i − max_{i ∈ S} H_i ≤ γ

(at least one — the most confident — always qualifies). ``Σ H − max H`` bounds the error of
sampling the prefix jointly instead of one at a time; ``γ = 0`` commits one token per step except
for certain (``H = 0``) tokens.
"""

from __future__ import annotations

import attrs

from .compose import EntropyBoundRule, RulePolicy, number_in


@attrs.define
class EntropyBoundedSampler(RulePolicy):
    """EB-Sampler: commit the longest confidence-ordered prefix with sum(H) - max(H) <= gamma (at least one)."""

    exact_in_batches = True  # per-row rule, no random draws at temperature 0

    gamma: float = attrs.field(default=0.001, validator=number_in("EB-Sampler entropy bound", low=0.0))

    def make_rule(self) -> EntropyBoundRule:
        return EntropyBoundRule(gamma=self.gamma)
