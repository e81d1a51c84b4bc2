"""Base classes for policies and the per-generation facts they are bound to.

A policy is a small object with state for one generation. It implements the step hooks of
:mod:`dynamic_dllm.core.hookspecs` as methods marked ``@hookimpl``; the bases below give it the
``generation_start`` binding. Policies are ``attrs`` classes, so a spec string such as
``dcu:budget=32`` maps onto validated fields.
"""

from __future__ import annotations

import attrs
import torch

from .hookspecs import hookimpl
from .types import GenerationConfig


@attrs.frozen(eq=False)
class RunInfo:
    """Facts fixed for one generation: the config, canvas geometry and model dimensions."""

    config: GenerationConfig
    batch_size: int
    prompt_length: int
    length: int
    n_layers: int
    d_model: int
    mask_id: int
    eos_id: int
    logit_shift: int
    device: torch.device


class Policy:
    """Common base: remembers the :class:`RunInfo` of the current generation in ``self.run``."""

    run: RunInfo

    @hookimpl
    def generation_start(self, run: RunInfo) -> None:
        self.run = run
        self.start(run)

    def start(self, run: RunInfo) -> None:
        """Reset per-generation state; override as needed."""


class CachePolicy(Policy):
    """Decides per step and layer which rows are recomputed (hooks ``cache_step_start``,
    ``cache_rows``, ``cache_step_end``)."""

    kind = "cache"


class UnmaskPolicy(Policy):
    """Decides per step which masked positions of the current block are committed
    (hook ``unmask_commit``)."""

    kind = "unmask"
