"""Shared fixtures: tiny random LLaDA and Dream checkpoints in exact HF layout (built once per session)."""

from __future__ import annotations

import pytest
import torch

from dynamic_dllm.models.checkpoint import load_checkpoint
from dynamic_dllm.models.random_checkpoint import build_random_checkpoint

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

SMALL = dict(n_layers=2, d_model=64, n_heads=4, d_ff=128, max_length=512)


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
def llada(llada_dir):
    return load_checkpoint(llada_dir)


@pytest.fixture(scope="session")
def dream(dream_dir):
    return load_checkpoint(dream_dir)


@pytest.fixture(params=["llada", "dream"])
def any_model(request):
    return request.getfixturevalue(request.param)
