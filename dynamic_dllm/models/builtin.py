"""Built-in model plugin: the LLaDA, LLaDA-MoE, Dream, SDAR, Fast-dLLM v2 and LLaDA2 adapters and the named checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

from ..core.hookspecs import hookimpl
from .dream import DreamModel
from .fast_dllm_v2 import FastDLLMv2Model
from .llada import LLaDAModel
from .llada2 import LLaDA2Model
from .llada_moe import LLaDAMoEModel
from .sdar import SDARModel

#: Random LLaDA checkpoint the package builds on first use (seed 0) and caches.
RANDOM_LLADA_SIZES = dict(n_layers=4, d_model=128, n_heads=4, d_ff=256, max_length=2048)


def cache_dir() -> Path:
    return Path(os.environ.get("DYNAMIC_DLLM_HOME", Path.home() / ".cache" / "dynamic_dllm"))


#: The trained tiny LLaDA-architecture model shipped inside the package (see docs/tiny_model.md).
TINY_CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "tiny"


def locate_tiny() -> Path:
    """The shipped ``tiny`` checkpoint: 4 layers × 128 wide, byte tokenizer, trained by
    ``dynamic-dllm train-tiny`` on the synthetic task suite (:mod:`dynamic_dllm.tasks.tiny_suite`)."""
    if not (TINY_CHECKPOINT / "config.json").is_file():
        raise FileNotFoundError(f"the shipped tiny checkpoint is missing from {TINY_CHECKPOINT}; "
                                "reinstall the package (package data 'checkpoints/tiny/*')")
    return TINY_CHECKPOINT


#: Random LLaDA the speed benchmarks run on (the issues' "8 layers × 512 width").
BENCH_LLADA_SIZES = dict(n_layers=8, d_model=512, n_heads=8, d_ff=1376, max_length=2048)


def _built_random_llada(name: str, std: float, sizes: dict) -> Path:
    """``$DYNAMIC_DLLM_HOME/name``: a random LLaDA (seed 0) built on first use; the version suffix
    of ``name`` changes whenever the weights :func:`build_random_checkpoint` makes would change."""
    from .random_checkpoint import build_random_checkpoint

    folder = cache_dir() / name
    if not (folder / "config.json").is_file():
        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        build_random_checkpoint("llada", tmp, seed=0, std=std, **sizes)
        tmp.replace(folder) if not folder.exists() else None
    return folder


def locate_random_llada() -> Path:
    """A random-weight LLaDA checkpoint (4 layers × 128 wide, byte tokenizer), built
    deterministically on first use under ``$DYNAMIC_DLLM_HOME`` (default ``~/.cache/dynamic_dllm``)."""
    return _built_random_llada("random-llada-v2", 0.02, RANDOM_LLADA_SIZES)


def locate_bench_llada() -> Path:
    """The benchmarks' random LLaDA: 8 layers × 512 wide (d_ff 1376, 8 heads), std 0.05, byte tokenizer."""
    return _built_random_llada("bench-llada-8x512-v2", 0.05, BENCH_LLADA_SIZES)


@hookimpl
def register_models(register):
    register("llada", LLaDAModel, "LLaDA-8B / LLaDA-1.5 layout (LLaDA checkpoint keys)")
    register("llada-moe", LLaDAMoEModel, "LLaDA-MoE-7B-A1B layout (OLMoE keys, 64 experts top-8, QK-norm, bidirectional)")
    register("Dream", DreamModel, "Dream-v0-7B layout (Qwen2.5 keys, one-position logit shift)")
    register("Fast_dLLM_Qwen", FastDLLMv2Model, "Fast-dLLM v2 block-diffusion layout (Qwen2.5 keys, block-causal, shifted logits)")
    register("llada2_moe", LLaDA2Model, "LLaDA2.0 layout (Ling keys, fused QKV, partial RoPE, group-limited MoE, block-causal)")
    register("sdar", SDARModel, "SDAR block-diffusion layout (Qwen3 keys, QK-norm, block-causal attention)")


@hookimpl
def register_checkpoints(register):
    register("tiny", locate_tiny)
    register("random-llada", locate_random_llada)
    register("bench-llada-8x512", locate_bench_llada)
