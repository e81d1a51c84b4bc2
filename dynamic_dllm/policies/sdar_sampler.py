"""SDAR's block sampler (``sdar``): JetAstra/SDAR's ``block_diffusion_generate`` as its paper
evaluation runs it (``evaluation/opencompass/opencompass/models/huggingface_bd3.py``).

Per block, step i of ``S = steps_per_block`` steps commits ``k_i = block_length // S`` tokens, plus
one on the first ``block_length mod S`` steps — whatever the block's mask count (a first block
holding the prompt's tail has fewer masks and finishes sooner; ``low-confidence`` would spread its
masks over all S steps). Tokens: the argmax (greedy: the reference's ``top_k=1``) or, at
temperature T > 0, this engine's Gumbel draw; confidence ``c = softmax(z)[token]`` (the
reference's unfiltered probabilities). Among the block's masks M:

* ``threshold ≥ 1`` (``low_confidence_static``): commit the ``k_i`` most confident;
* ``threshold < 1`` (``low_confidence_dynamic``): ``H = {i ∈ M : c_i > threshold}``; commit H if
  ``|H| ≥ k_i``, else the ``k_i`` most confident.

Never more than the masks left (the reference's ``where(mask, x0, x)``). Ties among equal
confidences go to the lower position (the reference's ``torch.topk`` leaves them unspecified).
The paper's settings: block 4, 4 steps, threshold 1.0 (static) or 0.95 (dynamic).

LLaDA2.0's ``generate`` (its checkpoints' ``modeling_llada2_moe.py``) is the same rule — schedule
``block_length // steps`` plus one on the first ``block_length mod steps`` steps, every mask above the
threshold when at least k are, else the k most confident — with threshold 0.95 by default: the
``llada2`` preset (:data:`LLADA2_SAMPLER`).
"""

from __future__ import annotations

import attrs
import torch

from ..core.policy import UnmaskPolicy
from ..core.registry import Alias
from ..core.types import Commit, StepState
from ..core.validators import number_in
from .scores import choose_tokens, masked_scores, probability_of, select_top_k


@attrs.define
class SdarSampler(UnmaskPolicy):
    """SDAR block sampler: k = block_length/steps per step; static top-k, or (threshold < 1) every token above the threshold when at least k are."""

    exact_in_batches = True

    threshold: float = attrs.field(default=1.0, validator=number_in("SDAR confidence threshold", 0.0, 1.0))

    def commit(self, state: StepState, logits: torch.Tensor) -> Commit:
        S, Lb = state.steps_per_block, state.block_end - state.block_start
        step = min(state.step_in_block, S - 1)
        k = Lb // S + int(step < Lb % S)
        masked = state.block_masked
        tokens = choose_tokens(logits, state.config.temperature, state.generator, state.mask_id)
        scores = masked_scores(probability_of(logits, tokens), masked)
        top = select_top_k(scores, torch.minimum(torch.full_like(masked[:, 0], k, dtype=torch.long), masked.sum(1)))
        if self.threshold < 1.0:
            high = scores > self.threshold
            top = torch.where((high.sum(1) >= k)[:, None], high, top)
        return Commit(positions=top, tokens=tokens)


#: LLaDA2.0's sampler: ``sdar`` with its default threshold 0.95
LLADA2_SAMPLER = Alias("sdar:threshold=0.95", params={"threshold": "sdar.threshold"},
                       summary="LLaDA2.0 generate = sdar:threshold=0.95 (dynamic: every mask above 0.95 when at least k are).")
