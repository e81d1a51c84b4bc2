"""dynamic-dllm: training-free acceleration of diffusion LLMs behind one denoising engine.

Public API: :func:`load_model`, :func:`generate`, :class:`GenerationConfig`, the policy bases
:class:`CachePolicy` / :class:`UnmaskPolicy`, and :data:`hookimpl` for plugins.
"""

from .api import DEFAULT_MODEL, encode_prompts, generate, load_model
from .core.hookspecs import hookimpl
from .core.policy import CachePolicy, RunInfo, UnmaskPolicy
from .core.registry import get_registry, plugin_manager
from .core.types import Commit, GenerationConfig, GenerationResult, GenerationStats, StepState

__all__ = [
    "DEFAULT_MODEL", "CachePolicy", "Commit", "GenerationConfig", "GenerationResult", "GenerationStats", "RunInfo",
    "StepState", "UnmaskPolicy", "encode_prompts", "generate", "get_registry", "hookimpl", "load_model", "plugin_manager",
]
__version__ = "0.1.0"
