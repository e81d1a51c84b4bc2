"""Compose an unmask policy from a *score* and a *rule*.

An unmask step has two independent decisions: how confident the model is about each masked
position of the current block (the **score**), and how many / which of them to commit given those
confidences (the **rule**). This module provides both as small reusable pieces and the glue that
turns a pair into a policy::

    from dynamic_dllm.policies.compose import ComposedPolicy, FactorRule, margin
    policy = ComposedPolicy(score=margin, rule=FactorRule(factor=1.0))
    dd.generate(lm, "2+2=", unmask=policy, gen_length=64, block_length=32, steps=64)

**Tokens.** Every composed policy picks tokens the LLaDA way: ``argmax(z/T + Gumbel)`` (plain
argmax at ``T == 0``, see :func:`~dynamic_dllm.policies.scores.gumbel_argmax`), drawn once per step,
except that the mask token itself is never chosen (its logit is set to ``-inf`` for the choice
only; if LLaDA's float64 ``exp(z)`` underflows so that the draw still lands on it, the most likely
other token is taken): "committing" ``[MASK]`` leaves the position masked, so a model (e.g. an
untrained one) that predicts it could otherwise stall a block forever. The same Gumbel noise is drawn either way, so
whenever the unrestricted argmax is not the mask token the tokens equal LLaDA's. Probabilities
(scores, entropies, APD's statistics) are the model's full softmax, mask token included.

**Scores** are functions ``score(view) -> [B, Lb]`` (higher = more confident) of a
:class:`BlockView`: :func:`probability` (softmax probability of the chosen token, LLaDA's and
Fast-dLLM's confidence), :func:`margin` (``p(1) - p(2)``), :func:`neg_entropy` (``Σ p log p``).
The composition sets the score of every non-masked position to ``-inf``.

**Rules** are objects with ``select(scores, view) -> bool [B, Lb]`` and optionally
``start(run)`` (called once per generation to reset state):

* :class:`TopKSchedule` — LLaDA: the even split of the block's masks over its steps (top-k).
* :class:`ThresholdRule` — Fast-dLLM: every masked position with score ≥ threshold.
* :class:`FactorRule` — Fast-dLLM: top n for the largest n with ``(n+1)(1 - c(n)) < factor``.
* :class:`AdaptiveThresholdRule` — Dynamic-dLLM APD: per-token thresholds updated from each
  token's distribution history.
* :class:`EntropyBoundRule` — EB-Sampler: the longest confidence-ordered prefix with
  ``Σ H - max H ≤ γ``.

**Progress guarantee.** Whatever the rule answers, the composition commits only masked positions
of the current block and always adds the single most confident masked position of every row that
still has masks (Fast-dLLM's fix for its infinite loop, NVlabs/Fast-dLLM#42/#45). So every step
commits between 1 and the row's mask count, and a block finishes within ``block_length`` steps.
The built-in rules apply the same floor themselves, so they can also be used without the glue.
"""

from __future__ import annotations

from functools import cached_property
from typing import Callable, Optional

import attrs
import torch

from ..core.validators import number_in  # noqa: F401 - re-exported for policy modules
from ..core.policy import RunInfo, UnmaskPolicy
from ..core.types import Commit, StepState
from .scores import choose_tokens, even_schedule, masked_scores, negative_entropy, probability_of, select_top_k, top2_margin

# --- what scores and rules look at -------------------------------------------------------------


class BlockView:
    """One step of the current block, as scores and rules see it.

    ``state`` (:class:`~dynamic_dllm.core.types.StepState`), ``logits`` ``[B, Lb, V]``, ``masked``
    ``[B, Lb]`` (current-block masks), ``tokens`` ``[B, Lb]`` (the step's token choice, drawn once,
    never the mask token),
    and lazily: ``probs`` (float64 softmax), ``confidence`` (probability of ``tokens``, in the
    logits' dtype as LLaDA), ``entropy`` (``-Σ p log p``, float64), ``second_probability``.
    """

    def __init__(self, state: StepState, logits: torch.Tensor):
        self.state = state
        self.logits = logits
        self.masked = state.block_masked
        tokens = choose_tokens(logits, state.config.temperature, state.generator, state.mask_id)
        self.tokens = tokens

    @cached_property
    def probs(self) -> torch.Tensor:
        return torch.softmax(self.logits.to(torch.float64), -1)

    @cached_property
    def confidence(self) -> torch.Tensor:
        return probability_of(self.logits, self.tokens)

    @cached_property
    def entropy(self) -> torch.Tensor:
        return -torch.special.xlogy(self.probs, self.probs).sum(-1)

    @cached_property
    def second_probability(self) -> torch.Tensor:
        if self.probs.shape[-1] < 2:
            return torch.zeros(self.probs.shape[:-1], dtype=self.probs.dtype, device=self.probs.device)
        return self.probs.topk(2, dim=-1).values[..., 1]


