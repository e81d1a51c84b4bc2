"""Cache policies prefix / dual (Fast-dLLM), dkv-cache (dKV-Cache-Decode), sparse-dllm, and the
executor's key-subset extension (``cache_keys`` / ``keys_fn``, ``LayerContext.key_importance``)."""

from __future__ import annotations

import copy

import attrs
import pytest
import torch

import dynamic_dllm as dd
from dynamic_dllm.core.executor import PartialLayerExecutor
from dynamic_dllm.core.rows import RowSet
from dynamic_dllm.core.architecture import rope_cos_sin
from dynamic_dllm.policies.dual import DualCache
from dynamic_dllm.policies.no_cache import NoCache
from dynamic_dllm.policies.sparse_dllm import SparseDllm, select_keys


@pytest.fixture(scope="session")
def llada_live(llada):
    """The session LLaDA with a unit final norm: the random checkpoint builder zero-initialises
    ``ln_f.weight`` (its name lacks "norm"), which makes every LLaDA logit 0 and every comparison
    of generated tokens vacuous."""
    lm = copy.deepcopy(llada)
    for name, p in lm.model.named_parameters():
        if name.endswith("ln_f.weight"):
            p.data.fill_(1.0)
    return lm


@pytest.fixture(params=["llada_live", "dream"])
def model(request):
    return request.getfixturevalue(request.param)


def _prompts(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (1, n), generator=g) for n in lengths]


def _left_pad(singles, pad_id):
    P = max(s.shape[1] for s in singles)
    ids = torch.stack([torch.cat([torch.full((P - s.shape[1],), pad_id), s[0]]) for s in singles])
    mask = torch.arange(P) >= (P - torch.tensor([s.shape[1] for s in singles]))[:, None]
    return ids, mask


def _record(monkeypatch):
    """Record, per executor forward: the input canvas, ``full``, and per layer the rows / key masks
    the policies answered."""
    calls = []
    original = PartialLayerExecutor.forward

    def spy(self, tokens, rows_fn, full, head_start, head_end, keys_fn=None):
        call = {"tokens": tokens.clone(), "full": full, "rows": {}, "keys": {}}
        calls.append(call)

        def rows(layer, ctx):
            out = rows_fn(layer, ctx)
            call["rows"][layer] = None if out is None else out.mask(*ctx.hidden.shape[:2], ctx.hidden.device)
            return out

        def keys(layer, ctx):
            call["keys"][layer] = out = keys_fn(layer, ctx)
            return out

        return original(self, tokens, rows, full, head_start, head_end, None if keys_fn is None else keys)

    monkeypatch.setattr(PartialLayerExecutor, "forward", spy)
    return calls


def _varied(tokens):
    assert len(set(tokens.flatten().tolist())) > 3, "degenerate model: the comparison would be vacuous"


# --- degenerate settings ----------------------------------------------------------------------


def test_dkv_refresh_every_step_equals_none(model):
    ids = _prompts([6])[0]
    config = dict(gen_length=24, block_length=8, steps=24)
    ref = dd.generate(model, ids, cache="none", **config)
    _varied(ref.tokens)
    got = dd.generate(model, ids, cache="dkv-cache:refresh_interval=1", **config)
    assert torch.equal(got.tokens, ref.tokens)
    assert got.stats.recompute_fraction == 1.0


@attrs.define
class FullAtStep1(dd.CachePolicy):
    """Test helper: asks for a full step at step 1 of every block."""

    def step_start(self, state):
        return state.step_in_block == 1


def test_sparse_keep_all_equals_dual_with_second_full_step(model):
    """keep_ratio=1 evicts nothing: Sparse-dLLM is then exactly dual plus a full step 1 per block."""
    singles = _prompts([5, 9])
    ids, mask = _left_pad(singles, model.model.pad_id)
    config = dict(gen_length=24, block_length=8, steps=24)
    ref = dd.generate(model, ids, attention_mask=mask, cache=[DualCache(), FullAtStep1()], **config)
    _varied(ref.tokens)
    got = dd.generate(model, ids, attention_mask=mask, cache="sparse-dllm:keep_ratio=1", **config)
    assert torch.equal(got.tokens, ref.tokens)
    assert got.stats.recomputed_rows == ref.stats.recomputed_rows


