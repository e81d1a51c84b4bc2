"""Unmask rules on synthetic logits (no model): progress invariants for every rule and score,
reference implementations of the threshold / factor / entropy-bound rules, and APD's thresholds."""

from __future__ import annotations

import math

import attrs
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import dynamic_dllm as dd
from dynamic_dllm.policies.apd import AdaptiveParallelDecoding
from dynamic_dllm.policies.compose import (
    APD_MODES, SCORES, AdaptiveThresholdRule, BlockView, ComposedPolicy, EntropyBoundRule, FactorRule, ThresholdRule,
    TopKSchedule)
from dynamic_dllm.policies.eb_sampler import EntropyBoundedSampler
from dynamic_dllm.policies.factor import FactorDecoding
from dynamic_dllm.policies.low_confidence import LowConfidence
from dynamic_dllm.policies.fast_dllm_v2_sampler import FastDllmV2Sampler
from dynamic_dllm.policies.llada21_sampler import LLaDA21Sampler
from dynamic_dllm.policies.sdar_sampler import SdarSampler
from dynamic_dllm.policies.threshold import ThresholdDecoding

P = 2  # prompt length of the synthetic canvas


KINDS = ("random", "peaked", "equal", "onehot", "onehot-mask", "mixed")


def synthetic_logits(kind: str, B: int, Lb: int, V: int, mask_id: int, g: torch.Generator) -> torch.Tensor:
    """``random`` N(0,1), ``peaked`` N(0, 8²), ``equal`` all-equal, ``onehot`` exactly one-hot
    probabilities, ``onehot-mask`` one-hot on the mask token (when it is in the vocabulary), ``mixed``
    a random kind per position."""
    if kind == "mixed":
        parts = [synthetic_logits(k, B, Lb, V, mask_id, g) for k in KINDS[:-1]]
        pick = torch.randint(0, len(parts), (B, Lb, 1), generator=g)
        return torch.stack(parts).gather(0, pick.expand(B, Lb, V).unsqueeze(0)).squeeze(0)
    if kind == "random":
        return torch.randn(B, Lb, V, generator=g)
    if kind == "peaked":
        return 8 * torch.randn(B, Lb, V, generator=g)
    if kind == "equal":
        return torch.zeros(B, Lb, V)
    hot = torch.randint(0, V, (B, Lb, 1), generator=g)
    if kind == "onehot-mask" and mask_id < V:
        hot = torch.full((B, Lb, 1), mask_id)
    return torch.full((B, Lb, V), -1e4).scatter(-1, hot, 0.0)


