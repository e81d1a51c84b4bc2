"""Reusable pieces of unmask policies: token choice, confidence scores and selection rules.

All functions take block logits ``[B, Lb, V]`` (or scores ``[B, Lb]``) and are vectorised over
batch and positions.
"""

from __future__ import annotations

import torch


def gumbel_argmax(logits: torch.Tensor, temperature: float, generator: torch.Generator) -> torch.Tensor:
    """LLaDA's token choice: ``argmax(exp(z) / (-log u)^T)`` with ``u ~ U(0,1)`` in float64
    (= argmax of ``z/T + Gumbel``); plain argmax at ``T == 0``."""
    if temperature == 0:
        return logits.argmax(-1)
    z = logits.to(torch.float64)
    u = torch.rand(z.shape, generator=generator, dtype=torch.float64, device=z.device)
    return (z.exp() / (-torch.log(u)) ** temperature).argmax(-1)


def choose_tokens(logits: torch.Tensor, temperature: float, generator: torch.Generator, mask_id: int) -> torch.Tensor:
    """:func:`gumbel_argmax` over every token but the mask token: committing ``[MASK]`` would commit
    nothing (LLaDA's sampler can pick it and then stall a block). If float64 ``exp(z)`` underflows
    to a tie of zeros the greedy choice is taken."""
    if not 0 <= mask_id < logits.shape[-1]:
        return gumbel_argmax(logits, temperature, generator)
    choice = logits.index_fill(-1, torch.tensor([mask_id], device=logits.device), float("-inf"))
    tokens = gumbel_argmax(choice, temperature, generator)
    return torch.where(tokens == mask_id, choice.argmax(-1), tokens)


def probability_of(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``softmax(z)[token]`` (in the logits' dtype, as LLaDA): the chosen token's probability."""
    return torch.softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def top2_margin(probs: torch.Tensor) -> torch.Tensor:
    """``p(1) - p(2)``: gap between the two most likely tokens."""
    top = probs.topk(2, dim=-1).values
    return top[..., 0] - top[..., 1]


def negative_entropy(probs: torch.Tensor) -> torch.Tensor:
    """``sum_v p_v log(p_v + 1e-10)`` (Dream's ``neg_entropy``; higher = more certain)."""
    return (probs * torch.log(probs + 1e-10)).sum(-1)


def masked_scores(scores: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Scores of masked positions; ``-inf`` elsewhere so they are never selected."""
    return torch.where(masked, scores.to(torch.float64), torch.full_like(scores, float("-inf"), dtype=torch.float64))


def select_top_k(scores: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Bool ``[B, Lb]``: the ``k[b]`` highest-scoring positions of each row (ties: lower index
    first). ``k`` must not exceed the number of finite scores of its row."""
    order = scores.argsort(dim=-1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(scores.shape[-1], device=scores.device).expand_as(order))
    return ranks < k.unsqueeze(-1)


def even_schedule(n_masked: torch.Tensor, steps: int) -> torch.Tensor:
    """LLaDA's ``get_num_transfer_tokens``: ``[B, steps]`` counts ``n // steps`` each, plus one on
    the first ``n % steps`` steps (a linear noise schedule commits equally many per step)."""
    base = (n_masked // steps).unsqueeze(1)
    rem = (n_masked % steps).unsqueeze(1)
    return base + (torch.arange(steps, device=n_masked.device) < rem).long()
