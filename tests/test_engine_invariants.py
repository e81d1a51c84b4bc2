"""Engine invariants over random configs, prompts and batches (hypothesis)."""

from __future__ import annotations

import attrs
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dynamic_dllm as dd
from dynamic_dllm.policies.low_confidence import LowConfidence, RandomRemasking
from dynamic_dllm.policies.scores import even_schedule


@attrs.define
class Spy(dd.UnmaskPolicy):
    """Wraps an unmask policy and checks the engine contract at every step."""

    inner: object
    prompt: torch.Tensor
    steps: list = attrs.Factory(list)
    previous: object = None

    def start(self, run):
        self.inner.start(run)

    def commit(self, state, logits):
        P = state.prompt_length
        assert torch.equal(state.x[:, :P], self.prompt), "prompt changed"
        if self.previous is not None:
            kept = self.previous != state.mask_id
            assert torch.equal(state.x[kept], self.previous[kept]), "a committed token changed"
        assert logits.shape[1] == state.block_end - state.block_start
        # only current-block positions are ever committed: later blocks are all masks, earlier ones have none
        assert bool((state.x[:, state.block_end:] == state.mask_id).all()), "a position after the block was committed"
        assert not bool((state.x[:, P:state.block_start] == state.mask_id).any()), "an earlier block kept a mask"
        commit = self.inner.commit(state, logits)
        self.steps.append((state.block, state.step_in_block, state.block_masked.sum(1).clone(), commit.positions.sum(1)))
        after = state.x.clone()
        after[:, state.block_start:state.block_end] = torch.where(commit.positions, commit.tokens,
                                                                  after[:, state.block_start:state.block_end])
        self.previous = after
        return commit


configs = st.integers(1, 4).flatmap(lambda blocks: st.tuples(
    st.just(blocks), st.sampled_from([2, 4, 8]), st.integers(1, 8)))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cfg=configs, lengths=st.lists(st.integers(1, 9), min_size=1, max_size=3),
       remasking=st.sampled_from(["low-confidence", "random"]), temperature=st.sampled_from([0.0, 0.8]),
       seed=st.integers(0, 2**16))
def test_loop_invariants(llada, cfg, lengths, remasking, temperature, seed):
    blocks, block_length, steps_per_block = cfg
    steps_per_block = min(steps_per_block, block_length)
    config = dd.GenerationConfig(gen_length=blocks * block_length, block_length=block_length,
                                 steps=blocks * steps_per_block, temperature=temperature, seed=seed)
    g = torch.Generator().manual_seed(seed)
    P = max(lengths)
    ids = torch.randint(0, 256, (len(lengths), P), generator=g)
    mask = torch.arange(P) >= (P - torch.tensor(lengths))[:, None]
    ids = torch.where(mask, ids, llada.model.pad_id)
    inner = LowConfidence() if remasking == "low-confidence" else RandomRemasking()
    spy = Spy(inner=inner, prompt=ids)
    out = dd.generate(llada, ids, unmask=spy, attention_mask=mask, config=config)
    assert not bool((out.sequences == llada.model.mask_id).any()), "masks left"
    assert out.stats.nfe == config.steps == len(spy.steps)
    per_block = {}
    for block, step_in_block, masked_at_step, committed in spy.steps:
        per_block.setdefault(block, []).append((masked_at_step, committed))
    for block, rows in per_block.items():
        assert len(rows) == steps_per_block
        schedule = even_schedule(rows[0][0], steps_per_block)
        for i, (masked_at_step, committed) in enumerate(rows):
            assert torch.equal(committed, schedule[:, i]), "not the scheduled count"
            assert bool((committed >= 1).all()), "a step committed nothing"
    again = dd.generate(llada, ids, unmask=remasking, attention_mask=mask, config=config)
    assert torch.equal(again.tokens, out.tokens), "same seed, different output"


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lengths=st.lists(st.integers(1, 12), min_size=2, max_size=4), seed=st.integers(0, 2**16),
       unmask=st.sampled_from(["low-confidence", "entropy", "margin", "maskgit-plus"]))
def test_batch_equals_single_runs(any_model, lengths, seed, unmask):
    lm = any_model
    config = dd.GenerationConfig(gen_length=16, block_length=8, steps=8)
    g = torch.Generator().manual_seed(seed)
    singles = [torch.randint(0, 256, (1, n), generator=g) for n in lengths]
    P = max(lengths)
    ids = torch.stack([torch.cat([torch.full((P - s.shape[1],), lm.model.pad_id), s[0]]) for s in singles])
    mask = torch.arange(P) >= (P - torch.tensor(lengths))[:, None]
    batched = dd.generate(lm, ids, unmask=unmask, attention_mask=mask, config=config)
    for row, single in enumerate(singles):
        alone = dd.generate(lm, single, unmask=unmask, config=config)
        assert torch.equal(batched.tokens[row], alone.tokens[0]), f"row {row} differs from its single run"


