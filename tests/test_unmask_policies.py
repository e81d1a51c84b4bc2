"""Unmask policies on the tiny random models: equivalences with LLaDA's low-confidence sampler,
APD = threshold without adaptation, the cache × unmask matrix, and the custom-policy doc example."""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import pytest
import torch

import dynamic_dllm as dd
from dynamic_dllm.policies.compose import ComposedPolicy, RulePolicy

ROOT = Path(__file__).resolve().parents[1]


def prompts(n=2, length=6, seed=0):
    return torch.randint(0, 200, (n, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_threshold_one_is_low_confidence_one_token_per_step(any_model, temperature):
    ids = prompts()
    cfg = dict(gen_length=16, block_length=8, steps=16, temperature=temperature, seed=3)
    fixed = dd.generate(any_model, ids, unmask="low-confidence", **cfg)
    thr = dd.generate(any_model, ids, unmask="threshold:threshold=1.0", **cfg)
    assert thr.stats.tokens_per_step == (ids.shape[0],) * 16, "threshold 1.0 must commit one token per row and step"
    assert torch.equal(thr.tokens, fixed.tokens)
    assert thr.stats.nfe == fixed.stats.nfe == 16


@pytest.mark.parametrize("model, temperature", [("dream", 0.0), ("dream", 0.5), ("llada", 0.0)])
def test_composed_defaults_are_low_confidence(request, model, temperature):
    lm = request.getfixturevalue(model)
    ids = prompts(seed=1)
    cfg = dict(gen_length=24, block_length=8, steps=9, temperature=temperature, seed=4)
    fixed = dd.generate(lm, ids, unmask="low-confidence", **cfg)
    composed = dd.generate(lm, ids, unmask=ComposedPolicy(), **cfg)
    assert torch.equal(composed.tokens, fixed.tokens)
    assert composed.stats.tokens_per_step == fixed.stats.tokens_per_step


def test_apd_without_adaptation_is_threshold_at_tau0(dream):
    ids = prompts(seed=2)
    cfg = dict(gen_length=32, block_length=16, steps=32)
    fixed = dd.generate(dream, ids, unmask="threshold:threshold=0.9", **cfg)
    for mode in ("per-token", "global"):
        apd = dd.generate(dream, ids, unmask=f"apd:tau0=0.9,alpha=0,beta=0,mode={mode}", **cfg)
        assert torch.equal(apd.tokens, fixed.tokens)
        assert apd.stats.tokens_per_step == fixed.stats.tokens_per_step
    assert max(fixed.stats.tokens_per_step) > ids.shape[0], "no parallel step: the comparison would be trivial"


# --- every cache policy with every unmask policy ------------------------------------------


@attrs.define
class Contract(dd.UnmaskPolicy):
    """Wraps an unmask policy and checks the commit contract at every step."""

    inner: object
    at_least_one: bool
    steps: list = attrs.Factory(list)

    @property
    def logits_rows(self):
        return getattr(self.inner, "logits_rows", "block")

    @property
    def extra_steps_per_block(self):
        return getattr(self.inner, "extra_steps_per_block", 0)

    def start(self, run):
        self.steps = []
        self.inner.start(run)

    def commit(self, state, logits):
        commit = self.inner.commit(state, logits)
        chosen, masked = commit.positions.bool(), state.block_masked
        assert not bool((chosen & ~masked).any())
        assert bool((chosen.sum(1) <= masked.sum(1)).all())
        if self.at_least_one:
            assert bool((chosen.sum(1)[masked.any(1)] >= 1).all()), "a row with masks committed nothing"
        self.steps.append((state.block, state.step_in_block))
        return commit


def test_every_cache_policy_with_every_unmask_policy(any_model):
    """Whatever the registry holds at test time: each pair finishes every block in time, leaves no
    mask, and (for the score + rule policies) commits at least one token per row and step.
    ``dcu-released`` decodes one sequence of a LLaDA-layout model, as released: it runs on the
    first prompt alone and refuses a Dream model in one line; ``block-kv`` (exact only for
    block-causal models) refuses both bidirectional layouts in one line."""
    registry = dd.get_registry()
    caches, unmasks = sorted(registry.cache_policies()), sorted(registry.unmask_policies())
    assert {"threshold", "factor", "apd", "eb-sampler"} <= set(unmasks)
    ids = prompts(n=2, length=5, seed=5)
    config = dd.GenerationConfig(gen_length=8, block_length=4, steps=4)
    failures = []
    for cache in caches:
        for unmask in unmasks:
            inner = registry.make_unmask_policy(unmask)
            spy = Contract(inner=inner, at_least_one=isinstance(inner, RulePolicy) or unmask == "low-confidence")
            run_ids = ids[:1] if cache == "dcu-released" else ids
            if cache == "dcu-released" and any_model.model.logit_shift:
                with pytest.raises(ValueError, match="Dream layout"):
                    dd.generate(any_model, run_ids, cache=cache, unmask=spy, config=config)
                continue
            if cache == "block-kv":
                with pytest.raises(ValueError, match="block-causal"):
                    dd.generate(any_model, run_ids, cache=cache, unmask=spy, config=config)
                continue
            try:
                out = dd.generate(any_model, run_ids, cache=cache, unmask=spy, config=config)
                assert not bool((out.tokens == any_model.model.mask_id).any()), "masks left"
                assert sum(out.stats.tokens_per_step) == run_ids.shape[0] * config.gen_length
                assert out.stats.nfe == len(spy.steps) <= config.num_blocks * (config.block_length + spy.extra_steps_per_block)
            except Exception as exc:  # collect all failing pairs, then report them together
                failures.append(f"{cache} × {unmask}: {type(exc).__name__}: {exc}")
    assert not failures, "\n".join(failures)


# --- the documented custom policy ---------------------------------------------------------


def test_custom_policy_doc_example_runs(llada, monkeypatch, capsys):
    text = (ROOT / "docs" / "custom_unmask_policy.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1
    monkeypatch.setattr(dd, "load_model", lambda *a, **k: llada)
    before = set(dd.get_registry().unmask_policies())
    namespace: dict = {}
    exec(compile(blocks[0], "docs/custom_unmask_policy.md", "exec"), namespace)
    out = namespace["out"]
    assert out.tokens.shape == (1, 64) and not bool((out.tokens == llada.model.mask_id).any())
    assert "NFE" in capsys.readouterr().out
    assert set(dd.get_registry().unmask_policies()) == before  # unregistered again
    policy = namespace["certain_margin_policy"](threshold=0.3)
    assert isinstance(policy, ComposedPolicy) and policy.rule.threshold == 0.3
