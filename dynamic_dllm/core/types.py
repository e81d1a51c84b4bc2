"""Value types shared by the engine and every policy.

* :class:`GenerationConfig` — what the user asks for; validated on construction, so the Python API
  and the CLI reject the same inconsistent inputs with the same ``ValueError``.
* :class:`StepState` — what a policy sees at one denoising step (read-only view of the canvas).
* :class:`Commit` — what an unmask policy answers: which current-block positions to commit, with
  which tokens.
* :class:`GenerationStats` / :class:`GenerationResult` — the record of one generation.
"""

from __future__ import annotations

from typing import Optional

import attrs
import torch

from .validators import boolean, integer, number_in

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: the ``dtype`` names a GenerationConfig accepts
DTYPE_NAMES = tuple(_DTYPES)


def _available_device(instance, attribute, value):
    """A device string torch understands and this machine has (``cpu``, ``cuda``, ``cuda:1``, ``mps``)."""
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {value!r} is not a torch device (e.g. cpu, cuda, cuda:0)") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {value!r}: CUDA is not available on this machine (torch {torch.__version__}); use cpu")
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {value!r}: this machine has {count} CUDA device(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {value!r}: MPS is not available on this machine; use cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {value!r}: only cpu, cuda and mps are supported")


@attrs.frozen
class GenerationConfig:
    """Semi-autoregressive masked-diffusion decoding settings.

    The generation region (``gen_length`` masks after the prompt) is split into
    ``gen_length // block_length`` blocks decoded left to right; ``steps`` is the total step budget
    of fixed-schedule policies, ``steps // num_blocks`` per block (LLaDA's rule). Rules:
    ``gen_length % block_length == 0``; ``steps % num_blocks == 0`` and ``steps >= num_blocks``.
    """

    gen_length: int = attrs.field(default=128, validator=integer(1))
    block_length: int = attrs.field(default=32, validator=integer(1))
    #: None (default): ``gen_length`` — one token per step
    steps: Optional[int] = attrs.field(default=None, validator=integer(1, optional=True))
    temperature: float = attrs.field(default=0.0, validator=number_in(low=0.0))
    seed: int = attrs.field(default=0, validator=integer(0, 2 ** 63 - 1))
    cfg_scale: float = attrs.field(default=0.0, validator=number_in(low=0.0))
    stop_at_eos: bool = attrs.field(default=False, validator=boolean)
    dtype: str = attrs.field(default="float32", validator=attrs.validators.in_(tuple(_DTYPES)))
    device: str = attrs.field(default="cpu", validator=[attrs.validators.instance_of(str), _available_device])
    #: run the per-layer compute through ``torch.compile`` (opt-in; the first generation compiles)
    compile: bool = attrs.field(default=False, validator=boolean)

    def __attrs_post_init__(self):
        if self.steps is None:
            object.__setattr__(self, "steps", self.gen_length)
        if self.gen_length % self.block_length:
            raise ValueError(
                f"gen_length={self.gen_length} is not a multiple of block_length={self.block_length}"
                " (the generation is split into equal blocks)"
            )
        if self.steps < self.num_blocks:
            raise ValueError(
                f"steps={self.steps} is fewer than the number of blocks {self.num_blocks}"
                f" (gen_length={self.gen_length} / block_length={self.block_length}); every block needs a step"
            )
        if self.steps > self.gen_length:
            raise ValueError(
                f"steps={self.steps} exceeds gen_length={self.gen_length}: at most one step per generated token"
                " (more steps than tokens only add steps that commit nothing)"
            )
        if self.steps % self.num_blocks:
            raise ValueError(
                f"steps={self.steps} is not a multiple of the number of blocks {self.num_blocks}"
                f" (gen_length={self.gen_length} / block_length={self.block_length})"
            )

    @property
    def num_blocks(self) -> int:
        return self.gen_length // self.block_length

    @property
    def steps_per_block(self) -> int:
        return self.steps // self.num_blocks

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]

    def check_prompt(self, prompt_length: int, max_length: int) -> None:
        """Reject an empty prompt or a canvas longer than the model's maximum length."""
        if prompt_length <= 0:
            raise ValueError("the prompt is empty: a masked-diffusion model needs at least one prompt token")
        if prompt_length + self.gen_length > max_length:
            raise ValueError(
                f"prompt length {prompt_length} + gen_length {self.gen_length} ="
                f" {prompt_length + self.gen_length} exceeds the model's maximum length {max_length}"
            )