def test_stop_at_eos_fills_the_rest(llada):
    config = dd.GenerationConfig(gen_length=32, block_length=8, steps=32, stop_at_eos=True)
    ids = torch.tensor([[72, 105]])

    @attrs.define
    class EosFirst(LowConfidence):
        def confidence(self, state, logits, tokens):
            return torch.ones_like(tokens, dtype=torch.float)

    class EmitsEos(EosFirst):
        def commit(self, state, logits):
            commit = super().commit(state, logits)
            return dd.Commit(positions=commit.positions, tokens=torch.full_like(commit.tokens, state.eos_id))

    out = dd.generate(llada, ids, unmask=EmitsEos(), config=config)
    assert out.stats.nfe == 8  # the first block only; the rest is filled with EOS
    assert bool((out.tokens == llada.model.eos_id).all())


@pytest.mark.parametrize("bad, message", [
    (dict(gen_length=30, block_length=8), "gen_length=30 is not a multiple of block_length=8"),
    (dict(gen_length=32, block_length=8, steps=6), "steps=6 is not a multiple of the number of blocks 4"),
    (dict(gen_length=32, block_length=8, steps=2), "steps=2 is fewer than the number of blocks 4"),
    (dict(gen_length=0), "gen_length must be a positive integer"),
    (dict(block_length=-8), "block_length must be a positive integer"),
    (dict(temperature=-1.0), "temperature must be a finite number >= 0"),
    (dict(temperature=float("nan")), "temperature must be a finite number >= 0"),
    (dict(cfg_scale=float("inf")), "cfg_scale must be a finite number >= 0"),
    (dict(seed=True), "seed must be an integer"),
    (dict(device="gpu0"), "device 'gpu0' is not a torch device"),
    pytest.param(dict(device="cuda"), "CUDA is not available on this machine",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
])
def test_config_rules(bad, message):
    with pytest.raises(ValueError, match=message):
        dd.GenerationConfig(**bad)


def test_prompt_rules_before_compute(llada):
    config = dd.GenerationConfig(gen_length=480, block_length=32, steps=480)
    with pytest.raises(ValueError, match="prompt length 40 \\+ gen_length 480 = 520 exceeds the model's maximum length 512"):
        dd.generate(llada, torch.zeros(1, 40, dtype=torch.long), config=config)
    with pytest.raises(ValueError, match="the prompt is empty"):
        dd.generate(llada, torch.zeros(1, 0, dtype=torch.long), gen_length=32, steps=32)
    with pytest.raises(ValueError, match="prompts must be non-empty strings"):
        dd.generate(llada, "", gen_length=32, steps=32)
    with pytest.raises(ValueError, match="contains the mask token"):
        dd.generate(llada, torch.tensor([[1, llada.model.mask_id]]), gen_length=32, steps=32)
    with pytest.raises(ValueError, match="unknown unmask policy 'nope'; known unmask policies: .*low-confidence"):
        dd.generate(llada, "hi", unmask="nope")
    with pytest.raises(ValueError, match="has no parameter 'budget'; its parameters: eps, top_p, top_k, alg_temp"):
        dd.generate(llada, "hi", unmask="entropy:budget=3")


@pytest.mark.parametrize("cache", ["none", "prefix", "dual", "dllm-cache", "dkv-cache", "sparse-dllm", "dcu+window",
                                   "dcu:score=value", "dynamic-dllm-cache:budget=4,window=4"])
@pytest.mark.parametrize("unmask", ["threshold", "apd", "factor", "eb-sampler"])
def test_adaptive_unmask_batches_equal_single_runs(tiny_lm, cache, unmask):
    """Rows finishing a block at different steps still decode exactly as alone: a waiting row's
    caches are restored after each step, dllm-cache counts each row's own steps and dcu keeps a
    waiting row's scoring state (docs/architecture.md, padding guarantees)."""
    prompts = ["swap case: ab", "hi", "fill blanks: 4_6__"]
    kw = dict(cache=cache, unmask=unmask, gen_length=32, block_length=16, steps=32)
    both = dd.generate(tiny_lm, prompts, **kw)
    assert len(set(both.stats.tokens_per_step)) > 1  # rows did commit at different rates
    for row, prompt in enumerate(prompts):
        assert both.tokens[row].tolist() == dd.generate(tiny_lm, [prompt], **kw).tokens[0].tolist()


@pytest.mark.parametrize("cache", ["dcu+window", "dcu", "dllm-cache"])
def test_rows_waiting_in_small_blocks_decode_as_alone(tiny_lm, cache):
    """Small blocks and a low threshold: rows finish blocks at different early steps and wait. (The
    case of a row waiting before any layer dynamics exist — DCU then gives it the uniform split — is
    not reached by these prompts.)"""
    prompts = ["swap case: ab", "hi", "fill blanks: 4_6__", "caesar shift 2: xvk"]
    kw = dict(cache=cache, unmask="threshold:threshold=0.5", gen_length=16, block_length=4, steps=16)
    both = dd.generate(tiny_lm, prompts, **kw)
    for row, prompt in enumerate(prompts):
        assert both.tokens[row].tolist() == dd.generate(tiny_lm, [prompt], **kw).tokens[0].tolist()
