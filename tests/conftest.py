"""Shared fixtures: tiny random LLaDA, LLaDA-MoE and Dream checkpoints in exact HF layout (built once per session)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import settings


from dynamic_dllm.models.checkpoint import load_checkpoint
from dynamic_dllm.models.random_checkpoint import build_random_checkpoint

# one torch thread for the whole suite: on a shared 2-core machine two threads are many times slower,
# and some recorded references (tests/data) were taken on one thread
torch.set_num_threads(1)

# Property tests are deterministic (same examples on every run and machine, no example database to
# replay a stale failure); `--hypothesis-profile=explore` searches with fresh random examples.
settings.register_profile("default", derandomize=True, database=None, deadline=None)
settings.register_profile("explore", max_examples=500, database=None, deadline=None)
settings.load_profile("default")

SMALL = dict(n_layers=2, d_model=64, n_heads=4, d_ff=128, max_length=512)


@pytest.fixture(autouse=True)
def _one_thread():
    """Every test starts on one thread, whatever a command under test set (``--threads``)."""
    yield
    torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _isolated_home(tmp_path_factory):
    """Keep named checkpoints built during tests out of the user's cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("DYNAMIC_DLLM_HOME", str(tmp_path_factory.mktemp("home")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def llada_dir(tmp_path_factory):
    # std 0.5 gives peaked, varied predictions so orderings and ties are meaningful
    return build_random_checkpoint("llada", tmp_path_factory.mktemp("llada"), seed=1, std=0.5, **SMALL)


@pytest.fixture(scope="session")
def dream_dir(tmp_path_factory):
    return build_random_checkpoint("dream", tmp_path_factory.mktemp("dream"), seed=2, std=0.5, n_kv_heads=2, **SMALL)


@pytest.fixture(scope="session")
def llada_moe_dir(tmp_path_factory):
    # every layer a mixture of 8 experts (top 2) plus a shared expert, GQA, QK-norm
    return build_random_checkpoint("llada-moe", tmp_path_factory.mktemp("llada_moe"), seed=3, std=0.5, n_kv_heads=2,
                                   n_experts=8, top_k=2, d_expert=32, d_shared=32, **SMALL)


@pytest.fixture(scope="session")
def llada_moe(llada_moe_dir):
    return load_checkpoint(llada_moe_dir)


@pytest.fixture(scope="session")
def llada(llada_dir):
    return load_checkpoint(llada_dir)


@pytest.fixture(scope="session")
def dream(dream_dir):
    return load_checkpoint(dream_dir)


@pytest.fixture(params=["llada", "llada_moe", "dream"])
def any_model(request):
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="session")
def tiny_lm():
    """The shipped trained ``tiny`` model (its confident predictions make adaptive policies commit unevenly)."""
    import dynamic_dllm as dd

    return dd.load_model("tiny")
