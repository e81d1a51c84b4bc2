"""The step protocol: what the engine calls on a cache policy and on an unmask policy.

Policies are plain Python objects; the engine calls their methods directly (pluggy only
*registers* them, see :mod:`~dynamic_dllm.core.registry`). One generation, with ``C`` the list of
active cache policies and ``u`` the unmask policy::

    for p in C + [u]: p.start(run)                              # once, RunInfo
    every step:
        full = any(p.step_start(state) for p in C)              # True = every row of every layer
        every layer l (also on full steps, whose row answers are ignored):
            rows = union(p.layer_rows(state, l, ctx) for p in C)   # RowSet with a host-known size, or None
            keys = ∩ (p.layer_keys(state, l, ctx) for p in C if p.restricts_keys)
        commit = u.commit(state, block_logits)
        for p in C: p.step_end(state, committed)

:class:`CachePolicy` and :class:`UnmaskPolicy` are the protocols, with do-nothing defaults, so a
policy subclasses one and overrides what it needs. Answers must not need a device→host sync
inside the layer loop: a :class:`~dynamic_dllm.core.rows.RowSet`'s size is a Python int, fixed
before the layer runs (take any count once per step, in ``step_start``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import attrs
import torch

from .types import GenerationConfig

if TYPE_CHECKING:  # pragma: no cover
    from .executor import LayerContext
    from .rows import RowSet
    from .types import Commit, StepState

#: step hooks of the pluggy-based engine (before v2); a policy defining one of these is rejected
OLD_HOOKS = {"generation_start": "start", "cache_step_start": "step_start", "cache_rows": "layer_rows",
             "cache_keys": "layer_keys", "cache_step_end": "step_end", "unmask_commit": "commit"}


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
    #: bool ``[B, L]``: False on left padding (fixed for the generation)
    valid: torch.Tensor
    #: the model family sampler's effective defaults (``DecoderModel.sampling_defaults``)
    sampling_defaults: dict = attrs.Factory(dict)
    #: the model's attention is block-causal (``DecoderModel.block_causal``: SDAR, Fast-dLLM v2)
    block_causal: bool = False


class CachePolicy:
    """Chooses, per step and layer, the rows that are recomputed (the rest reuse their cache).

    Class attributes the engine reads: ``supports_cfg`` (may run with classifier-free guidance),
    ``reuses_cache`` (False: every step is full, so the executor keeps no cache at all),
    ``restricts_keys`` (``layer_keys`` is called, also on full steps)."""

    kind = "cache"
    supports_cfg = False
    reuses_cache = True
    restricts_keys = False
    #: the policy keeps no per-row state, or does not advance it for ``state.waiting`` rows (the
    #: engine restores their caches): a row waiting for the rest of its batch then decodes as alone
    #: (docs/architecture.md, padding guarantees). Declare it for a policy once that is tested.
    exact_for_waiting_rows = False

    def start(self, run: RunInfo) -> None:
        """Reset per-generation state."""

    def step_start(self, state: "StepState") -> bool:
        """Before the forward; True asks for a full step (every row of every layer refreshed)."""
        return False

    def layer_rows(self, state: "StepState", layer: int, context: "LayerContext") -> Optional["RowSet"]:
        """Rows layer ``layer`` recomputes; None = no opinion. Called at every layer of every step,
        also on full steps (the answer is then ignored), so a policy sees every layer input. The
        answers of all active cache policies are united. A set is sized to the forward's batch,
        ``context.hidden.shape[0]`` (2·B under classifier-free guidance)."""
        return None

    def layer_keys(self, state: "StepState", layer: int, context: "LayerContext") -> Optional[torch.Tensor]:
        """Only with ``restricts_keys``: bool ``[B, L]`` keys the layer's attention may use (None =
        all), intersected over policies and with the padding mask; called after ``layer_rows``."""
        return None

    def step_end(self, state: "StepState", committed: torch.Tensor) -> None:
        """After the commits; ``committed`` is bool ``[B, L]``."""


class UnmaskPolicy:
    """Chooses which masked positions of the current block a step commits."""

    kind = "unmask"
    #: the logits :meth:`commit` gets: ``"block"`` (the current block's, the default) or
    #: ``"response"`` (every generated position's, ``[B, gen_length, V]``; costs the LM head on
    #: all of them — for rules that track positions outside the current block)
    logits_rows = "block"
    #: at temperature 0 a padded batch decodes as its rows alone: the rule is per row and draws no
    #: random numbers (random remasking, Dream's ``origin`` and ``alg_temp`` draw them; their draws
    #: depend on the batch's shape; ``apd-released`` shares one threshold across the batch). Declared
    #: by each built-in policy; unknown policies count as not exact (the server then runs them alone)
    exact_in_batches = False

    def start(self, run: RunInfo) -> None:
        """Reset per-generation state."""

    def commit(self, state: "StepState", logits: torch.Tensor) -> "Commit":
        """The commits of the current block from its logits ``[B, block_length, V]`` (already
        shifted for AR-initialised models; ``[B, gen_length, V]`` with ``logits_rows =
        "response"``). Returns positions and tokens of the current block only."""
        raise TypeError(f"{type(self).__name__} does not define commit(state, logits)")


def check_policy(policy, kind: str):
    """``policy`` if it has the step methods of ``kind`` (``cache`` / ``unmask``); else a
    ValueError naming the object and, for a policy written against the pluggy hooks of engine v1,
    the method to rename."""
    name = type(policy).__name__
    old = sorted(h for h in OLD_HOOKS if callable(getattr(policy, h, None)))
    if old:
        renames = ", ".join(f"{h} → {OLD_HOOKS[h]}" for h in old)
        raise ValueError(f"{kind} policy {name} implements the pluggy step hooks of engine v1 ({renames});"
                         " engine v2 calls plain methods instead (docs/plugins.md)")
    if kind == "unmask" and getattr(policy, "logits_rows", "block") not in ("block", "response"):
        raise ValueError(f"unmask policy {name}: logits_rows must be 'block' or 'response', got {policy.logits_rows!r}")
    needed = ("step_start", "layer_rows", "step_end") if kind == "cache" else ("commit",)
    missing = [m for m in ("start", *needed) if not callable(getattr(policy, m, None))]
    if missing:
        raise ValueError(f"{name} is not {'a cache' if kind == 'cache' else 'an unmask'} policy: it lacks {', '.join(missing)}"
                         f" (derive from dynamic_dllm.{'CachePolicy' if kind == 'cache' else 'UnmaskPolicy'})")
    return policy