@attrs.define
class Drive:
    """Runs a policy over a synthetic canvas block by block, as the engine does, recording every step."""

    B: int
    blocks: int
    Lb: int
    steps_per_block: int
    V: int
    mask_id: int
    seed: int = 0
    temperature: float = 0.0
    prefilled: float = 0.0  # fraction of generation positions already filled (rows may start done)

    def config(self):
        return dd.GenerationConfig(gen_length=self.blocks * self.Lb, block_length=self.Lb,
                                   steps=self.blocks * self.steps_per_block, temperature=self.temperature, seed=self.seed)

    def run(self, policy, kind: str, on_step=None, frames=None):
        """``frames``: optional iterator of logits used instead of synthetic ones (stops the run when exhausted)."""
        config = self.config()
        G = config.gen_length
        L = P + G
        data = torch.Generator().manual_seed(self.seed)
        sampler = torch.Generator().manual_seed(self.seed + 1)
        tokens = self.mask_id + 1 if self.mask_id + 1 < self.V else 0
        x = torch.full((self.B, L), tokens)
        x[:, P:] = self.mask_id
        if self.prefilled:
            keep = torch.rand(self.B, G, generator=data) < self.prefilled
            x[:, P:] = torch.where(keep, tokens, x[:, P:])
        policy.start(dd.RunInfo(config=config, batch_size=self.B, prompt_length=P, length=L, n_layers=1,
                                           d_model=8, mask_id=self.mask_id, eos_id=0, logit_shift=0,
                                           device=torch.device("cpu"), valid=torch.ones(self.B, L, dtype=torch.bool)))
        steps, step = [], 0
        for block in range(self.blocks):
            bs, be = P + block * self.Lb, P + (block + 1) * self.Lb
            step_in_block = 0
            while bool((x[:, bs:be] == self.mask_id).any()):
                assert step_in_block < max(self.steps_per_block, self.Lb), f"block {block} not finished in time"
                state = dd.StepState(
                    x=x.clone(), masked=x == self.mask_id, valid=torch.ones(self.B, L, dtype=torch.bool),
                    positions=torch.arange(L).expand(self.B, L), last_committed=torch.zeros(self.B, L, dtype=torch.bool),
                    prompt_length=P, block=block, block_start=bs, block_end=be, step=step, step_in_block=step_in_block,
                    config=config, n_layers=1, mask_id=self.mask_id, eos_id=0, logit_shift=0, generator=sampler)
                logits = synthetic_logits(kind, self.B, self.Lb, self.V, self.mask_id, data)
                if frames is not None:
                    logits = next(frames, None)
                    if logits is None:
                        return steps
                commit = policy.commit(state, logits)
                chosen = commit.positions.bool()
                masked = state.block_masked
                n_masked, n_chosen = masked.sum(1), chosen.sum(1)
                assert not bool((chosen & ~masked).any()), "committed a position that is not a current-block mask"
                assert bool((n_chosen[n_masked > 0] >= 1).all()), "a row with masks committed nothing"
                assert bool((n_chosen <= n_masked).all())
                written = commit.tokens[chosen]
                assert bool(((written >= 0) & (written < self.V) & (written != self.mask_id)).all()), "bad token"
                steps.append(dict(block=block, step_in_block=step_in_block, logits=logits, chosen=chosen.clone(),
                                  masked=masked.clone(), tokens=commit.tokens.clone()))
                if on_step is not None:
                    on_step(policy, state, logits, commit)
                x[:, bs:be] = torch.where(chosen, commit.tokens, x[:, bs:be])
                step += 1
                step_in_block += 1
        assert not bool((x == self.mask_id).any())
        return steps


unit = st.floats(0, 1, allow_nan=False)
rules = st.one_of(
    st.builds(TopKSchedule),
    st.builds(ThresholdRule, threshold=st.floats(-3, 2)),
    st.builds(FactorRule, factor=st.floats(1e-3, 40)),
    st.builds(EntropyBoundRule, gamma=st.floats(0, 10)),
    st.builds(AdaptiveThresholdRule, tau0=unit, alpha=st.floats(0, 2), beta=st.floats(0, 2), mode=st.sampled_from(APD_MODES)),
)
policies = st.one_of(
    st.builds(ComposedPolicy, score=st.sampled_from(list(SCORES.values())), rule=rules),
    st.builds(ThresholdDecoding, threshold=unit),
    st.builds(FactorDecoding, factor=st.floats(1e-3, 40)),
    st.builds(EntropyBoundedSampler, gamma=st.floats(0, 10)),
    st.builds(AdaptiveParallelDecoding, tau0=unit, alpha=st.floats(0, 1), beta=st.floats(0, 1), mode=st.sampled_from(APD_MODES)),
    st.builds(LowConfidence),
    st.builds(SdarSampler, threshold=unit),
    st.builds(FastDllmV2Sampler, threshold=unit, sub_block=st.sampled_from([None, 1])),
)
drives = st.builds(
    Drive, B=st.integers(1, 3), blocks=st.integers(1, 2), Lb=st.sampled_from([1, 3, 8]), steps_per_block=st.integers(1, 8),
    V=st.sampled_from([2, 5, 17]), mask_id=st.sampled_from([0, 1, 17]), seed=st.integers(0, 2**16),
    temperature=st.sampled_from([0.0, 0.9]), prefilled=st.sampled_from([0.0, 0.0, 0.5]))


