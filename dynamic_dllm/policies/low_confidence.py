"""LLaDA's baseline samplers (``ML-GSAI/LLaDA`` ``generate.py``).

Per block the number of tokens per step is the even split of the block's masks over the block's
steps, remainder to the first steps. Each step: tokens ``x0 = argmax(z/T + Gumbel)`` (float64
noise), confidence = ``softmax(z)[x0]`` (``low-confidence``) or ``U(0,1)`` (``random``); the
scheduled number of most confident masked block positions are committed ("low-confidence
remasking" = keep the top-k). Committed tokens never change. Deviation from the
reference: the mask token itself is never chosen as a token (it would commit nothing and stall).
"""

from __future__ import annotations

import attrs
import torch

from ..core.policy import UnmaskPolicy
from ..core.types import Commit, StepState
from .scores import choose_tokens, even_schedule, masked_scores, probability_of, select_top_k


@attrs.define
class LowConfidence(UnmaskPolicy):
    """LLaDA low-confidence remasking: commit the scheduled top-k most confident masked tokens."""

    def confidence(self, state: StepState, logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return probability_of(logits, tokens)

    def commit(self, state: StepState, logits: torch.Tensor) -> Commit:
        masked = state.block_masked
        if state.step_in_block == 0:
            self.schedule = even_schedule(masked.sum(1), state.steps_per_block)
        tokens = choose_tokens(logits, state.config.temperature, state.generator, state.mask_id)
        scores = masked_scores(self.confidence(state, logits, tokens), masked)
        k = self.schedule[:, min(state.step_in_block, state.steps_per_block - 1)]
        return Commit(positions=select_top_k(scores, torch.minimum(k, masked.sum(1))), tokens=tokens)


@attrs.define
class RandomRemasking(LowConfidence):
    """LLaDA random remasking: commit the scheduled number of masked tokens, chosen uniformly."""

    def confidence(self, state: StepState, logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return torch.rand(tokens.shape, generator=state.generator, device=tokens.device)
