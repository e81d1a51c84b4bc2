"""The partial-layer executor against the plain forward and against a naive per-row reference."""

from __future__ import annotations

import copy

import torch

from dynamic_dllm.core.architecture import apply_rope, ffn, key_heads, query_heads, rope_cos_sin
from dynamic_dllm.core.executor import PartialLayerExecutor
from dynamic_dllm.core.rows import RowSet, union


def _canvas(model, B=2, L=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 250, (B, L), generator=g)
    x[:, L // 2:] = model.mask_id
    valid = torch.ones(B, L, dtype=torch.bool)
    positions = torch.arange(L).expand(B, L)
    return x, valid, positions


def test_all_rows_every_step_equals_plain_forward(any_model):
    model = any_model.model
    x, valid, positions = _canvas(model)
    ex = PartialLayerExecutor(model, valid, positions)
    for step in range(3):
        x[:, 12 + step] = 65 + step  # the canvas changes between steps
        every = RowSet.span(0, x.shape[1])
        got = ex.forward(x, lambda layer, ctx: every, full=False, head_start=0, head_end=x.shape[1])
        torch.testing.assert_close(got, model(x), atol=1e-5, rtol=0)


def test_gather_path_with_all_rows_equals_plain_forward(any_model):
    """All rows but routed through the gather/scatter path (not the dense shortcut)."""
    model = any_model.model
    x, valid, positions = _canvas(model)
    ex = PartialLayerExecutor(model, valid, positions)
    ex.forward(x, None, full=True, head_start=0, head_end=1)
    x[:, 12] = 70
    B, L = x.shape
    every = RowSet.indexed(torch.arange(L).flip(0).expand(B, L))  # an index, not a span: the gather path
    got = ex.forward(x, lambda layer, ctx: every, full=False, head_start=0, head_end=L)
    torch.testing.assert_close(got, model(x), atol=1e-5, rtol=0)
    spans = [RowSet.span(0, 10), RowSet.span(10, L)]  # two spans through the slice path, one layer each way
    got = ex.forward(x, lambda layer, ctx: union(spans, B, L, x.device), full=False,
                     head_start=0, head_end=L)
    torch.testing.assert_close(got, model(x), atol=1e-5, rtol=0)


def _naive_layer(model, layer, x, rows, k_cache, v_cache, attn_cache, ffn_cache, positions):
    """Per-row loop straight from the semantics: rows in ``rows`` recompute everything; the rest
    reuse cached attention/FFN outputs on top of their current residual stream. ``k_cache`` holds
    rotated keys RoPE(K) at each row's position."""
    p = model.layer(layer)
    B, L, _ = x.shape
    H, Hkv, D = model.n_heads, model.n_kv_heads, model.head_dim
    k_cache, v_cache, attn_cache, ffn_cache = k_cache.clone(), v_cache.clone(), attn_cache.clone(), ffn_cache.clone()
    cos, sin = rope_cos_sin(positions, D, model.rope_theta)

    def rot(v, b, i):  # v [heads, D] at position i of row b
        half = D // 2
        rotated = torch.cat([-v[:, half:], v[:, :half]], -1)
        return v * cos[b, i] + rotated * sin[b, i]

    for b in range(B):
        for i in range(L):
            if rows[b, i]:
                xn = p.attn_norm(x[b, i])
                k_cache[b, i] = rot(key_heads(p, p.k_proj(xn), Hkv, D), b, i)
                v_cache[b, i] = p.v_proj(xn).view(Hkv, D)
    new_attn = attn_cache.clone()
    for b in range(B):
        keys = k_cache[b]  # [L, Hkv, D], rotated
        for i in range(L):
            if not rows[b, i]:
                continue
            q = rot(query_heads(p, p.q_proj(p.attn_norm(x[b, i])), H, D), b, i)
            out = []
            for h in range(H):
                kv = h // (H // Hkv)
                w = torch.softmax(keys[:, kv] @ q[h] / D ** 0.5, 0)
                out.append(w @ v_cache[b, :, kv])
            new_attn[b, i] = p.o_proj(torch.cat(out))
    h_all = x + new_attn
    new_ffn = ffn_cache.clone()
    for b in range(B):
        for i in range(L):
            if rows[b, i]:
                hn = p.ffn_norm(h_all[b, i])
                new_ffn[b, i] = ffn(p, hn)
    return h_all + new_ffn, k_cache, v_cache, new_attn, new_ffn


def _random_rows(shape, g, layer):
    """A padded union of two random row sets (overlapping, with unwritable padding entries, one
    batch row choosing nothing in layer 0) and its bool mask."""
    B, L = shape
    first = torch.rand(shape, generator=g) < 0.3
    if layer == 0:
        first[1] = False
    k = torch.randint(0, 5, (B,), generator=g)
    if layer == 0:
        k[1] = 0
    top = RowSet.top(torch.rand(shape, generator=g), k, 5)
    rows = union([RowSet.from_mask(first) if first.any() else None, top], B, L, first.device)
    return rows, first | top.mask(B, L, first.device)


def test_random_rows_match_naive_reference(any_model):
    # float64 so the naive loop (another summation order) must agree to rounding
    model = copy.deepcopy(any_model.model).double()
    x, valid, positions = _canvas(model, seed=3)
    B, L = x.shape
    ex = PartialLayerExecutor(model, valid, positions)
    ex.forward(x, None, full=True, head_start=0, head_end=1)  # fill the caches
    x[:, 12:15] = torch.tensor([66, 67, 68])
    g = torch.Generator().manual_seed(7)
    sets = [_random_rows(x.shape, g, layer) for layer in range(model.n_layers)]
    chosen = [mask for _, mask in sets]
    assert not chosen[0][1].any()
    seen = {}

    def rows_fn(layer, ctx):
        snapshot = [t[layer][:, :L].clone() for t in (ex.k_rot, ex.v, ex.attn, ex.ffn)]
        seen[layer] = (ctx.hidden.clone(), snapshot)
        return sets[layer][0]

    ex.forward(x, rows_fn, full=False, head_start=0, head_end=1)
    for layer in range(model.n_layers):
        hidden, (k_rot, v, a, f) = seen[layer]
        want_out, want_k, want_v, want_a, want_f = _naive_layer(model, layer, hidden, chosen[layer], k_rot, v, a, f, positions)
        for got, want in ((ex.k_rot[layer], want_k), (ex.v[layer], want_v), (ex.attn[layer], want_a),
                          (ex.ffn[layer], want_f)):
            torch.testing.assert_close(got[:, :L], want, atol=1e-9, rtol=1e-9)
        if layer + 1 < model.n_layers:
            torch.testing.assert_close(seen[layer + 1][0], want_out, atol=1e-9, rtol=1e-9)
    # rows never chosen keep their cached keys untouched
    untouched = ~chosen[0]
    assert torch.equal(ex.k_rot[0][:, :L][untouched], seen[0][1][0][untouched])
    # stats: computed rows include the padding, chosen rows are the distinct ones
    # (both summed over the two forwards: the first, full one counts B * L)
    assert ex.chosen_rows() == tuple(B * L + int(m.sum()) for m in chosen)
    assert all(ex.rows_per_layer[i] == B * L + B * sets[i][0].size for i in range(model.n_layers))


def test_no_rows_reuses_everything(llada):
    model = llada.model
    x, valid, positions = _canvas(model)
    ex = PartialLayerExecutor(model, valid, positions)
    first = ex.forward(x, None, full=True, head_start=0, head_end=x.shape[1])
    again = ex.forward(x, lambda layer, ctx: None, full=False, head_start=0, head_end=x.shape[1])
    torch.testing.assert_close(again, first, atol=1e-6, rtol=0)
    assert sum(ex.rows_per_layer) == model.n_layers * x.numel()


def test_no_cache_kept_without_a_reusing_policy(llada):
    model = llada.model
    x, valid, positions = _canvas(model)
    ex = PartialLayerExecutor(model, valid, positions, keep_cache=False)
    got = ex.forward(x, lambda layer, ctx: RowSet.span(0, 3), full=False, head_start=0, head_end=x.shape[1])
    torch.testing.assert_close(got, model(x), atol=1e-5, rtol=0)
    assert not ex.ready  # every forward is full and nothing is stored


def test_rotary_table_equals_apply_rope_bit_for_bit():
    """The executor's precomputed RoPE (roll + sign-folded sin) against the reference rotation."""
    from dynamic_dllm.core.architecture import Rotary

    g = torch.Generator().manual_seed(0)
    positions = torch.randint(0, 4000, (2, 9), generator=g)
    cos, sin = rope_cos_sin(positions, 16, 10000.0)
    for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        for full_precision in (True, False):
            x = torch.randn(2, 9, 3, 16, generator=g).to(dtype)
            table = Rotary(positions, 16, 10000.0, dtype, full_precision)
            got = table.rotate(x, table.cos, table.sin)
            assert got.dtype == dtype
            assert torch.equal(got, apply_rope(x, cos, sin, full_precision)), (dtype, full_precision)


def test_values_for_two_row_sets_is_fresh_on_their_union(llada):
    from dynamic_dllm.core.executor import LayerContext

    model = llada.model
    x, valid, positions = _canvas(model)
    B, L = x.shape
    ex = PartialLayerExecutor(model, valid, positions)
    ex.forward(x, None, full=True, head_start=0, head_end=1)
    hidden = torch.randn(B, L, model.d_model, generator=torch.Generator().manual_seed(4))
    ctx = LayerContext(ex, 1, hidden)
    before = ctx.cached_values().clone()
    fresh = ctx.parts.v_proj(ctx.normed())
    ctx.values(rows=RowSet.span(2, 5))
    got = ctx.values(rows=RowSet.top(-torch.arange(L).float().expand(B, L), torch.tensor([3, 1]), 3))  # rows 0..2 / 0
    union_mask = torch.zeros(B, L, dtype=torch.bool)
    union_mask[:, 2:5] = True
    union_mask[0, :3] = union_mask[1, 0] = True
    torch.testing.assert_close(got, torch.where(union_mask[..., None], fresh, before))


def test_dcu_budget_of_every_row_runs_dense_layers(llada):
    import dynamic_dllm as dd

    ids = torch.randint(0, 200, (1, 6), generator=torch.Generator().manual_seed(1))
    L = 6 + 16
    out = dd.generate(llada, ids, cache=f"dcu:budget={L}", gen_length=16, block_length=16, steps=16)
    assert out.stats.recompute_fraction == 1.0 and out.stats.chosen_rows == out.stats.recomputed_rows


def test_rows_outside_every_earlier_set_keep_their_layer_input(any_model):
    """What DCU's changed-rows scoring relies on: each layer's context names the set the previous
    layer recomputed (``upstream``), and a row whose token did not change and that no earlier layer
    of the step recomputed enters every layer with the previous step's input, bit for bit."""
    model = any_model.model
    x, valid, positions = _canvas(model, seed=5)
    B, L = x.shape
    ex = PartialLayerExecutor(model, valid, positions)
    before = {}
    ex.forward(x, lambda layer, ctx: before.__setitem__(layer, ctx.hidden.clone()), full=True, head_start=0, head_end=1)
    x = x.clone()
    x[:, 13] = 77
    g = torch.Generator().manual_seed(11)
    sets = [_random_rows(x.shape, g, layer) for layer in range(model.n_layers)]
    after, upstream = {}, {}

    def rows_fn(layer, ctx):
        after[layer], upstream[layer] = ctx.hidden.clone(), ctx.upstream
        return sets[layer][0]

    ex.forward(x, rows_fn, full=False, head_start=0, head_end=1)
    moved = torch.zeros(B, L, dtype=torch.bool)
    moved[:, 13] = True
    assert upstream[0] is None
    for layer in range(model.n_layers):
        if layer:
            assert upstream[layer] is sets[layer - 1][0]
            moved |= sets[layer - 1][1]
        assert torch.equal(after[layer][~moved], before[layer][~moved])
        assert not torch.equal(after[layer][moved], before[layer][moved])
