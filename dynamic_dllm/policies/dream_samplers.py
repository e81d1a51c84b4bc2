"""Dream's samplers (``Dream`` ``generation_utils.py``: ``origin``, ``maskgit_plus``,
``topk_margin``, ``entropy``), applied per block as Fast-dLLM's block variant does.

Per block, ``timesteps = linspace(1, eps, steps_per_block + 1)``; step i has ``t = ts[i]``,
``s = ts[i+1]``. Tokens come from ``sample_tokens``: logits / T, optional top-p / top-k filter
(by default the checkpoint's effective ones, as ``diffusion_generate`` called without them: top-k 50
on a config.json that sets none — transformers' inherited default — which changes ``entropy`` and
``margin`` confidences; ``top_k=none`` turns it off),
argmax at T = 0 else a categorical draw; its confidence is the token's probability
(``maskgit-plus``), ``p1 - p2`` (``margin``) or the negative entropy (``entropy``). Confidence
rules commit ``int(n_masked * (1 - s/t))`` top-confidence masked positions (all at the last step;
with ``alg_temp > 0`` drawn from ``softmax(conf / alg_temp)`` without replacement); ``origin``
commits each masked position independently with probability ``1 - s/t`` (1 at the last step).
Deviations from Dream: the mask token is never chosen as a token; ``n_masked`` is counted per row, not as the batch mean, so a batch decodes
like its rows run alone. These rules may commit nothing at an early step (``int`` rounds down);
the block still ends at its last step.
"""

from __future__ import annotations

from typing import Optional, Union

import attrs
import torch

from ..core.validators import number_in
from ..core.policy import UnmaskPolicy
from ..core.types import Commit, StepState
from .scores import masked_scores, negative_entropy, select_top_k, top2_margin


def filter_top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability reaches ``top_p`` (the first always kept)."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    cumulative = torch.softmax(sorted_logits, -1).cumsum(-1)
    remove = cumulative > top_p
    remove[..., 1:] = remove[..., :-1].clone()
    remove[..., 0] = False
    return logits.masked_fill(remove.scatter(-1, order, remove), float("-inf"))


def filter_top_k(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


CHECKPOINT = "checkpoint"


def _top_k(instance, attribute, value):
    if value in (None, CHECKPOINT):
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"top_k must be a positive integer, none or checkpoint; got {value!r}")


def _top_p(instance, attribute, value):
    if value in (None, CHECKPOINT):
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value <= 1:
        raise ValueError(f"top_p must be a number in (0, 1], none or checkpoint; got {value!r}")


