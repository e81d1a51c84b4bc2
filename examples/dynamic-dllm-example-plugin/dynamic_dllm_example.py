"""An example dynamic-dllm plugin: the ``left-to-right`` unmask policy.

It commits the *leftmost* masked positions of the current block, as many per step as LLaDA's
even schedule allows — an autoregressive-like order, handy as a baseline for how much a
confidence-ordered policy gains. Installed with pip, it is found through the ``dynamic_dllm``
entry-point group; no import by the user is needed.

The policy is a plain class: the engine calls ``start(run)`` once per generation and
``commit(state, logits)`` every step. Only the registration function below is a pluggy hook.
"""

import attrs
import torch

import dynamic_dllm
from dynamic_dllm.policies.scores import choose_tokens, even_schedule, masked_scores, select_top_k


@attrs.define
class LeftToRight(dynamic_dllm.UnmaskPolicy):
    """Commit the leftmost masked block positions, LLaDA's scheduled count per step (tokens as LLaDA chooses them)."""

    def commit(self, state, logits):
        masked = state.block_masked
        if state.step_in_block == 0:
            self.schedule = even_schedule(masked.sum(1), state.steps_per_block)
        leftness = -torch.arange(masked.shape[1], device=masked.device, dtype=torch.float64).expand(masked.shape)
        k = torch.minimum(self.schedule[:, min(state.step_in_block, state.steps_per_block - 1)], masked.sum(1))
        tokens = choose_tokens(logits, state.config.temperature, state.generator, state.mask_id)
        return dynamic_dllm.Commit(positions=select_top_k(masked_scores(leftness, masked), k), tokens=tokens)


@dynamic_dllm.hookimpl
def register_unmask_policies(register):
    register("left-to-right", LeftToRight)