# --- prefix / dual ----------------------------------------------------------------------------


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_one_full_forward_per_block_and_fast_dllm_nfe(model, cache, monkeypatch):
    calls = _record(monkeypatch)
    ids = _prompts([7])[0]
    G, Lb, steps = 32, 8, 16
    out = dd.generate(model, ids, cache=cache, gen_length=G, block_length=Lb, steps=steps)
    spb, P, L, shift = steps // (G // Lb), ids.shape[1], ids.shape[1] + G, model.model.logit_shift
    assert out.stats.nfe == len(calls) == steps  # the refresh forward counts once and decodes
    assert all(n >= 1 for n in out.stats.tokens_per_step)
    fulls = [i for i, c in enumerate(calls) if c["full"]]
    assert fulls == list(range(0, steps, spb)), "exactly one full forward, at each block start"
    for i, call in enumerate(calls):
        if call["full"]:
            continue
        bs = P + (i // spb) * Lb
        want = torch.zeros(1, L, dtype=torch.bool)
        want[:, bs - shift: L if cache == "prefix" else bs + Lb] = True
        for layer in range(model.model.n_layers):
            assert torch.equal(call["rows"][layer], want), (i, layer)


def test_dual_recompute_fraction_is_analytic(model):
    """gen 256, block 32, one token per step: each block = one full step (L rows) + 31 steps of
    the block rows (32 + logit_shift); fraction = (L + 31 (32 + shift)) / (32 L)."""
    ids = _prompts([5])[0]
    out = dd.generate(model, ids, cache="dual", gen_length=256, block_length=32, steps=256)
    L, shift, n_layers = 5 + 256, model.model.logit_shift, model.model.n_layers
    per_block = L + 31 * (32 + shift)
    assert out.stats.recomputed_rows == (8 * per_block,) * n_layers
    assert out.stats.recompute_fraction == pytest.approx(per_block / (32 * L), rel=1e-12)


# --- dkv-cache ---------------------------------------------------------------------------------


@pytest.mark.parametrize("interval", [None, 3])
def test_dkv_delay_rule_and_per_block_counter(model, interval, monkeypatch):
    """Full at steps 0, 1 and multiples of the interval *within each block* (auto: 8 LLaDA, 4 Dream);
    otherwise per batch row the positions masked in the previous step's input canvas (= still
    masked + committed last step), plus for Dream the row before each of them."""
    calls = _record(monkeypatch)
    ids, mask = _left_pad(_prompts([4, 7]), model.model.pad_id)
    spec = "dkv-cache" if interval is None else f"dkv-cache:refresh_interval={interval}"
    dd.generate(model, ids, attention_mask=mask, cache=spec, gen_length=20, block_length=10, steps=20)
    R = interval or (4 if model.model.logit_shift else 8)
    shift, mask_id = model.model.logit_shift, model.model.mask_id
    assert len(calls) == 20
    for step, call in enumerate(calls):
        i = step % 10  # per-block counter
        assert call["full"] == (i <= 1 or i % R == 0), step
        if call["full"]:
            continue
        fresh = calls[step - 1]["tokens"] == mask_id
        want = fresh.clone()
        if shift:
            want[:, :-1] |= fresh[:, 1:]
        for layer in range(model.model.n_layers):
            assert torch.equal(call["rows"][layer], want), (step, layer)
        # the delay: tokens committed at the previous step are recomputed, older ones are not
        committed_before = (calls[step - 1]["tokens"] == mask_id) & (call["tokens"] != mask_id)
        assert bool(call["rows"][0][committed_before].all())
        older = calls[step - 1]["tokens"] != mask_id
        if not shift:
            assert not bool(call["rows"][0][older].any())


# --- sparse-dllm --------------------------------------------------------------------------------


def _naive_select(importance, candidates, start, end, ratio, kernel):
    B, L = importance.shape
    keep = torch.ones(B, L, dtype=torch.bool)
    for b in range(B):
        pos = [j for j in range(L) if candidates[b, j]]
        imp = [float(importance[b, j]) for j in pos]
        pooled = [max(imp[max(0, n - kernel // 2): n + kernel // 2 + 1]) for n in range(len(pos))]
        order = sorted(range(len(pos)), key=lambda n: (-pooled[n], n))
        kept = {pos[n] for n in order[: int(len(pos) * ratio)]}
        for j in range(L):
            if not start <= j < end:
                keep[b, j] = j in kept
    return keep


@pytest.mark.parametrize("ratio,kernel", [(0.5, 3), (0.3, 1), (0.75, 5)])
def test_select_keys_matches_naive(ratio, kernel):
    g = torch.Generator().manual_seed(11)
    B, L, start, end = 3, 30, 12, 20
    importance = torch.randn(B, L, generator=g)
    importance[1, 3:5] = importance[1, 6]  # ties
    candidates = torch.ones(B, L, dtype=torch.bool)
    candidates[:, start:end] = False
    candidates[0, :4] = False  # left padding
    candidates[2, :9] = False
    got = select_keys(importance, candidates, start, end, ratio, kernel)
    assert torch.equal(got, _naive_select(importance, candidates, start, end, ratio, kernel))


def test_sparse_evicts_from_step_one_states(model, monkeypatch):
    """Steps 0 and 1 of each block full, no key mask; from step 2 only the block rows are
    recomputed and each layer attends to the block rows plus floor(S · ratio) of its S candidates."""
    calls = _record(monkeypatch)
    ids, mask = _left_pad(_prompts([5, 11]), model.model.pad_id)
    P, shift = ids.shape[1], model.model.logit_shift
    dd.generate(model, ids, attention_mask=mask, cache="sparse-dllm:keep_ratio=0.5", gen_length=24, block_length=8, steps=24)
    L = P + 24
    for step, call in enumerate(calls):
        i, bs = step % 8, P + (step // 8) * 8
        assert call["full"] == (i <= 1)
        block = torch.zeros(2, L, dtype=torch.bool)
        block[:, bs - shift: bs + 8] = True
        for layer in range(model.model.n_layers):
            keys = call["keys"][layer]
            if i <= 1:
                assert keys is None
                continue
            assert torch.equal(call["rows"][layer], block)
            assert i == 2 or torch.equal(keys, calls[step - 1]["keys"][layer])  # fixed within the block
            S = (mask.sum(1) + 24 - block.sum(1))
            assert torch.equal((keys & ~block).sum(1), (S * 0.5).floor().long())
            assert bool(keys[block].all())


def test_sparse_scores_use_step_one_states(llada_live, monkeypatch):
    """The keep set equals select_keys over key_importance computed from step 1's layer input."""
    seen = {}
    original = dd.core.executor.LayerContext.key_importance

    def spy(ctx, rows):
        out = original(ctx, rows)
        seen.setdefault(ctx.layer, []).append((ctx.hidden.clone(), rows.mask(*ctx.hidden.shape[:2], "cpu"), out.clone()))
        return out

    monkeypatch.setattr(dd.core.executor.LayerContext, "key_importance", spy)
    calls = _record(monkeypatch)
    ids = _prompts([6])[0]
    dd.generate(llada_live, ids, cache="sparse-dllm", gen_length=16, block_length=8, steps=16)
    assert [len(v) for v in seen.values()] == [2] * llada_live.model.n_layers  # once per block
    for layer, entries in seen.items():
        for block, (hidden, rows, importance) in enumerate(entries):
            step1 = calls[block * 8 + 1]
            assert step1["full"]
            start = 6 + block * 8
            want = select_keys(importance, ~rows, start, start + 8, 0.5, 3)
            assert torch.equal(calls[block * 8 + 2]["keys"][layer], want)


# --- batch with left padding ----------------------------------------------------------------------


@pytest.mark.parametrize("cache", ["prefix", "dual", "dkv-cache:refresh_interval=3", "sparse-dllm", "dcu:budget=4",
                                   "dcu:budget=3,score=value+window:size=4", "dllm-cache:prompt_interval=5,response_interval=3"])
def test_batch_with_left_padding_equals_single_runs(model, cache):
    """Row choices (top-B by change) break ties left to right, so padding does not change them."""
    singles = _prompts([3, 8, 5], seed=4)
    ids, mask = _left_pad(singles, model.model.pad_id)
    config = dict(gen_length=16, block_length=8, steps=16)
    batched = dd.generate(model, ids, attention_mask=mask, cache=cache, **config)
    _varied(batched.tokens)
    for row, single in enumerate(singles):
        alone = dd.generate(model, single, cache=cache, **config)
        assert torch.equal(batched.tokens[row], alone.tokens[0]), f"row {row} differs from its single run"


# --- executor key subsets -------------------------------------------------------------------------


def _canvas(model, B=2, L=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 250, (B, L), generator=g)
    x[:, L // 2:] = model.mask_id
    return x, torch.ones(B, L, dtype=torch.bool), torch.arange(L).expand(B, L)


@pytest.mark.parametrize("path", ["dense", "partial"])
def test_key_mask_equals_masked_plain_forward(model, path):
    m = copy.deepcopy(model.model).double()
    x, valid, positions = _canvas(m)
    keep = torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) < 0.6
    keep[:, 0] = True
    ex = PartialLayerExecutor(m, valid, positions)
    ex.forward(x, None, full=True, head_start=0, head_end=1)
    B, L = x.shape
    # all rows as a span (the dense layer) or as an index (the gather path)
    every = RowSet.span(0, L) if path == "dense" else RowSet.indexed(torch.arange(L).expand(B, L))
    got = ex.forward(x, lambda layer, ctx: every, False, 0, x.shape[1], keys_fn=lambda layer, ctx: keep)
    torch.testing.assert_close(got, m(x, attention_mask=keep), atol=1e-9, rtol=1e-9)


def test_dropped_keys_do_not_reach_partial_rows(llada_live):
    m = copy.deepcopy(llada_live.model).double()
    x, valid, positions = _canvas(m, seed=2)
    rows = RowSet.span(8, 12)
    keep = rows.mask(*valid.shape, "cpu")
    keep[:, :4] = True
    out = []
    for noise in (0.0, 5.0):
        ex = PartialLayerExecutor(m, valid, positions)
        ex.forward(x, None, full=True, head_start=0, head_end=1)
        for t in (*ex.k_rot, *ex.v):
            t[:, 14:] += noise  # perturb cached K/V of dropped keys only
        out.append(ex.forward(x, lambda layer, ctx: rows, False, 8, 12, keys_fn=lambda layer, ctx: keep))
    torch.testing.assert_close(out[0], out[1], atol=1e-12, rtol=0)
    ex = PartialLayerExecutor(m, valid, positions)
    ex.forward(x, None, full=True, head_start=0, head_end=1)
    for t in ex.k_rot:
        t[:, 2] += 5.0  # a kept key does matter (attention reads the rotated K cache)
    moved = ex.forward(x, lambda layer, ctx: rows, False, 8, 12, keys_fn=lambda layer, ctx: keep)
    assert not torch.allclose(moved, out[0])


def test_keep_everything_is_bitwise_default(model):
    x, valid, positions = _canvas(model.model)
    valid[1, :3] = False
    rows = RowSet.span(10, x.shape[1])
    outs = []
    for keys_fn in (None, lambda layer, ctx: torch.ones_like(valid)):
        ex = PartialLayerExecutor(model.model, valid, positions)
        ex.forward(x, None, full=True, head_start=0, head_end=1)
        outs.append(ex.forward(x, lambda layer, ctx: rows, False, 0, x.shape[1], keys_fn=keys_fn))
    assert torch.equal(outs[0], outs[1])


def test_key_importance_matches_naive(model):
    m = copy.deepcopy(model.model).double()
    x, valid, positions = _canvas(m, seed=5)
    ex = PartialLayerExecutor(m, valid, positions)
    ex.forward(x, None, full=True, head_start=0, head_end=1)
    query_rows = torch.zeros_like(valid)
    query_rows[0, 5:9] = True
    query_rows[1, [2, 11, 17]] = True
    got = {}

    def keys_fn(layer, ctx):
        got[layer] = (ctx.hidden.clone(), ctx.key_importance(RowSet.from_mask(query_rows)))
        return None

    ex.forward(x, None, True, 0, 1, keys_fn=keys_fn)
    H, Hkv, D = m.n_heads, m.n_kv_heads, m.head_dim
    cos, sin = rope_cos_sin(positions, D, m.rope_theta)

    def rot(v, b, i):
        return v * cos[b, i] + torch.cat([-v[:, D // 2:], v[:, :D // 2]], -1) * sin[b, i]

    for layer, (hidden, importance) in got.items():
        p = m.layer(layer)
        xn = p.attn_norm(hidden)
        for b in range(2):
            qs = [rot(p.q_proj(xn[b, i]).view(H, D), b, i) for i in range(20) if query_rows[b, i]]
            for j in range(20):
                k = rot(p.k_proj(xn[b, j]).view(Hkv, D), b, j)
                want = sum(float(q[h] @ k[h // (H // Hkv)]) for q in qs for h in range(H)) / (len(qs) * H)
                assert abs(float(importance[b, j]) - want) < 1e-9


# --- parameters ------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["dkv-cache:refresh_interval=0", "dkv-cache:refresh_interval=2.5",
                                  "sparse-dllm:keep_ratio=0", "sparse-dllm:keep_ratio=1.5",
                                  "sparse-dllm:kernel_size=2", "sparse-dllm:kernel_size=0", "dual:size=3"])
def test_bad_parameters(spec):
    with pytest.raises(ValueError):
        dd.get_registry().make_cache_policies(spec)


@attrs.define(eq=False)
class KeepMask(dd.CachePolicy):
    """Test helper: a fixed ``cache_keys`` answer for every layer."""

    keep: torch.Tensor = None
    restricts_keys = True

    def layer_keys(self, state, layer, context):
        return self.keep


def test_cache_keys_answers_are_intersected(llada_live, monkeypatch):
    calls = _record(monkeypatch)
    ids = _prompts([6])[0]
    L = 6 + 8
    g = torch.Generator().manual_seed(3)
    a, b = (torch.rand(1, L, generator=g) < 0.7 for _ in range(2))
    a[:, :1] = b[:, :1] = True
    dd.generate(llada_live, ids, cache=[NoCache(), KeepMask(a), KeepMask(b)], gen_length=8, block_length=8, steps=4)
    assert all(torch.equal(c["keys"][layer], a & b) for c in calls for layer in range(llada_live.model.n_layers))
    calls.clear()
    dd.generate(llada_live, ids, cache="dual", gen_length=8, block_length=8, steps=4)
    assert calls and all(c["keys"] == {} for c in calls)  # no policy restricts keys: the hook is not called