@attrs.define
class DreamSampler(UnmaskPolicy):
    """Dream ``maskgit_plus``: commit the most probable masked tokens on Dream's count schedule."""

    eps: float = attrs.field(default=1e-3, validator=number_in("final timestep of linspace(1, eps)", 0.0, 1.0, low_open=True, high_open=True))
    #: ``"checkpoint"``: what Dream's ``diffusion_generate`` uses for this checkpoint when the caller
    #: passes nothing (:func:`~dynamic_dllm.models.dream.diffusion_generate_defaults`: top_k 50 unless
    #: config.json says otherwise); ``None``: no filter
    top_p: Union[float, str, None] = attrs.field(default=CHECKPOINT, validator=_top_p)
    top_k: Union[int, str, None] = attrs.field(default=CHECKPOINT, validator=_top_k)
    alg_temp: Optional[float] = attrs.field(default=None, validator=number_in("confidence sampling temperature", low=0.0, optional=True))
    #: the filters in effect for this generation (``top_p`` / ``top_k`` with ``"checkpoint"`` resolved)
    filters: dict = attrs.field(init=False, factory=dict, repr=False)

    @property
    def exact_in_batches(self) -> bool:
        """Per-row rule; ``alg_temp`` draws the committed positions (batch-shape dependent)."""
        return not self.alg_temp

    def sample(self, state: StepState, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(tokens, probability of each token, filtered probabilities)."""
        T = state.config.temperature
        z = logits.float() / T if T > 0 else logits.float()
        top_p, top_k = self.filters["top_p"], self.filters["top_k"]
        if top_p is not None and top_p < 1:
            z = filter_top_p(z, top_p)
        if top_k is not None:
            z = filter_top_k(z, top_k)
        probs = torch.softmax(z, -1)
        # the mask token is never a choice (committing it would commit nothing); probabilities keep it
        choosable = probs.index_fill(-1, torch.tensor([state.mask_id], device=probs.device), 0.0)
        if T > 0:
            flat = choosable.flatten(0, 1)
            flat = torch.where(flat.sum(-1, keepdim=True) > 0, flat, torch.ones_like(flat))
            tokens = torch.multinomial(flat, 1, generator=state.generator).view(probs.shape[:-1])
        else:
            tokens = choosable.argmax(-1)
        conf = probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        return tokens, conf, probs

    def confidence(self, tokens, conf, probs) -> torch.Tensor:
        return conf

    def start(self, run) -> None:
        self.filters = {key: run.sampling_defaults.get(key) if value == CHECKPOINT else value
                        for key, value in (("top_p", self.top_p), ("top_k", self.top_k))}
        n = run.config.steps_per_block
        ts = torch.linspace(1, self.eps, n + 1, dtype=torch.float64)
        #: ``1 - s/t`` per step of a block (host floats, computed once: no sync per step)
        self.fractions = [*(1 - ts[1:n] / ts[:n - 1]).tolist(), 1.0] if n > 1 else [1.0]

    def fraction(self, state: StepState) -> float:
        """``1 - s/t`` for this step (1 at the block's last step)."""
        return self.fractions[min(state.step_in_block, len(self.fractions) - 1)]

    def commit(self, state: StepState, logits: torch.Tensor) -> Commit:
        masked = state.block_masked
        tokens, conf, probs = self.sample(state, logits)
        frac = self.fraction(state)
        n_masked = masked.sum(1)
        k = n_masked if frac >= 1.0 else (n_masked.double() * frac).long()
        scores = masked_scores(self.confidence(tokens, conf, probs), masked)
        if self.alg_temp:
            weights = torch.softmax(scores / self.alg_temp, -1).nan_to_num(0.0)
            kmax = int(k.max())
            chosen = torch.zeros_like(masked)
            if kmax > 0:
                safe = torch.where(masked.any(1, keepdim=True), weights, torch.ones_like(weights))
                drawn = torch.multinomial(safe, kmax, replacement=False, generator=state.generator)
                keep = torch.arange(kmax, device=k.device) < k.unsqueeze(1)
                chosen.scatter_(1, drawn, keep)
            return Commit(positions=chosen & masked, tokens=tokens)
        return Commit(positions=select_top_k(scores, k), tokens=tokens)


@attrs.define
class DreamMargin(DreamSampler):
    """Dream ``topk_margin``: confidence = top-1 minus top-2 probability."""

    def confidence(self, tokens, conf, probs) -> torch.Tensor:
        return top2_margin(probs)


@attrs.define
class DreamEntropy(DreamSampler):
    """Dream ``entropy``: confidence = negative entropy of the predicted distribution."""

    def confidence(self, tokens, conf, probs) -> torch.Tensor:
        return negative_entropy(probs)


@attrs.define
class DreamOrigin(DreamSampler):
    """Dream ``origin``: each masked position is committed with probability 1 - s/t."""

    exact_in_batches = False  # random draws depend on the batch shape

    def commit(self, state: StepState, logits: torch.Tensor) -> Commit:
        masked = state.block_masked
        tokens, _, _ = self.sample(state, logits)
        frac = self.fraction(state)
        draw = torch.rand(masked.shape, generator=state.generator, device=masked.device, dtype=torch.float64)
        return Commit(positions=masked & (draw < frac), tokens=tokens)