@settings(max_examples=200, deadline=None)
@given(policy=policies, drive=drives, kind=st.sampled_from(KINDS))
def test_every_rule_progresses_and_commits_only_block_masks(policy, drive, kind):
    drive = attrs.evolve(drive, steps_per_block=min(drive.steps_per_block, drive.Lb), mask_id=min(drive.mask_id, drive.V))
    if isinstance(policy, LowConfidence):
        drive = attrs.evolve(drive, mask_id=drive.V)  # LLaDA's sampler may pick the mask token itself
    steps = drive.run(policy, kind)  # asserts the per-step invariants and the block_length bound
    uses_schedule = isinstance(policy, LowConfidence) or isinstance(getattr(policy, "rule", None), TopKSchedule)
    if uses_schedule and not drive.prefilled:
        per_block = {}
        for s in steps:
            per_block[s["block"]] = per_block.get(s["block"], 0) + 1
        assert all(n == drive.steps_per_block for n in per_block.values())


# --- the rules against straightforward per-row references ---------------------------------


class View:
    """A minimal stand-in for BlockView: what the stateless rules read."""

    def __init__(self, masked, entropy=None):
        self.masked = masked
        self.entropy = entropy


def as_scores(conf, masked):
    return torch.where(masked, conf.double(), torch.tensor(float("-inf"), dtype=torch.float64))


def ranked(conf_row, masked_row):
    """Masked positions of one row by descending score, ties by position."""
    return sorted((i for i in range(len(conf_row)) if masked_row[i]), key=lambda i: (-conf_row[i], i))


confidences = st.integers(1, 10).flatmap(lambda n: st.tuples(
    st.lists(st.floats(0, 1), min_size=n, max_size=n), st.lists(st.booleans(), min_size=n, max_size=n)))


@settings(max_examples=200, deadline=None)
@given(data=confidences, threshold=st.floats(0, 1), factor=st.floats(1e-3, 20))
def test_threshold_and_factor_match_references(data, threshold, factor):
    conf, masked = data
    masked[0] = True
    c = torch.tensor([conf], dtype=torch.float64)
    m = torch.tensor([masked])
    s = as_scores(c, m)
    order = ranked(conf, masked)

    got = ThresholdRule(threshold).select(s, View(m))[0].tolist()
    want = {i for i in order if conf[i] >= threshold} | {order[0]}
    assert {i for i, v in enumerate(got) if v} == want

    got = FactorRule(factor).select(s, View(m))[0].tolist()
    qualifying = [n for n in range(1, len(order) + 1) if (n + 1) * (1 - conf[order[n - 1]]) < factor]
    n_star = max(qualifying, default=1)
    assert {i for i, v in enumerate(got) if v} == set(order[:n_star])


@settings(max_examples=200, deadline=None)
@given(data=confidences, gamma=st.sampled_from([0.0, 1e-3, 0.1, 1.0, 3.0]), seed=st.integers(0, 1000))
def test_entropy_bound_matches_reference(data, gamma, seed):
    conf, masked = data
    masked[0] = True
    n = len(conf)
    g = torch.Generator().manual_seed(seed)
    entropy = torch.rand(2, n, generator=g, dtype=torch.float64) * 2
    entropy[:, ::3] = 0.0  # certain tokens
    c = torch.tensor([conf, conf[::-1]], dtype=torch.float64)
    m = torch.tensor([masked, masked[::-1]])
    got = EntropyBoundRule(gamma).select(as_scores(c, m), View(m, entropy))
    for row in range(2):  # running max per row, not across the batch
        order = ranked(c[row].tolist(), m[row].tolist())
        k = 0
        for j in range(1, len(order) + 1):
            hs = [float(entropy[row, i]) for i in order[:j]]
            if sum(hs) - max(hs) <= gamma:
                k = j
            else:
                break
        assert {i for i, v in enumerate(got[row].tolist()) if v} == set(order[:max(k, 1)])


