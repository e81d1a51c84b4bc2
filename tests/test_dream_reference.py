"""Dream's samplers with their effective defaults against Dream's ``diffusion_generate``.

``tests/data/dream_reference.json`` holds tokens ``tools/dream_reference.py`` recorded by running
Dream's ``generation_utils.py`` (as shipped in NVlabs/Fast-dLLM @ 24cc59e ``dream/model``) under
transformers 4.49 on a random Dream checkpoint built by :func:`build_random_checkpoint` with the
recorded arguments: one diffusion of ``steps`` steps over ``gen_length`` masks, ``temperature=0``,
and ``top_k`` not passed (the inherited 50), ``None`` or 5. Our samplers run it as one block; their
default ``top_k="checkpoint"`` must reproduce the not-passed case.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import dynamic_dllm as dd
from dynamic_dllm.models.dream import diffusion_generate_defaults
from dynamic_dllm.models.random_checkpoint import build_random_checkpoint

RECORD = json.loads((Path(__file__).parent / "data" / "dream_reference.json").read_text())
POLICY = {"entropy": "entropy", "maskgit_plus": "maskgit-plus", "topk_margin": "margin"}
TOP_K = {"inherited": "", "none": ":top_k=none", "5": ":top_k=5"}


@pytest.fixture(scope="module")
def recorded_dream(tmp_path_factory):
    return dd.load_model(str(build_random_checkpoint("dream", tmp_path_factory.mktemp("dream_ref") / "dream",
                                                     **RECORD["checkpoint"])))


@pytest.mark.parametrize("name", sorted(RECORD["cases"]))
def test_dream_sampler_matches_diffusion_generate(recorded_dream, name):
    want = RECORD["cases"][name]
    assert not want["committed_mask"]  # Dream's argmax never picked [MASK] here (ours never does)
    alg, top_k = name.split("/top_k=")
    G = RECORD["gen_length"]
    out = dd.generate(recorded_dream, torch.tensor([RECORD["prompt"]]), unmask=POLICY[alg] + TOP_K[top_k],
                      gen_length=G, block_length=G, steps=RECORD["steps"])
    assert out.tokens[0].tolist() == want["tokens"]


def test_the_inherited_top_k_matters_for_entropy_and_margin():
    """Without it the default would be indistinguishable from top_k=none on this record."""
    cases = RECORD["cases"]
    for alg in ("entropy", "topk_margin"):
        assert cases[f"{alg}/top_k=inherited"]["tokens"] != cases[f"{alg}/top_k=none"]["tokens"]


def test_effective_defaults_follow_config_json():
    assert diffusion_generate_defaults({}) == {"top_k": 50, "top_p": 1.0}
    assert diffusion_generate_defaults({"top_k": None, "top_p": 0.9}) == {"top_k": None, "top_p": 0.9}
    assert diffusion_generate_defaults({"top_k": 20}) == {"top_k": 20, "top_p": 1.0}
