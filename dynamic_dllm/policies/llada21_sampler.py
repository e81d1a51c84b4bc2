"""LLaDA2.1's editing sampler (``llada21``): the ``generate`` of its checkpoints'
``modeling_llada21_moe.py`` — threshold decoding of masks plus token editing.

Per block, every step, with tokens ``x`` = argmax (greedy) or this engine's Gumbel draw at T > 0 and
confidence ``c = softmax(z)[x]``, on masks M and decoded response positions E (not masks, not the
prompt)::

    masks:  H = {i ∈ M : c_i > threshold};  commit H if |H| ≥ n, else the min(n, |M|) most confident
    edits:  {i ∈ E : c_i > editing_threshold and x_i ≠ current token}        (overwritten)

with ``n = num_to_transfer``. A block goes on after its masks are gone — refinement steps that only
edit — and a row's block ends after a step that began without masks and edited nothing, or when one
more mask-free step would exceed ``max_post_steps`` (the reference's counter of steps begun without
masks). A batch row whose block ended (or that waits with no masks from the block's start: it
stopped at EOS) commits nothing more and waits for the others (the commit's ``busy`` marks the rows
still refining, which do not wait); the block ends when every row's has. One host read per step
(whether every row is done). Ties among equal confidences go to the lower position.
"""

from __future__ import annotations

from typing import Optional

import attrs
import torch

from ..core.policy import UnmaskPolicy
from ..core.types import Commit, StepState
from ..core.validators import integer, number_in
from .scores import choose_tokens, masked_scores, probability_of, select_top_k


@attrs.define
class LLaDA21Sampler(UnmaskPolicy):
    """LLaDA2.1: threshold decoding of masks (at least num_to_transfer per step) plus editing of decoded tokens above editing_threshold, with up to max_post_steps mask-free refinement steps per block."""

    exact_in_batches = True

    threshold: float = attrs.field(default=0.95, validator=number_in("LLaDA2.1 mask threshold", 0.0, 1.0))
    editing_threshold: float = attrs.field(default=0.9, validator=number_in("LLaDA2.1 editing threshold", 0.0, 1.0))
    max_post_steps: int = attrs.field(default=16, validator=integer(0, note="mask-free refinement steps per block"))
    num_to_transfer: int = attrs.field(default=1, validator=integer(1, note="masks committed per step at least"))
    _post: Optional[torch.Tensor] = attrs.field(default=None, init=False)
    _done: Optional[torch.Tensor] = attrs.field(default=None, init=False)

    @property
    def extra_steps_per_block(self) -> int:
        """Steps a block may take beyond its mask count: the refinement steps and the final one."""
        return self.max_post_steps + 1

    def commit(self, state: StepState, logits: torch.Tensor) -> Commit:
        masked = state.block_masked
        B = masked.shape[0]
        if state.step_in_block == 0:
            self._post = torch.zeros(B, dtype=torch.long, device=masked.device)
            self._done = torch.zeros(B, dtype=torch.bool, device=masked.device)
            if state.waiting:
                self._done[list(state.waiting)] = True
        tokens = choose_tokens(logits, state.config.temperature, state.generator, state.mask_id)
        confidence = probability_of(logits, tokens)
        live, active = ~self._done, masked.any(1)
        post = self._post + (live & ~active)
        scores = masked_scores(confidence, masked)
        high = scores > self.threshold
        n_left = masked.sum(1)
        top = select_top_k(scores, torch.clamp(n_left, max=self.num_to_transfer))
        positions = torch.where((high.sum(1) >= self.num_to_transfer)[:, None], high, top) & masked & live[:, None]
        decoded = ~masked & (torch.arange(state.block_start, state.block_end, device=masked.device) >= state.prompt_length)
        current = state.x[:, state.block_start:state.block_end]
        edits = (confidence > self.editing_threshold) & decoded & (tokens != current) & live[:, None]
        left_after = n_left - positions.sum(1)
        ends = live & ((~active & ~edits.any(1)) | ((left_after == 0) & (post + 1 > self.max_post_steps)))
        self._post, self._done = post, self._done | ends
        finished = bool(self._done.all())
        return Commit(positions=positions, tokens=tokens, edits=edits, end_block=finished, continue_block=not finished,
                      busy=~self._done)
