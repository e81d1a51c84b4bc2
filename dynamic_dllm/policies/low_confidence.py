"""LLaDA's baseline samplers (``ML-GSAI/LLaDA`` ``generate.py``).

Per block the number of tokens per step is the even split of the block's masks over the block's
steps, remainder to the first steps. Each step: tokens ``x0 = argmax(z/T + Gumbel)`` (float64
noise), confidence = ``softmax(z)[x0]`` (``low-confidence``) or ``U(0,1)`` (``random``); the
scheduled number of most confident masked block positions are committed ("low-confidence
remasking" = keep the top-k). Committed tokens never change.

The reference's argmax runs over the whole vocabulary, ``[MASK]`` included: committing ``[MASK]``
leaves the position masked (a candidate again at the next step) and the block still ends after its
``steps_per_block`` steps, masks left in it; later steps rank those leftover masks with the
current block's (the reference's confidence covers every masked position up to the block's end). Trained checkpoints practically never pick ``[MASK]``;
small random ones do. By default (``commit_mask=False``) the mask token is never chosen, so every
block is fully decoded; ``commit_mask=True`` is the reference loop exactly (LLaDA ``generate``, and
the released Dynamic-dLLM ``generate`` that ``dcu-released`` is tested against).
"""

from __future__ import annotations

import attrs
import torch

from ..core.validators import boolean
from ..core.policy import UnmaskPolicy
from ..core.types import Commit, StepState
from .scores import choose_tokens, even_schedule, gumbel_argmax, masked_scores, probability_of, select_top_k


@attrs.define
class LowConfidence(UnmaskPolicy):
    """LLaDA low-confidence remasking: commit the scheduled top-k most confident masked tokens."""

    exact_in_batches = True
    #: True: the argmax may be [MASK] and a block ends after its scheduled steps (the reference loop)
    commit_mask: bool = attrs.field(default=False, validator=boolean)

    def confidence(self, state: StepState, logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return probability_of(logits, tokens)

    @property
    def logits_rows(self) -> str:
        """``commit_mask`` candidates include masks earlier blocks left, so it reads every response row."""
        return "response" if self.commit_mask else "block"

    def commit(self, state: StepState, logits: torch.Tensor) -> Commit:
        if state.step_in_block == 0:
            self.schedule = even_schedule(state.block_masked.sum(1), state.steps_per_block)
        if self.commit_mask:  # candidates: every mask up to the block's end, as the reference loop
            logits = logits[:, :state.block_end - state.prompt_length]
            masked = state.masked[:, state.prompt_length:state.block_end]
            tokens = gumbel_argmax(logits, state.config.temperature, state.generator)
        else:
            masked = state.block_masked
            tokens = choose_tokens(logits, state.config.temperature, state.generator, state.mask_id)
        scores = masked_scores(self.confidence(state, logits, tokens), masked)
        k = self.schedule[:, min(state.step_in_block, state.steps_per_block - 1)]
        return Commit(positions=select_top_k(scores, torch.minimum(k, masked.sum(1))), tokens=tokens,
                      end_block=self.commit_mask and state.step_in_block == state.steps_per_block - 1)


@attrs.define
class RandomRemasking(LowConfidence):
    """LLaDA random remasking: commit the scheduled number of masked tokens, chosen uniformly."""

    exact_in_batches = False  # random draws depend on the batch shape

    def confidence(self, state: StepState, logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return torch.rand(tokens.shape, generator=state.generator, device=tokens.device)
