"""``dcu-released`` and ``apd-released`` against the released Dynamic-dLLM code's recorded outputs.

``tests/data/released_dynamic_dllm.json`` holds tokens and NFE that ``tools/released_reference.py``
obtained by running TianyiWu233/DYNAMIC-DLLM @ 43cb93b7 (its ``generate`` / ``generate_pd`` with
its cache hooks, fp32, one thread) on random LLaDA checkpoints built by
:func:`build_random_checkpoint` with the recorded arguments. Each case is re-run here through the
registry names and must match token for token with equal NFE. The released low-confidence loop
may pick ``[MASK]`` on these random checkpoints, so it runs as ``low-confidence:commit_mask=true``
(the reference loop exactly). The 4-layer cases run by default; the 32-layer ones are ``slow``.
They run on one thread (tests/conftest.py), as recorded: input-score dynamics at forward 2 compare a vector with itself,
so the top-B among rounding noise depends on how the matmuls were split over threads.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import dynamic_dllm as dd
from dynamic_dllm.models.random_checkpoint import build_random_checkpoint

RECORD = json.loads((Path(__file__).parent / "data" / "released_dynamic_dllm.json").read_text())


def specs(name: str) -> tuple:
    """(cache spec, unmask spec, gen_length, block_length) of a recorded case name
    ``checkpoint/geometry/kind[-mode]/cache``."""
    _, geo, kind, cache = name.split("/")
    gen_length, block_length = RECORD["geometries"][geo]
    cache_spec = "none"
    if cache != "none":
        window, budget, score, *intervals = cache.split("-")
        cache_spec = f"dcu-released:window={window[1:]},budget={budget[1:]},score={score}"
        if intervals:
            cache_spec += f",prompt_interval={intervals[0][1:]},response_interval={intervals[1][1:]}"
    if kind == "generate":
        unmask_spec = "low-confidence:commit_mask=true"
    else:
        unmask_spec = f"apd-released:mode={kind.split('-', 1)[1]}"
    return cache_spec, unmask_spec, gen_length, block_length


@pytest.fixture(scope="module")
def released_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("released")
    return {name: dd.load_model(str(build_random_checkpoint("llada", root / name, **kw)))
            for name, kw in RECORD["checkpoints"].items()}


def _cases():
    for name in RECORD["cases"]:
        slow = not name.startswith("llada-4x64/")
        yield pytest.param(name, id=name, marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("name", list(_cases()))
def test_matches_released_code(released_models, name):
    want = RECORD["cases"][name]
    cache, unmask, gen_length, block_length = specs(name)
    out = dd.generate(released_models[name.split("/")[0]], torch.tensor([RECORD["prompt"]]), cache=cache,
                      unmask=unmask, gen_length=gen_length, block_length=block_length, steps=gen_length)
    assert out.tokens[0].tolist() == want["tokens"]
    assert out.stats.nfe == want["nfe"]


def test_record_covers_the_issue_matrix():
    """Both checkpoints × both geometries × low-confidence with no cache and dcu-released at
    (w, b) ∈ {(32,32), (8,8), (16,4), (0,8)} × both scores, and apd-released in both modes with
    and without the cache."""
    names = set(RECORD["cases"])
    for ckpt in ("llada-4x64", "llada-32x64"):
        assert RECORD["checkpoints"][ckpt]["n_layers"] == int(ckpt.split("-")[1].split("x")[0])
        for geo in ("g64b32", "g128b8"):
            base = f"{ckpt}/{geo}"
            assert f"{base}/generate/none" in names
            for w, b in ((32, 32), (8, 8), (16, 4), (0, 8)):
                for score in ("value", "input"):
                    assert f"{base}/generate/w{w}-b{b}-{score}" in names
            for mode in ("global", "per-token"):
                assert {f"{base}/generate_pd-{mode}/none", f"{base}/generate_pd-{mode}/w32-b32-value"} <= names


def test_dcu_released_refuses_batches_and_dream(llada, dream):
    ids = torch.tensor([RECORD["prompt"][:5]] * 2)
    with pytest.raises(ValueError, match="one sequence at a time; got a batch of 2"):
        dd.generate(llada, ids, cache="dcu-released", gen_length=8, block_length=4, steps=8)
    with pytest.raises(ValueError, match="Dream layout"):
        dd.generate(dream, ids[:1], cache="dcu-released", gen_length=8, block_length=4, steps=8)
