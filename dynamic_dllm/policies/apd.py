"""Adaptive Parallel Decoding of Dynamic-dLLM (``apd``).

Source: Dynamic-dLLM paper §2, Eq. 8–11 and Alg. 2 (defaults α = 0.001, β = 0.0008, App. B.2;
τ⁰ = 0.9, Fig. 6c); ``global`` mode = ``pd_mode=1`` of the released code
(``TianyiWu233/DYNAMIC-DLLM`` ``utils/generate_function.py: update_pd_threshold``).

Rule, per step, on the masked positions of the current block, with tokens ``x_i`` (argmax),
confidences ``p_i = softmax(z_i)[x_i]`` and probability vectors ``P_i = softmax(z_i)``, all in
float64 as in the released code:

* thresholds start at ``τ_i = tau0``;
* from the second step (of the position's block) on, before committing::

      c_i = 1 − P_i(2nd largest)                     (concentration, Eq. 8)
      H_i = 1 − cos(P_i, P_i at the previous step)   (temporal instability, Eq. 10)
      τ_i ← τ_i − α·c_i + β·H_i                      (Eq. 11, mode ``per-token``)
      τ   ← τ − α·mean_masked(c) + β·mean_masked(H)  (mode ``global``: one τ per batch row)

* commit ``{ i masked : p_i ≥ τ_i } ∪ { most confident masked i }`` (Alg. 2 line 14).

Block boundaries: the engine hands a policy only the current block's logits, so a position's
history starts with its block. ``per-token``: τ is stored per batch row and absolute canvas
position; a position enters its block at ``tau0``, is updated only while masked in the current
block, and its τ depends only on its own distributions. ``global``: τ carries over between blocks
(the released code never resets it either); the first step of a block makes no update here — a
difference from the released code, which keeps the whole response's previous distributions and so
also updates on a block's first step.
Clamping: none (paper and released code): τ may fall below 0 (then every masked block token is
committed) or exceed 1 (then only the forced one). α = β = 0 is ``threshold`` at ``tau0``; with
β = 0 thresholds never increase.
"""

from __future__ import annotations

import attrs
import torch

from .compose import APD_MODES, AdaptiveThresholdRule, RulePolicy, number_in, probability_float64


@attrs.define
class AdaptiveParallelDecoding(RulePolicy):
    """Dynamic-dLLM APD: per-token thresholds tau_i <- tau_i - alpha*c_i + beta*H_i; commit p_i >= tau_i (at least one)."""

    exact_in_batches = True  # per-row rule, no random draws at temperature 0

    tau0: float = attrs.field(default=0.9, validator=number_in("APD initial threshold", 0.0, 1.0))
    alpha: float = attrs.field(default=0.001, validator=number_in("APD concentration weight", low=0.0))
    beta: float = attrs.field(default=0.0008, validator=number_in("APD instability weight", low=0.0))
    mode: str = attrs.field(default="per-token")

    @mode.validator
    def _check_mode(self, attribute, value):
        if value not in APD_MODES:
            raise ValueError(f"mode must be one of {', '.join(APD_MODES)}, got {value!r} (APD threshold mode)")

    def score(self, view) -> torch.Tensor:
        return probability_float64(view)

    def make_rule(self) -> AdaptiveThresholdRule:
        return AdaptiveThresholdRule(tau0=self.tau0, alpha=self.alpha, beta=self.beta, mode=self.mode)

    def thresholds(self) -> torch.Tensor:
        """Current thresholds ``[B, L]`` by batch row and absolute canvas position, as updated at
        the last step."""
        return self.active_rule.thresholds(self.run.length)