def test_entropy_bound_gamma_zero_commits_one_uncertain_token():
    m = torch.ones(1, 4, dtype=torch.bool)
    c = torch.tensor([[0.9, 0.8, 0.7, 0.6]], dtype=torch.float64)
    h = torch.tensor([[0.5, 0.4, 0.0, 0.3]], dtype=torch.float64)
    assert EntropyBoundRule(0.0).select(as_scores(c, m), View(m, h)).sum() == 1
    assert EntropyBoundRule(0.4).select(as_scores(c, m), View(m, h))[0].tolist() == [True, True, True, False]


def test_factor_example():
    m = torch.ones(1, 4, dtype=torch.bool)
    c = torch.tensor([[0.5, 0.99, 0.8, 0.9]], dtype=torch.float64)  # 2·0.01, 3·0.1, 4·0.2 < 1; 5·0.5 ≥ 1
    assert FactorRule(1.0).select(as_scores(c, m), View(m))[0].tolist() == [False, True, True, True]
    assert FactorRule(0.01).select(as_scores(c, m), View(m))[0].tolist() == [False, True, False, False]
    m2 = torch.ones(1, 2, dtype=torch.bool)
    c2 = torch.tensor([[0.9, 0.5]], dtype=torch.float64)  # n = 2: (2+1)·(1 − 0.5) = 1.5 exactly, not < 1.5
    assert FactorRule(1.5).select(as_scores(c2, m2), View(m2))[0].tolist() == [True, False]
    assert FactorRule(1.5000001).select(as_scores(c2, m2), View(m2))[0].tolist() == [True, True]


# --- APD thresholds -----------------------------------------------------------------------


def apd_trace(policy, drive, kind):
    trace = []
    steps = drive.run(policy, kind, on_step=lambda pol, state, logits, commit: trace.append(pol.thresholds().clone()))
    return steps, trace


apd_drives = st.builds(Drive, B=st.integers(1, 3), blocks=st.integers(1, 3), Lb=st.sampled_from([3, 8]),
                       steps_per_block=st.just(1), V=st.sampled_from([5, 17]), mask_id=st.just(17),
                       seed=st.integers(0, 2**16), temperature=st.sampled_from([0.0, 0.9]))


@settings(max_examples=40, deadline=None)
@given(drive=apd_drives, kind=st.sampled_from(KINDS), tau0=unit, alpha=st.floats(0, 0.5),
       mode=st.sampled_from(APD_MODES))
def test_apd_without_beta_never_raises_thresholds(drive, kind, tau0, alpha, mode):
    _, trace = apd_trace(AdaptiveParallelDecoding(tau0=tau0, alpha=alpha, beta=0.0, mode=mode), drive, kind)
    for before, after in zip(trace, trace[1:]):
        assert bool((after <= before).all())


@settings(max_examples=40, deadline=None)
@given(drive=apd_drives, kind=st.sampled_from(KINDS), tau0=unit, mode=st.sampled_from(APD_MODES))
def test_apd_without_alpha_beta_equals_threshold(drive, kind, tau0, mode):
    apd = drive.run(AdaptiveParallelDecoding(tau0=tau0, alpha=0.0, beta=0.0, mode=mode), kind)
    fixed = drive.run(ThresholdDecoding(threshold=tau0), kind)
    assert len(apd) == len(fixed)
    for a, f in zip(apd, fixed):
        assert torch.equal(a["chosen"], f["chosen"]) and torch.equal(a["tokens"], f["tokens"])


