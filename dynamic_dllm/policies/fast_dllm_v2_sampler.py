"""Fast-dLLM v2's sub-block threshold sampler (``fast-dllm-v2``): the ``generate`` of the
Fast_dLLM_v2 checkpoints' ``modeling.py`` (model card: ``small_block_size=8, threshold=0.9``).

Each block is decoded in sub-blocks of ``sub_block`` positions (default ``min(8, block_length)``; it
must divide ``block_length``) aligned to the block start, left to right: a step works on the first sub-block that still has masks M. Tokens: the argmax (greedy) or,
at temperature T > 0, this engine's Gumbel draw; confidence ``c = softmax(z)[token]`` (the logits'
dtype). Commit::

    { i ∈ M : c_i > threshold }  ∪  { argmax_{i ∈ M} c_i }

(strictly above; ``threshold ≥ 1`` = one token per step). On a block-causal model with shifted
logits (Fast-dLLM v2) the block's first position, when masked, is committed alone first by its
argmax — the reference predicts it autoregressively from the previous block's last position once
that block is complete (or from the prompt's last token when the prompt fills whole blocks) — and
the sub-blocks follow. Ties among equal confidences go to the lower position (``argmax``'s first).
"""

from __future__ import annotations

from typing import Optional

import attrs
import torch

from ..core.policy import RunInfo, UnmaskPolicy
from ..core.types import Commit, StepState
from ..core.validators import integer, number_in
from .scores import choose_tokens, masked_scores, probability_of


@attrs.define
class FastDllmV2Sampler(UnmaskPolicy):
    """Fast-dLLM v2: sub-blocks left to right; in the current one every mask above the threshold plus the most confident (first token of a block autoregressive on Fast-dLLM v2)."""

    exact_in_batches = True

    threshold: float = attrs.field(default=0.9, validator=number_in("Fast-dLLM v2 confidence threshold", 0.0, 1.0))
    sub_block: Optional[int] = attrs.field(default=None, validator=integer(1, optional=True, note="none: min(8, block_length)"))
    _width: int = attrs.field(default=8, init=False)
    _ar_first: bool = attrs.field(default=False, init=False)

    def start(self, run: RunInfo) -> None:
        Lb = run.config.block_length
        self._width = min(8, Lb) if self.sub_block is None else self.sub_block
        if Lb % self._width:
            raise ValueError(f"fast-dllm-v2: sub_block={self._width} must divide block_length={Lb}")
        self._ar_first = run.block_causal and run.logit_shift == 1

    def commit(self, state: StepState, logits: torch.Tensor) -> Commit:
        masked = state.block_masked
        tokens = choose_tokens(logits, state.config.temperature, state.generator, state.mask_id)
        index = torch.arange(masked.shape[1], device=masked.device)
        first_masked = torch.where(masked, index, masked.shape[1]).amin(1, keepdim=True)
        current = masked & (index // self._width == first_masked // self._width)
        if self._ar_first:  # the block's first position first, alone
            current = torch.where(masked[:, :1], index == 0, current)
        scores = masked_scores(probability_of(logits, tokens), current)
        best = index == scores.argmax(1, keepdim=True)
        return Commit(positions=((scores > self.threshold) | best) & current, tokens=tokens)
