"""Hook specifications (pluggy project name ``dynamic_dllm``).

Two kinds of hooks:

* **Registration hooks**, implemented by plugin modules (built-in ones and third-party packages
  found through the ``dynamic_dllm`` entry-point group). Each receives a ``register`` callback
  (the ``simonw/llm`` style) and calls it once per thing it provides.
* **Step hooks**, implemented by the policy *instances* active in one generation. The engine
  registers them into a per-generation plugin manager and calls these hooks; several cache
  policies may be active at once: the rows they return for a layer are united, the keys they
  keep (``cache_keys``) intersected.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .executor import LayerContext
    from .types import Commit, StepState

PROJECT = "dynamic_dllm"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --- registration hooks ---------------------------------------------------------------------


@hookspec
def register_cache_policies(register: Callable) -> None:
    """Call ``register(name, factory, summary)`` for each cache policy this plugin provides.
    ``factory(**params)`` returns a fresh policy instance for one generation."""


@hookspec
def register_unmask_policies(register: Callable) -> None:
    """Call ``register(name, factory, summary)`` for each unmask policy this plugin provides."""


@hookspec
def register_models(register: Callable) -> None:
    """Call ``register(model_type, adapter_class)`` for each architecture this plugin can load
    (``model_type`` as written in a checkpoint's ``config.json``)."""


@hookspec
def register_checkpoints(register: Callable) -> None:
    """Call ``register(name, locate, summary)`` for each named checkpoint; ``locate()`` returns
    the checkpoint folder (building it first if needed)."""


# --- step hooks (implemented by policy instances) ------------------------------------------


class StepSpecs:
    """Hooks the engine calls during one generation."""

    @hookspec
    def generation_start(self, run) -> None:
        """Once per generation, before the first step; ``run`` is a :class:`~dynamic_dllm.core.policy.RunInfo`."""

    @hookspec
    def cache_step_start(self, state: "StepState") -> Optional[bool]:
        """Before the forward of a step. Return True to ask for a full step (every row of every
        layer recomputed and every cache entry refreshed)."""

    @hookspec
    def cache_rows(self, state: "StepState", layer: int, context: "LayerContext") -> Optional["torch.Tensor"]:
        """Rows layer ``layer`` must recompute this step: bool ``[B, L]``; None = no opinion.
        The answers of all active cache policies are united (logical or)."""

    @hookspec
    def cache_keys(self, state: "StepState", layer: int, context: "LayerContext") -> Optional["torch.Tensor"]:
        """Keys layer ``layer``'s attention may use this step: bool ``[B, L]`` keep-mask; None = all
        keys. Called after :meth:`cache_rows`; the answers of all active cache policies are
        intersected (logical and), then with the padding mask. Applies to every query the layer
        computes (also on full steps). Dropped keys' cached K/V are kept, not deleted."""

    @hookspec
    def cache_step_end(self, state: "StepState", committed: "torch.Tensor") -> None:
        """After the commits of a step; ``committed`` is bool ``[B, L]``."""

    @hookspec(firstresult=True)
    def unmask_commit(self, state: "StepState", logits: "torch.Tensor") -> Optional["Commit"]:
        """Choose the commits of the current block from its logits ``[B, block_length, V]``
        (already shifted for AR-initialised models)."""