@settings(max_examples=30, deadline=None)
@given(drive=apd_drives, kind=st.sampled_from(KINDS), tau0=unit, alpha=st.floats(0, 0.3), beta=st.floats(0, 0.3))
def test_apd_per_token_thresholds_follow_each_tokens_own_history(drive, kind, tau0, alpha, beta):
    """τ_i from a per-token reference that reads only position i's distributions and mask state:
    τ_i = tau0 + Σ over the later steps of its block while masked of (−α·c_i + β·H_i)."""
    steps, trace = apd_trace(AdaptiveParallelDecoding(tau0=tau0, alpha=alpha, beta=beta), drive, kind)
    L = P + drive.blocks * drive.Lb
    want = torch.full((drive.B, L), tau0, dtype=torch.float64)
    previous = None
    for s, got in zip(steps, trace):
        probs = torch.softmax(s["logits"].double(), -1)
        if previous is not None and previous[0] == s["block"]:
            bs = P + s["block"] * drive.Lb
            for b in range(drive.B):
                for i in range(drive.Lb):
                    if s["masked"][b, i]:
                        p, q = probs[b, i], previous[1][b, i]
                        c = 1 - float(p.sort(descending=True).values[1])
                        h = 1 - float(p @ q / (p.norm() * q.norm()))
                        want[b, bs + i] += -alpha * c + beta * h
        previous = (s["block"], probs)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-9)


def test_apd_threshold_of_a_token_ignores_other_tokens():
    """Changing one still-masked position's logits at step 2 changes only that position's threshold."""
    B, Lb, V = 2, 4, 6
    g = torch.Generator().manual_seed(0)
    first = 3 * torch.randn(B, Lb, V, generator=g)
    first[:, 2] = 0.0  # least confident: not committed at step 1 (tau0 = 1 commits only the most confident)
    second = torch.randn(B, Lb, V, generator=g)
    other = second.clone()
    other[1, 2] = torch.tensor([9.0, 0, 0, 0, 0, 0])
    taus = []
    for step2 in (second, other):
        trace = []
        drive = Drive(B=B, blocks=1, Lb=Lb, steps_per_block=1, V=V, mask_id=V)
        steps = drive.run(AdaptiveParallelDecoding(tau0=1.0, alpha=0.3, beta=0.4), "random", frames=iter([first, step2]),
                          on_step=lambda pol, *_: trace.append(pol.thresholds().clone()))
        assert [int(s["chosen"].sum()) for s in steps[:1]] == [B] and bool(steps[1]["masked"][:, 2].all())
        taus.append(trace[1][:, P:])
    changed = taus[0] != taus[1]
    assert changed.tolist() == [[False] * Lb, [i == 2 for i in range(Lb)]]


def test_apd_block_boundaries():
    """Per-token: positions of a new block enter at tau0 and earlier blocks' τ are frozen once
    committed. Global: τ carries over into the next block, and a block's first step does not update it."""
    drive = Drive(B=2, blocks=3, Lb=4, steps_per_block=1, V=7, mask_id=7, seed=3)
    steps, trace = apd_trace(AdaptiveParallelDecoding(tau0=0.95, alpha=0.05, beta=0.02), drive, "random")
    for s, tau, nxt in zip(steps, trace, trace[1:] + [trace[-1]]):
        bs = P + s["block"] * drive.Lb
        assert bool((tau[:, bs + drive.Lb:] == 0.95).all()), "a future block's threshold moved"
        if s["step_in_block"] == 0:
            assert bool((tau[:, bs:bs + drive.Lb] == 0.95).all()), "a block's first step updated τ"
        assert bool((nxt[:, :bs] == tau[:, :bs]).all()), "a finished block's threshold moved"
    assert bool((trace[-1][:, P:] < 0.95).any()), "no threshold was ever updated"

    steps, trace = apd_trace(AdaptiveParallelDecoding(tau0=0.95, alpha=0.05, beta=0.02, mode="global"), drive, "random")
    assert all(bool((t == t[:, :1]).all()) for t in trace), "global mode must use one τ per row"
    for k in range(1, len(steps)):
        if steps[k]["step_in_block"] == 0:
            assert torch.equal(trace[k], trace[k - 1]), "global τ must carry over unchanged into a new block"
    assert steps[-1]["block"] == 2 and not bool((trace[-1] == 0.95).all()), "global τ never moved"