@attrs.frozen(eq=False)
class StepState:
    """Read-only view of one denoising step, handed to every policy call.

    Shapes: B = batch, L = prompt_length + gen_length. ``x`` holds the canvas *before* this step's
    commits; ``masked`` is ``x == mask_id``; ``valid`` is False on left padding; ``positions`` are
    the RoPE positions (left padding shifts them so a padded row equals its unpadded run).
    ``last_committed`` marks positions committed (or edited to another token) by the previous step
    (all False at the first step).
    ``logit_shift`` is 1 for AR-initialised models (Dream: position i is predicted from hidden i-1).
    """

    x: torch.Tensor
    masked: torch.Tensor
    valid: torch.Tensor
    positions: torch.Tensor
    last_committed: torch.Tensor
    prompt_length: int
    block: int
    block_start: int
    block_end: int
    step: int
    step_in_block: int
    config: GenerationConfig
    n_layers: int
    mask_id: int
    eos_id: int
    logit_shift: int
    generator: torch.Generator
    #: batch rows with no masks left in the current block, waiting for the others (host tuple).
    #: The engine restores their caches after the step; policies with per-row state should not
    #: advance it for them (e.g. dLLM-Cache's per-row step counts)
    waiting: tuple = ()

    @property
    def batch_size(self) -> int:
        return self.x.shape[0]

    @property
    def length(self) -> int:
        return self.x.shape[1]

    @property
    def steps_per_block(self) -> int:
        return self.config.steps_per_block

    @property
    def block_masked(self) -> torch.Tensor:
        """``[B, block_length]`` bool: masked positions of the current block."""
        return self.masked[:, self.block_start : self.block_end]


@attrs.frozen(eq=False)
class Commit:
    """An unmask policy's answer for the current block: ``positions`` ``[B, block_length]`` bool
    (which positions to commit) and ``tokens`` ``[B, block_length]`` long (their tokens; read only
    where ``positions`` is True). Both may instead be ``[B, block_end − prompt_length]``: the whole
    response up to the block's end, for samplers that may still commit masks an earlier block left. Committing the mask token leaves a position masked (the reference
    samplers' behaviour when their argmax is ``[MASK]``). ``end_block``: the block ends after this
    step even if masks remain (a fixed schedule that has run its steps, as LLaDA's loop); by default
    a block ends when it has no masks left. ``edits`` (optional, the shape of ``positions``): already
    decoded response positions *of the current block* to overwrite with ``tokens`` (token editing,
    LLaDA2.1) — never masks, never the prompt, never the mask token; an edit to the same token is
    none. ``continue_block``: the block goes on although it has no masks left (an editing sampler's
    refinement steps); the policy ends it with ``end_block``, within ``extra_steps_per_block`` (a class
    attribute or property of the policy) more steps than a block allows otherwise. ``busy`` (optional
    bool ``[B]``): rows the policy still works on although they have no masks — they do not wait for
    the others (the engine restores a waiting row's caches after each step)."""

    positions: torch.Tensor
    tokens: torch.Tensor
    end_block: bool = attrs.field(default=False, validator=boolean)
    edits: Optional[torch.Tensor] = None
    continue_block: bool = attrs.field(default=False, validator=boolean)
    busy: Optional[torch.Tensor] = None


@attrs.frozen
class GenerationStats:
    """Counters of one generation.

    ``nfe``: model forward calls (a refresh forward that also decodes counts once, as Fast-dLLM).
    ``tokens_per_step``: tokens committed per step, summed over the batch.
    ``recomputed_rows``: per layer, rows computed summed over steps and batch — the cost, padding
    rows of a row set included (a union such as ``dcu+window`` is padded to ``B_l + W`` rows).
    ``chosen_rows``: per layer, the distinct rows the policies chose (≤ ``recomputed_rows``).
    ``rows_per_step``: per step, the rows computed per layer (summed over the batch).
    ``recompute_fraction``: FLOPs the layers actually spent / FLOPs of full forwards at every step
    (per-layer projections, attention and FFN; embedding and head excluded; from the rows computed).
    ``tokens_per_second``: generated non-EOS tokens per wall-clock second.
    ``edited_tokens``: decoded tokens an editing sampler rewrote (changed ones only; not in ``tokens_per_step``).
    """

    nfe: int
    wall_time: float
    tokens_per_second: float
    generated_tokens: int
    tokens_per_step: tuple
    recomputed_rows: tuple
    recompute_fraction: float
    policy_time: float = 0.0
    chosen_rows: tuple = ()
    rows_per_step: tuple = ()
    edited_tokens: int = 0

    @property
    def chosen_fraction(self) -> float:
        """Distinct chosen rows / rows computed (1.0 when nothing is padded)."""
        computed = sum(self.recomputed_rows)
        return sum(self.chosen_rows) / computed if computed else 1.0

    @property
    def mean_tokens_per_step(self) -> float:
        return sum(self.tokens_per_step) / max(len(self.tokens_per_step), 1)

    def to_dict(self) -> dict:
        out = attrs.asdict(self)
        out["tokens_per_step"] = list(self.tokens_per_step)
        out["recomputed_rows"] = list(self.recomputed_rows)
        out["chosen_rows"] = list(self.chosen_rows)
        out["rows_per_step"] = [list(r) for r in self.rows_per_step]
        out["mean_tokens_per_step"] = self.mean_tokens_per_step
        return out


@attrs.frozen(eq=False)
class GenerationResult:
    """``tokens``: ``[B, gen_length]`` generated ids; ``sequences``: full canvases ``[B, L]``;
    ``texts``: decoded generations (special tokens skipped) when a tokenizer was given."""

    tokens: torch.Tensor
    sequences: torch.Tensor
    texts: Optional[list]
    stats: GenerationStats

    @property
    def text(self) -> Optional[str]:
        return self.texts[0] if self.texts else None
