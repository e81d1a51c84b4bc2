"""Registration hook specifications (pluggy project name ``dynamic_dllm``).

Implemented by plugin modules (built-in ones and third-party packages found through the
``dynamic_dllm`` entry-point group). Each receives a ``register`` callback (the ``simonw/llm``
style) and calls it once per thing it provides. pluggy is used for registration only: the engine
calls policy objects directly (the step protocol, :mod:`dynamic_dllm.core.policy`).
"""

from __future__ import annotations

from typing import Callable

import pluggy

PROJECT = "dynamic_dllm"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --- registration hooks ---------------------------------------------------------------------


@hookspec
def register_cache_policies(register: Callable) -> None:
    """Call ``register(name, factory, summary)`` for each cache policy this plugin provides.
    ``factory(**params)`` returns a fresh policy instance for one generation; or a
    :class:`~dynamic_dllm.core.registry.Alias` (a preset: a spec string with mapped parameters)."""


@hookspec
def register_unmask_policies(register: Callable) -> None:
    """Call ``register(name, factory, summary)`` for each unmask policy this plugin provides."""


@hookspec
def register_models(register: Callable) -> None:
    """Call ``register(model_type, adapter_class)`` for each architecture this plugin can load
    (``model_type`` as written in a checkpoint's ``config.json``). The class's ``architectures``
    tuple names the HF ``architectures`` it loads; the loader dispatches on those first."""


@hookspec
def register_checkpoints(register: Callable) -> None:
    """Call ``register(name, locate, summary)`` for each named checkpoint; ``locate()`` returns
    the checkpoint folder (building it first if needed)."""