def test_apd_thresholds_are_not_clamped():
    """Large α drives τ below 0 (then every masked token is committed); large β lifts τ above 1
    (then only the forced most confident token is)."""
    drive = Drive(B=1, blocks=1, Lb=8, steps_per_block=1, V=4, mask_id=4, seed=5)
    steps, trace = apd_trace(AdaptiveParallelDecoding(tau0=1.0, alpha=3.0, beta=0.0), drive, "random")
    assert steps[0]["chosen"].sum() == 1 and len(steps) == 2
    assert bool((trace[1][0, P:][steps[1]["masked"][0]] < 0).all())  # c ≥ 1/2 with 4 tokens: τ ≤ 1 − 3/2
    assert steps[1]["chosen"].sum() == steps[1]["masked"].sum() == 7

    steps, trace = apd_trace(AdaptiveParallelDecoding(tau0=0.5, alpha=0.0, beta=1e4), drive, "random")
    assert all(int(s["chosen"].sum()) == 1 for s in steps[1:])
    assert float(trace[-1].max()) > 1.0


# --- validation --------------------------------------------------------------------------


@pytest.mark.parametrize("spec, words", [
    ("threshold:threshold=1.5", ["threshold", "1.5", "Fast-dLLM threshold"]),
    ("threshold:threshold=true", ["threshold", "True"]),
    ("factor:factor=0", ["factor", "0", "factor rule"]),
    ("factor:factor=-2", ["factor", "-2"]),
    ("eb-sampler:gamma=-0.1", ["gamma", "-0.1", "EB-Sampler"]),
    ("apd:tau0=1.2", ["tau0", "1.2", "APD"]),
    ("apd:alpha=-1", ["alpha", "-1", "APD"]),
    ("apd:beta=nan", ["beta", "nan", "APD"]),
    ("apd:mode=local", ["mode", "'local'", "per-token", "global"]),
    ("apd:gamma=1", ["no parameter", "gamma"]),
])
def test_bad_parameters_are_rejected_with_value_and_rule(spec, words):
    with pytest.raises(ValueError) as err:
        dd.get_registry().make_unmask_policy(spec)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_composed_policy_rejects_bad_pieces():
    with pytest.raises(ValueError, match="score"):
        ComposedPolicy(score=0.5)
    with pytest.raises(ValueError, match="select"):
        ComposedPolicy(rule=lambda s, v: s)
    with pytest.raises(ValueError, match="threshold"):
        ThresholdRule(threshold=math.inf)


def test_spec_strings_reach_fields():
    reg = dd.get_registry()
    assert reg.make_unmask_policy("threshold:threshold=0.7").threshold == 0.7
    assert reg.make_unmask_policy("factor:factor=2").factor == 2
    apd = reg.make_unmask_policy("apd:tau0=1,alpha=0.01,beta=0.15,mode=global")
    assert (apd.tau0, apd.alpha, apd.beta, apd.mode) == (1, 0.01, 0.15, "global")
    assert reg.make_unmask_policy("eb-sampler:gamma=0.1").gamma == 0.1
    assert isinstance(BlockView, type)


@pytest.mark.parametrize("temperature", [0.0, 0.9])
@pytest.mark.parametrize("policy", [ThresholdDecoding(), FactorDecoding(), AdaptiveParallelDecoding(),
                                    EntropyBoundedSampler(), ComposedPolicy()], ids=lambda p: type(p).__name__)
def test_a_model_predicting_the_mask_token_still_finishes(policy, temperature):
    """Logits one-hot on the mask token itself: the policies commit the best other token (LLaDA's
    sampler would write [MASK] back and make no progress)."""
    drive = Drive(B=2, blocks=2, Lb=4, steps_per_block=4, V=5, mask_id=3, temperature=temperature)
    steps = drive.run(policy, "onehot-mask")
    assert all(bool((s["tokens"] != 3).all()) for s in steps)


