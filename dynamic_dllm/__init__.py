"""dynamic-dllm: training-free acceleration of diffusion LLMs behind one denoising engine.

Public API: :func:`load_model`, :func:`generate`, :class:`GenerationConfig`, the step protocol
:class:`CachePolicy` / :class:`UnmaskPolicy` (plain classes the engine calls directly),
:class:`RowSet` (a cache policy's answer), :class:`Alias` (presets) and :data:`hookimpl` for
registration plugins.
"""

from .api import DEFAULT_MODEL, encode_prompts, generate, load_model
from .core.hookspecs import hookimpl
from .core.policy import CachePolicy, RunInfo, UnmaskPolicy
from .core.registry import Alias, get_registry, plugin_manager
from .core.rows import RowSet
from .core.types import Commit, GenerationConfig, GenerationResult, GenerationStats, StepState

__all__ = [
    "DEFAULT_MODEL", "Alias", "CachePolicy", "Commit", "GenerationConfig", "GenerationResult", "GenerationStats",
    "RowSet", "RunInfo", "StepState", "UnmaskPolicy", "encode_prompts", "generate", "get_registry", "hookimpl",
    "load_model", "plugin_manager",
]
__version__ = "0.1.0"