# --- scores ------------------------------------------------------------------------------------


def probability(view: BlockView) -> torch.Tensor:
    """``softmax(z)[token]``: the chosen token's probability (LLaDA low-confidence, Fast-dLLM)."""
    return view.confidence


def probability_float64(view: BlockView) -> torch.Tensor:
    """``softmax(z)[token]`` computed in float64, as Fast-dLLM's threshold/factor rules and the
    released APD code do: a float32 softmax rounds a confident token's probability to exactly 1.0
    (Σ of the other probabilities < 6e-8), so a threshold of 1.0 would be met; in float64 that takes
    Σ < 1.1e-16 (a logit gap of about 37 + ln V)."""
    return view.probs.gather(-1, view.tokens.unsqueeze(-1)).squeeze(-1)


def margin(view: BlockView) -> torch.Tensor:
    """``p(1) - p(2)``: gap between the two most likely tokens (Dream ``topk_margin``)."""
    return top2_margin(view.probs)


def neg_entropy(view: BlockView) -> torch.Tensor:
    """``Σ_v p_v log(p_v + 1e-10)``: negative entropy (Dream ``entropy``; higher = more certain)."""
    return negative_entropy(view.probs)


#: Scores by name (for specs and docs).
SCORES: dict[str, Callable[[BlockView], torch.Tensor]] = {
    "probability": probability, "probability-float64": probability_float64, "margin": margin, "neg-entropy": neg_entropy,
}


# --- rule helpers ------------------------------------------------------------------------------


