"""Invariants of the mixture-of-experts FFN parts (core/moe.py), as property tests.

Row locality is what lets the partial-layer executor route only the rows it recomputes: a row's
output does not depend on which other rows share the call. The routers' choices obey their rules:
k distinct experts per row; softmax weights are the top-k probabilities (unnormalised); the
group-limited router picks only experts of its kept groups and its weights sum to the scale (k > 1)."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from dynamic_dllm.core.moe import GroupLimitedMoE, SparseMoE


def _init(moe, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in moe.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return moe


def _grouped(n_group, per_group, topk_group, k, seed):
    """A group-limited mixture whose kept groups hold at least its k experts, with a shared expert."""
    return _init(GroupLimitedMoE(8, 6, n_group * per_group, min(k, topk_group * per_group), n_group, topk_group, 2.5, 4), seed)


moes = st.one_of(
    st.builds(lambda E, k, s: _init(SparseMoE(8, 6, E, min(k, E)), s),
              st.integers(1, 6), st.integers(1, 4), st.integers(0, 999)),
    st.builds(lambda G, per, kg, k, s: _grouped(G, per, min(kg, G), k, s),
              st.integers(1, 3), st.integers(2, 3), st.integers(1, 3), st.integers(1, 4), st.integers(0, 999)),
)


@given(moe=moes, n=st.integers(1, 12), seed=st.integers(0, 999), data=st.data())
def test_each_row_is_routed_by_itself(moe, n, seed, data):
    x = torch.randn(n, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    moe = moe.double()
    rows = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n))
    torch.testing.assert_close(moe(x[rows]), moe(x)[rows], atol=1e-12, rtol=0)


@given(moe=moes, n=st.integers(1, 12), seed=st.integers(0, 999))
def test_routing_rules(moe, n, seed):
    x = torch.randn(n, 8, generator=torch.Generator().manual_seed(seed))
    weights, experts = moe.route(x)
    assert experts.shape == (n, moe.top_k)
    assert all(len(set(row)) == moe.top_k for row in experts.tolist())  # k distinct experts
    if isinstance(moe, GroupLimitedMoE):
        per = moe.n_experts // moe.n_group
        assert all(len({e // per for e in row}) <= moe.topk_group for row in experts.tolist())
        scores = torch.sigmoid(x @ moe.gate.weight.T).gather(1, experts) * 2.5
        want = torch.full((n,), 2.5) if moe.top_k > 1 else scores[:, 0]  # one expert: its score, not normalised
        torch.testing.assert_close(weights.sum(1), want, atol=1e-5, rtol=0)
    else:
        probs = torch.softmax(moe.gate(x), -1)
        torch.testing.assert_close(weights, probs.gather(1, experts), atol=1e-6, rtol=0)
        assert bool((weights[:, :-1] >= weights[:, 1:]).all())  # the top-k, not renormalised
