"""Adaptive Parallel Decoding as the released code runs it (``apd-released``) — TianyiWu233/DYNAMIC-DLLM
@ 43cb93b7, ``utils/generate_function.py`` (``generate_pd``, ``update_pd_threshold``,
``get_transfer_index_pd``). The paper's rule with its defaults is ``apd``
(:mod:`~dynamic_dllm.policies.apd`); this reproduces the released code's tokens and NFE.

Per forward ``t`` (counted over the whole generation; τ and the previous distributions are never
reset between blocks), in float64, with ``P = softmax(z)`` for **every response position**
(:attr:`logits_rows` = ``"response"``) and ``M`` the masked positions of the current block:

* ``t = 1``: ``τ = tau0`` (``per-token``: ``τ_i = tau0`` for every response position);
* ``t > 1``, *also on a block's first forward*: ``c = 1 − P(2nd largest)``,
  ``H = 1 − cos(P, P at forward t − 1)``;
  ``global``: ``τ ← τ − α·mean_M(c) + β·mean_M(H)`` (one τ for the batch);
  ``per-token``: ``τ_i ← τ_i − α·c_i + β·H_i`` for every response position, future blocks included;
* tokens ``x0 = argmax(exp(z))`` (temperature 0; else ``exp(z) / (−log u)^T``), confidence
  ``p = P[x0]``; commit ``{i ∈ M : p_i ≥ τ_i} ∪ {argmax_{i ∈ M} p_i}`` per batch row.

Released defaults α = 0.01, β = 0.15, τ₀ = 0.9. Departures from the paper's ``apd``: α, β (paper
App. B.2: 0.001, 0.0008); τ carried across blocks and updated on a block's first forward; the
per-token update runs on positions that are not masked or not yet in their block. ``global`` mode
reads ``mean_M`` through a boolean selection (one host sync per step), as released.
"""

from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F

from ..core.policy import RunInfo, UnmaskPolicy
from ..core.types import Commit, StepState
from .compose import number_in

MODES = ("global", "per-token")


@attrs.define
class ReleasedAdaptiveParallelDecoding(UnmaskPolicy):
    """Dynamic-dLLM APD as released (generate_pd): tau over the whole response, never reset, alpha=0.01, beta=0.15."""

    mode: str = attrs.field(default="global")
    tau0: float = attrs.field(default=0.9, validator=number_in("APD initial threshold", 0.0, 1.0))
    alpha: float = attrs.field(default=0.01, validator=number_in("APD concentration weight", low=0.0))
    beta: float = attrs.field(default=0.15, validator=number_in("APD instability weight", low=0.0))

    logits_rows = "response"
    #: global mode shares one τ across the batch, per-token mode advances τ for waiting rows: a batch
    #: does not decode as its rows alone (the released code decodes one sequence at a time)
    exact_in_batches = False

    @mode.validator
    def _check_mode(self, attribute, value):
        if value not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {value!r} (released pd_mode 1, 2)")

    def start(self, run: RunInfo) -> None:
        self.forward = 0
        self.previous = None
        self.tau = float(self.tau0)
        self.P = run.prompt_length

    def _update(self, probs: torch.Tensor, masked: torch.Tensor) -> None:
        if self.forward > 1 and self.previous is not None:
            peak = 1 - torch.topk(probs, 2, dim=-1).values[..., 1]
            instability = 1 - F.cosine_similarity(probs, self.previous, dim=-1)
            if self.mode == "global":
                self.tau = self.tau - self.alpha * torch.mean(peak[masked]) + self.beta * torch.mean(instability[masked])
            else:
                self.tau = self.tau - self.alpha * peak + self.beta * instability
        elif self.mode == "per-token":
            self.tau = torch.full(probs.shape[:2], float(self.tau), dtype=torch.float64, device=probs.device)
        self.previous = probs

    def commit(self, state: StepState, logits: torch.Tensor) -> Commit:
        self.forward += 1
        P = self.P
        bs, be = state.block_start - P, state.block_end - P
        masked = state.masked[:, P:].clone()
        masked[:, be:] = False
        probs = F.softmax(logits.to(torch.float64), dim=-1)
        self._update(probs, masked)
        weights = logits.exp()
        if state.config.temperature > 0:
            noise = torch.rand(logits.shape, generator=state.generator, device=logits.device, dtype=logits.dtype)
            weights = weights / (-torch.log(noise)) ** state.config.temperature
        tokens = torch.argmax(weights, dim=-1)
        confidence = torch.gather(probs, -1, tokens[..., None]).squeeze(-1)
        confidence = torch.where(masked, confidence, torch.finfo(torch.float64).min)
        chosen = masked & (confidence >= self.tau)
        chosen = (chosen | torch.zeros_like(chosen).scatter_(1, confidence.argmax(1, keepdim=True), True)) & masked
        return Commit(positions=chosen[:, bs:be], tokens=tokens[:, bs:be])
