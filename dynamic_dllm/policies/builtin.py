"""Built-in policy plugin: registers every shipped policy through the public registration hooks."""

from __future__ import annotations

from ..core.hookspecs import hookimpl
from .dream_samplers import DreamEntropy, DreamMargin, DreamOrigin, DreamSampler
from .low_confidence import LowConfidence, RandomRemasking
from .threshold import ThresholdDecoding
from .factor import FactorDecoding
from .apd import AdaptiveParallelDecoding
from .apd_released import ReleasedAdaptiveParallelDecoding
from .sdar_sampler import LLADA2_SAMPLER, SdarSampler
from .fast_dllm_v2_sampler import FastDllmV2Sampler
from .llada21_sampler import LLaDA21Sampler
from .eb_sampler import EntropyBoundedSampler
from .no_cache import NoCache
from .dcu_released import ReleasedDynamicCache
from .dcu import PRESET as DYNAMIC_DLLM_CACHE, DynamicCacheUpdating, UpdateWindow
from .dllm_cache import DllmCache
from .dkv_cache import DkvCache
from .block_kv import BlockKV
from .dual import DualCache
from .prefix import PrefixCache
from .sparse_dllm import SparseDllm


@hookimpl
def register_cache_policies(register):
    register("none", NoCache)
    register("dllm-cache", DllmCache)
    register("dcu", DynamicCacheUpdating)
    register("window", UpdateWindow)
    register("dcu-released", ReleasedDynamicCache)
    register("dynamic-dllm-cache", DYNAMIC_DLLM_CACHE)
    register("prefix", PrefixCache)
    register("dual", DualCache)
    register("dkv-cache", DkvCache)
    register("sparse-dllm", SparseDllm)
    register("block-kv", BlockKV)


@hookimpl
def register_unmask_policies(register):
    register("low-confidence", LowConfidence)
    register("random", RandomRemasking)
    register("maskgit-plus", DreamSampler)
    register("margin", DreamMargin)
    register("entropy", DreamEntropy)
    register("origin", DreamOrigin)
    register("threshold", ThresholdDecoding)
    register("factor", FactorDecoding)
    register("apd", AdaptiveParallelDecoding)
    register("apd-released", ReleasedAdaptiveParallelDecoding)
    register("eb-sampler", EntropyBoundedSampler)
    register("sdar", SdarSampler)
    register("fast-dllm-v2", FastDllmV2Sampler)
    register("llada2", LLADA2_SAMPLER)
    register("llada21", LLaDA21Sampler)