def keep_most_confident(chosen: torch.Tensor, scores: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """``chosen`` restricted to ``masked``, plus the most confident masked position of every row
    that has one (ties: lower index). ``scores`` must be ``-inf`` off ``masked``."""
    return (chosen & masked) | select_top_k(scores, masked.any(1).long())


def top_n(scores: torch.Tensor, masked: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """The ``n[b]`` most confident masked positions of row b (at least 1 while it has masks, at
    most its mask count)."""
    count = masked.sum(1)
    n = torch.minimum(n.clamp(min=1), count)
    return select_top_k(scores, n)


def _start(rule, run: RunInfo) -> None:
    start = getattr(rule, "start", None)
    if callable(start):
        start(run)


# --- rules -------------------------------------------------------------------------------------


@attrs.define(eq=False)
class TopKSchedule:
    """LLaDA: per block, the masks are split evenly over ``steps_per_block`` steps (remainder to the
    first steps; :func:`~dynamic_dllm.policies.scores.even_schedule`); each step commits that many
    top-score masked positions. With the :func:`probability` score this is ``low-confidence``."""

    schedule: Optional[torch.Tensor] = attrs.field(default=None, init=False, repr=False)

    def start(self, run: RunInfo) -> None:
        self.schedule = None

    def select(self, scores: torch.Tensor, view: BlockView) -> torch.Tensor:
        state, masked = view.state, view.masked
        if state.step_in_block == 0 or self.schedule is None:
            self.schedule = even_schedule(masked.sum(1), state.steps_per_block)
        k = self.schedule[:, min(state.step_in_block, state.steps_per_block - 1)]
        return keep_most_confident(select_top_k(scores, torch.minimum(k, masked.sum(1))), scores, masked)


@attrs.define
class ThresholdRule:
    """Fast-dLLM threshold: commit every masked position with ``score ≥ threshold``; at least the
    most confident one. Any finite threshold (scores need not be probabilities)."""

    threshold: float = attrs.field(default=0.9, validator=number_in("threshold rule"))

    def select(self, scores: torch.Tensor, view: BlockView) -> torch.Tensor:
        return keep_most_confident(scores >= self.threshold, scores, view.masked)


@attrs.define
class FactorRule:
    """Fast-dLLM factor rule: with the masked scores sorted ``c(1) ≥ c(2) ≥ …``, commit the top n
    for the largest n with ``(n+1)·(1 − c(n)) < factor``; at least one. (Fast-dLLM's code keeps
    ``c(n) ≥ 1 − factor/(n+1)``, i.e. ``≤``; the strict ``<`` of the issue is used here — they
    differ only on exact equality.)"""

    factor: float = attrs.field(default=1.0, validator=number_in("factor rule", low=0.0, low_open=True))

    def select(self, scores: torch.Tensor, view: BlockView) -> torch.Tensor:
        masked = view.masked
        ordered = scores.sort(dim=-1, descending=True).values
        n = torch.arange(1, scores.shape[-1] + 1, device=scores.device)
        ok = ((n + 1) * (1 - ordered) < self.factor) & (n <= masked.sum(1, keepdim=True))
        largest = (ok.long() * n).amax(-1)
        return keep_most_confident(top_n(scores, masked, largest), scores, masked)


@attrs.define
class EntropyBoundRule:
    """EB-Sampler (arXiv 2505.24857): order the masked positions by score
    (descending, ties by position), and commit the longest prefix whose entropies
    ``H_i = −Σ_v p_v log p_v`` satisfy ``Σ_{prefix} H_i − max_{prefix} H_i ≤ γ`` (running max over
    the sorted positions of the row, not over the batch); at least one. ``γ = 0`` commits one token
    per step unless the extra tokens are certain (``H = 0``)."""

    gamma: float = attrs.field(default=0.001, validator=number_in("EB-Sampler entropy bound", low=0.0))

    def select(self, scores: torch.Tensor, view: BlockView) -> torch.Tensor:
        masked = view.masked
        order = scores.argsort(dim=-1, descending=True, stable=True)
        rank = torch.arange(scores.shape[-1], device=scores.device)
        inside = rank < masked.sum(1, keepdim=True)
        h = torch.where(inside, view.entropy.gather(-1, order), torch.zeros((), dtype=torch.float64, device=scores.device))
        excess = h.cumsum(-1) - h.cummax(-1).values
        prefix = ((excess <= self.gamma) & inside).long().cumprod(-1).sum(-1)
        return keep_most_confident(top_n(scores, masked, prefix), scores, masked)


APD_MODES = ("per-token", "global")


@attrs.define(eq=False)
class AdaptiveThresholdRule:
    """Dynamic-dLLM Adaptive Parallel Decoding (paper Eq. 8–11; released code ``update_pd_threshold``).

    Commit every masked position with ``score ≥ τ`` (score = probability of the chosen token),
    at least the most confident. Thresholds start at ``tau0``; at every step after the first step
    of a block, before committing, with ``p_i`` the current and ``p'_i`` the previous step's
    probability vector of position i:

    * ``c_i = 1 − p_i(2nd)`` (concentration, Eq. 8), ``H_i = 1 − cos(p_i, p'_i)`` (instability, Eq. 10)
    * ``per-token`` (paper): ``τ_i ← τ_i − α·c_i + β·H_i`` for every masked i of the block (Eq. 11).
    * ``global`` (released code's mode 1): one τ per batch row,
      ``τ ← τ − α·mean_masked(c) + β·mean_masked(H)`` over the block's masked positions.

    Block boundaries: the engine shows a policy only the current block's logits, so a position's
    history starts when its block does. Per-token: ``τ_i`` is kept per batch row and absolute
    canvas position (``tau`` is ``[B, L]``); it stays ``tau0`` until its block's second step, is
    updated only while the position is masked and its block is current, and freezes when committed
    — so each τ_i depends only on position i's own distributions. Global: τ carries over from block
    to block (the released code never resets it either). The first step of each block makes no
    update here, because the new block's positions have no previous distribution; this differs from
    the released code, which keeps the whole response's previous distributions and so also
    updates on a block's first step.

    Clamping: none, as in the paper and the released code. τ may drop below 0 (every masked
    position is then committed) or rise above 1 (only the forced most-confident one is).
    With ``α = β = 0`` this is :class:`ThresholdRule` at ``tau0``; with ``β = 0`` no τ increases.
    """

    tau0: float = attrs.field(default=0.9, validator=number_in("APD initial threshold", 0.0, 1.0))
    alpha: float = attrs.field(default=0.001, validator=number_in("APD concentration weight", low=0.0))
    beta: float = attrs.field(default=0.0008, validator=number_in("APD instability weight", low=0.0))
    mode: str = attrs.field(default="per-token")
    tau: Optional[torch.Tensor] = attrs.field(default=None, init=False, repr=False)
    previous: Optional[torch.Tensor] = attrs.field(default=None, init=False, repr=False)
    previous_block: Optional[int] = attrs.field(default=None, init=False, repr=False)

    @mode.validator
    def _check_mode(self, attribute, value):
        if value not in APD_MODES:
            raise ValueError(f"mode must be one of {', '.join(APD_MODES)}, got {value!r} (APD threshold mode)")

    def start(self, run: RunInfo) -> None:
        shape = (run.batch_size, run.length) if self.mode == "per-token" else (run.batch_size, 1)
        self.tau = torch.full(shape, float(self.tau0), dtype=torch.float64, device=run.device)
        self.previous = None
        self.previous_block = None

    def thresholds(self, length: Optional[int] = None) -> torch.Tensor:
        """Current thresholds ``[B, L]`` (global mode: the row's scalar broadcast)."""
        if self.mode == "per-token":
            return self.tau
        return self.tau.expand(-1, length) if length is not None else self.tau

    def select(self, scores: torch.Tensor, view: BlockView) -> torch.Tensor:
        state, masked = view.state, view.masked
        bs, be = state.block_start, state.block_end
        probs = view.probs
        if self.previous is not None and self.previous_block == state.block:
            c = 1 - view.second_probability
            h = 1 - torch.nn.functional.cosine_similarity(probs, self.previous, dim=-1)
            if self.mode == "per-token":
                tau = self.tau[:, bs:be]
                self.tau[:, bs:be] = torch.where(masked, tau - self.alpha * c + self.beta * h, tau)
            else:
                count = masked.sum(1, keepdim=True)
                mean_c = torch.where(masked, c, 0).sum(1, keepdim=True) / count.clamp(min=1)
                mean_h = torch.where(masked, h, 0).sum(1, keepdim=True) / count.clamp(min=1)
                self.tau = torch.where(count > 0, self.tau - self.alpha * mean_c + self.beta * mean_h, self.tau)
        self.previous, self.previous_block = probs, state.block
        tau = self.tau[:, bs:be] if self.mode == "per-token" else self.tau
        return keep_most_confident(scores >= tau, scores, masked)


# --- the glue ----------------------------------------------------------------------------------


def commit_with(score: Callable[[BlockView], torch.Tensor], rule, state: StepState, logits: torch.Tensor) -> Commit:
    """One step of a score + rule policy: tokens, masked scores, the rule's choice restricted to
    the block's masks, plus the most confident masked position of each row that has one."""
    view = BlockView(state, logits)
    raw = score(view)
    if not isinstance(raw, torch.Tensor) or tuple(raw.shape) != tuple(view.masked.shape):
        raise ValueError(f"score {getattr(score, '__name__', score)!r} returned shape {tuple(getattr(raw, 'shape', ()))},"
                         f" expected [batch, block_length] = {tuple(view.masked.shape)}")
    scores = masked_scores(raw, view.masked)
    chosen = rule.select(scores, view)
    return Commit(positions=keep_most_confident(chosen.bool(), scores, view.masked), tokens=view.tokens)


class RulePolicy(UnmaskPolicy):
    """Base of policies made of a score and a rule: subclasses define :meth:`make_rule` (a fresh
    rule per generation) and may override :meth:`score` (default :func:`probability`)."""

    def score(self, view: BlockView) -> torch.Tensor:
        return probability(view)

    def make_rule(self):
        raise NotImplementedError

    def start(self, run: RunInfo) -> None:
        self.run = run
        self.active_rule = self.make_rule()
        _start(self.active_rule, run)

    def commit(self, state: StepState, logits: torch.Tensor) -> Commit:
        return commit_with(self.score, self.active_rule, state, logits)


def _check_score(instance, attribute, value):
    if not callable(value):
        raise ValueError(f"score must be a callable view -> [B, Lb] scores, got {value!r} (composed policy)")


def _check_rule(instance, attribute, value):
    if not callable(getattr(value, "select", None)):
        raise ValueError(f"rule must have a select(scores, view) method, got {value!r} (composed policy)")


@attrs.define
class ComposedPolicy(RulePolicy):
    """An unmask policy from any ``score`` (``view -> [B, Lb]``) and ``rule`` (``select(scores,
    view) -> bool [B, Lb]``, optional ``start(run)``); the rule's ``start`` is called at the start
    of every generation, so one instance can be reused."""

    score: Callable[[BlockView], torch.Tensor] = attrs.field(default=probability, validator=_check_score)
    rule: object = attrs.field(factory=TopKSchedule, validator=_check_rule)

    def make_rule(self):
        return self.rule