# --- samplers with structure: sub-blocks (Fast-dLLM v2) and token editing (LLaDA2.1) -------------


@given(drive=drives, kind=st.sampled_from(KINDS), threshold=unit)
def test_fast_dllm_v2_commits_inside_the_first_sub_block_with_masks(drive, kind, threshold):
    drive = attrs.evolve(drive, steps_per_block=min(drive.steps_per_block, drive.Lb), mask_id=min(drive.mask_id, drive.V))
    policy = FastDllmV2Sampler(threshold=threshold)
    width = min(8, drive.Lb)
    for s in drive.run(policy, kind):
        for b in range(drive.B):
            masked, chosen = s["masked"][b], s["chosen"][b]
            if not bool(masked.any()):
                continue
            sub = int(masked.nonzero()[0]) // width
            inside = (torch.arange(drive.Lb) // width) == sub
            assert not bool((chosen & ~inside).any()) and bool(chosen.any())


@given(B=st.integers(1, 3), Lb=st.sampled_from([2, 5, 8]), V=st.sampled_from([5, 17]), seed=st.integers(0, 2**16),
       threshold=unit, editing=unit, post=st.integers(0, 4), kind=st.sampled_from(KINDS[:-2]))
def test_llada21_edits_only_decoded_tokens_and_ends_its_block_in_time(B, Lb, V, seed, threshold, editing, post, kind):
    """Per step: masks committed only at masks (at least one per row that has some), edits only at
    decoded response positions (never masks, never the prompt's tail in the block), each edit
    changes its token; the block ends within Lb + max_post_steps + 1 steps."""
    mask_id, prompt_tail = V, 1  # the block's first position holds the prompt's last token
    policy = LLaDA21Sampler(threshold=threshold, editing_threshold=editing, max_post_steps=post)
    L = P + Lb - prompt_tail
    config = dd.GenerationConfig(gen_length=Lb - prompt_tail, block_length=Lb - prompt_tail)
    policy.start(dd.RunInfo(config=config, batch_size=B, prompt_length=P, length=L, n_layers=1, d_model=8,
                            mask_id=mask_id, eos_id=0, logit_shift=0, device=torch.device("cpu"),
                            valid=torch.ones(B, L, dtype=torch.bool), block_causal=True))
    data, sampler = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    x = torch.zeros(B, L, dtype=torch.long)
    x[:, P:] = mask_id
    bs, be = P - prompt_tail, L
    for step in range(Lb + post + 2):
        state = dd.StepState(x=x.clone(), masked=x == mask_id, valid=torch.ones(B, L, dtype=torch.bool),
                             positions=torch.arange(L).expand(B, L), last_committed=torch.zeros(B, L, dtype=torch.bool),
                             prompt_length=P, block=0, block_start=bs, block_end=be, step=step, step_in_block=step,
                             config=config, n_layers=1, mask_id=mask_id, eos_id=0, logit_shift=0, generator=sampler)
        commit = policy.commit(state, synthetic_logits(kind, B, Lb, V + 1, mask_id, data))
        masked, block = state.block_masked, x[:, bs:be]
        assert not bool((commit.positions & ~masked).any())
        assert bool((commit.positions.sum(1)[masked.any(1)] >= 1).all())
        assert not bool((commit.edits & (masked | (torch.arange(bs, be) < P))).any())
        assert bool((commit.tokens[commit.edits] != block[commit.edits]).all())
        x[:, bs:be] = torch.where(commit.positions | commit.edits, commit.tokens, block)
        if commit.end_block:
            assert not bool((x == mask_id).any()) and not commit.continue_block
            return
        assert commit.continue_block
    raise AssertionError(f"the block did not end within {Lb + post + 2} steps")
