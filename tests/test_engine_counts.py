"""What a GPU would pay per step, pinned on the shipped tiny model (block 32, one thread, after a
warm-up; per step = count difference between gen 64 and gen 32 over the NFE difference):
host syncs ≤ 2 for every cache policy with low-confidence, ≤ 3 with threshold or apd; top-level
ops within the engine-v2 targets (the reference loops on the same checkpoint: LLaDA ≈ 291,
Fast-dLLM dual cache ≈ 342)."""

from __future__ import annotations

import pytest

import dynamic_dllm as dd
from dynamic_dllm.evaluation.profiling import per_step

PROMPT = "swap case: JuLOTmu FqiAoF kWE MImwn fu xjWR UsUt qITfWV"
OPS_LIMIT = {"none": 290, "dual": 340, "dcu+window": 450}


@pytest.fixture(scope="module")
def tiny():
    return dd.load_model("tiny")


def _measure(lm, cache, unmask):
    def run_at(gen):
        return lambda: dd.generate(lm, PROMPT, cache=cache, unmask=unmask, gen_length=gen, block_length=32, steps=gen)
    return per_step(run_at, 32)


@pytest.mark.parametrize("cache", ["none", "prefix", "dual", "dcu+window", "dllm-cache", "sparse-dllm", "dkv-cache"])
def test_low_confidence_step_costs(tiny, cache):
    ops, syncs = _measure(tiny, cache, "low-confidence")
    assert syncs <= 2, f"{cache}: {syncs:.2f} host syncs per step"
    if cache in OPS_LIMIT:
        assert ops <= OPS_LIMIT[cache], f"{cache}: {ops:.1f} ops per step"


@pytest.mark.parametrize("cache, unmask", [("none", "apd"), ("dual", "threshold"), ("dcu+window", "apd"),
                                           ("dkv-cache", "threshold")])
def test_parallel_decoding_step_syncs(tiny, cache, unmask):
    _, syncs = _measure(tiny, cache, unmask)
    assert syncs <= 3, f"{cache} + {unmask}: {syncs:.2f} host syncs per step"


def test_the_counter_sees_syncs_and_ops():
    """The counting itself: three item() syncs, one tolist, and their top-level ops."""
    import torch
    from types import SimpleNamespace

    from dynamic_dllm.evaluation.profiling import counts

    def run():
        t = torch.arange(4.0)
        for _ in range(3):
            (t * 2).sum().item()
        t.tolist()
        return SimpleNamespace(stats=SimpleNamespace(nfe=1))

    ops, syncs, nfe = counts(run)
    assert (syncs, nfe) == (4, 1)
    assert ops >= 1 + 3 * 3  # arange, then mul, sum, item per round
