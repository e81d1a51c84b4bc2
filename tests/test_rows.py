"""Row sets: host-known sizes, padding that is never written, unions (hypothesis)."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dynamic_dllm.core.rows import RowSet, union


def test_from_mask_pads_to_the_largest_row():
    rows = torch.tensor([[False, True, False, True], [False, False, False, False], [True, True, True, False]])
    s = RowSet.from_mask(rows)
    assert s.size == 3 and s.index[0, :2].tolist() == [1, 3] and s.index[2].tolist() == [0, 1, 2]
    assert s.writable.tolist() == [[True, True, False], [False] * 3, [True] * 3]
    assert torch.equal(s.mask(3, 4, "cpu"), rows)
    assert RowSet.from_mask(torch.ones(2, 4, dtype=torch.bool)).covers(4)  # every row: a span (dense layer)


def test_top_takes_ties_left_to_right():
    scores = torch.tensor([[0.5, 0.9, 0.5, 0.5], [0.0, 0.0, 0.0, 0.0]])
    s = RowSet.top(scores, torch.tensor([2, 3]), 3)
    assert s.mask(2, 4, "cpu").tolist() == [[True, True, False, False], [True, True, True, False]]
    assert s.chosen(2, 4) == 5


def test_spans_merge_when_they_touch():
    merged = union([RowSet.span(4, 8), RowSet.span(0, 4), None], 2, 10, "cpu")
    assert merged.is_span and (merged.start, merged.size) == (0, 8)
    apart = union([RowSet.span(0, 2), RowSet.span(5, 6)], 2, 10, "cpu")
    assert not apart.is_span and apart.size == 3
    assert apart.mask(2, 10, "cpu")[0].tolist() == [True, True, False, False, False, True, False, False, False, False]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.integers(1, 3), st.integers(1, 12), st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 12)), min_size=1, max_size=3))
def test_union_is_the_or_of_masks_with_distinct_writable_entries(B, L, parts):
    sets = []
    for seed, size in parts:
        g = torch.Generator().manual_seed(seed)
        size = min(size, L)
        if seed % 3 == 0:
            start = seed % (L - size + 1)
            sets.append(RowSet.span(start, start + size))
        else:
            k = torch.randint(0, size + 1, (B,), generator=g)
            sets.append(RowSet.top(torch.rand(B, L, generator=g), k, size))
    u = union(sets, B, L, "cpu")
    want = torch.zeros(B, L, dtype=torch.bool)
    for s in sets:
        want |= s.mask(B, L, "cpu")
    if u is None:
        assert not want.any()
        return
    assert torch.equal(u.mask(B, L, "cpu"), want)
    if not u.is_span:
        assert u.size == sum(s.size for s in sets if s.size)  # padded, never synced
        targets = u.targets(L)
        for b in range(B):
            written = targets[b][targets[b] < L].tolist()
            assert len(written) == len(set(written)) == int(want[b].sum())


def test_a_set_covering_every_row_is_the_union():
    idx = RowSet.top(torch.rand(2, 6), torch.tensor([2, 1]), 2)
    u = union([idx, RowSet.span(0, 6)], 2, 6, "cpu")
    assert u.covers(6)  # the executor then runs the dense layer, not an index of 8 rows
