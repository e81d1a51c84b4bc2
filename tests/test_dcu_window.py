"""dcu, window and the dynamic-dllm-cache preset: budget arithmetic, row rules, invariants on real
(tiny) LLaDA and Dream runs with left-padded batches, and the degenerate equivalences with ``none``."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import dynamic_dllm as dd
from dynamic_dllm.core import engine
from dynamic_dllm.core.policy import RunInfo
from dynamic_dllm.core.registry import get_registry
from dynamic_dllm.core.types import GenerationConfig
from dynamic_dllm.policies.dcu import DynamicCacheUpdating, UpdateWindow, _unit_, allocate_budgets

GEN = dict(gen_length=32, block_length=8, steps=32)


def padded_batch(model, seed=0):
    """Two prompts, the second left-padded by 3 (pad id 0 = an ordinary token, masked out)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, min(model.vocab_size, 200), (2, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    ids[1, :3] = 0
    return ids, mask


# --- budget arithmetic -----------------------------------------------------------------------


def test_largest_remainder_example():
    # quotas 10 * (1/3, 1/3, 1/3) = 3.33 each → floors 3,3,3, one extra to the lowest index on a tie
    assert allocate_budgets(10, torch.ones(1, 3), 100).tolist() == [[4, 3, 3]]
    # quotas 7 * (0.5, 0.3, 0.2) = 3.5, 2.1, 1.4 → floors 3,2,1 (sum 6); largest remainder .5 → layer 0
    assert allocate_budgets(7, torch.tensor([[0.5, 0.3, 0.2]]), 100).tolist() == [[4, 2, 1]]
    # quotas 7 * (0.2, 0.3, 0.5) = 1.4, 2.1, 3.5 → the extra one goes to the .5 remainder (layer 2)
    assert allocate_budgets(7, torch.tensor([[0.2, 0.3, 0.5]]), 100).tolist() == [[1, 2, 4]]


def test_zero_weight_layer_gets_nothing_and_cap_overflow_moves_on():
    out = allocate_budgets(12, torch.tensor([[1.0, 0.0, 3.0]]), 100)
    assert out.tolist() == [[3, 0, 9]]
    # cap 5: layer 2 would get 9 → 5, its 4 overflow go to layer 0 (the only other open layer with s > 0)
    assert allocate_budgets(12, torch.tensor([[1.0, 0.0, 3.0]]), 5).tolist() == [[5, 0, 5]]
    # all weights zero → uniform
    assert allocate_budgets(6, torch.zeros(1, 3), 100).tolist() == [[2, 2, 2]]


@settings(max_examples=150, deadline=None)
@given(
    total=st.integers(0, 400),
    weights=st.lists(st.lists(st.sampled_from([0.0, 0.0, 1e-9, 0.01, 0.1, 0.3, 1.0, 7.5]), min_size=5, max_size=5), min_size=1, max_size=3),
    cap=st.integers(1, 90),
)
@example(total=3, weights=[[0.0] * 5, [0.0] * 5, [0.0, 0.0, 0.0, 1e-9, 0.01]], cap=3)  # once failed a fresh clone
def test_budget_invariants(total, weights, cap):
    w = torch.tensor(weights)
    out = allocate_budgets(total, w, cap)
    assert out.dtype == torch.long and bool((out >= 0).all()) and bool((out <= cap).all())
    positive = torch.where(w.sum(1, keepdim=True) > 0, w > 0, torch.ones_like(w, dtype=torch.bool))
    assert bool((out[~positive] == 0).all()), "a layer whose inputs did not change got budget"
    expected_sum = torch.clamp(positive.sum(1) * cap, max=total)
    assert out.sum(1).tolist() == expected_sum.tolist()
    # without capping, every layer is within one row of its exact proportional quota
    if int(positive.sum(1).min()) * cap >= total and total <= cap:
        dead = w.sum(1, keepdim=True) <= 0  # per row: a row whose weights are all zero splits uniformly
        ww = torch.where(positive, torch.where(dead, positive.double(), w.double()), 0.0)
        quota = total * ww / ww.sum(1, keepdim=True)
        assert bool(((out.double() - quota).abs() < 1.0 + 1e-9).all())


# --- DCU on synthetic layer inputs -------------------------------------------------------------


def _run_info(n_layers, B, L, gen_length=16, valid=None):
    cfg = GenerationConfig(gen_length=gen_length, block_length=gen_length, steps=gen_length)
    return RunInfo(config=cfg, batch_size=B, prompt_length=L - gen_length, length=L, n_layers=n_layers, d_model=8,
                   mask_id=0, eos_id=1, logit_shift=0, device=torch.device("cpu"),
                   valid=torch.ones(B, L, dtype=torch.bool) if valid is None else valid)


def _state(step, B, L, n_layers):
    """A step whose every token differs from the previous step's, so DCU scores every row (these
    tests hand it layer inputs that move anywhere, not only where a token or an earlier layer did)."""
    return SimpleNamespace(step=step, valid=torch.ones(B, L, dtype=torch.bool), batch_size=B, n_layers=n_layers, length=L,
                           x=torch.full((B, L), step, dtype=torch.long), masked=torch.zeros(B, L, dtype=torch.bool), waiting=())


def _context(x):
    """A layer context holding the layer input ``x`` (no executor: the first layer's view)."""
    return SimpleNamespace(cosine_input=lambda out=None: x.clone(), upstream=None, hidden=x)


def test_dcu_unchanged_layer_gets_no_budget_and_rows_are_top_dynamics():
    n_layers, B, L = 3, 2, 20
    dcu = DynamicCacheUpdating(budget=4)
    dcu.start(_run_info(n_layers, B, L))
    g = torch.Generator().manual_seed(0)
    inputs = [torch.randn(B, L, 8, generator=g) for _ in range(n_layers)]

    def step(t, new_inputs):
        state = _state(t, B, L, n_layers)
        full = dcu.step_start(state)
        rows = [dcu.layer_rows(state, i, _context(x)) for i, x in enumerate(new_inputs)]
        return full, [None if r is None else r.mask(B, L, "cpu") for r in rows]

    full, rows = step(0, inputs)
    assert full is True and all(r is None for r in rows)
    # step 1: layer 1 unchanged; layers 0 and 2 move (layer 2 three times as many rows)
    moved = [x.clone() for x in inputs]
    moved[0][:, :2] += torch.randn(B, 2, 8, generator=g)
    moved[2][:, :6] += torch.randn(B, 6, 8, generator=g)
    full, rows = step(1, moved)
    assert full is False
    assert dcu.budgets.tolist() == [[4, 4, 4]] * B  # no previous dynamics yet: uniform
    assert float(dcu.dynamics[:, 1].abs().max()) < 1e-6 and bool((dcu.dynamics[:, [0, 2]] > 0).all())
    # the layer-2 rows chosen are the 4 most changed ones (all among the 6 perturbed)
    assert bool((rows[2].sum(1) == 4).all()) and not bool(rows[2][:, 6:].any())
    # step 2: budget follows step-1 dynamics; layer 1 (unchanged) gets none
    full, rows = step(2, moved)
    budgets = dcu.budgets
    assert bool((budgets[:, 1] == 0).all()) and budgets.sum(1).tolist() == [12] * B
    assert bool((budgets[:, 2] > budgets[:, 0]).all())
    assert rows[1] is None or not bool(rows[1].any())


# --- window ----------------------------------------------------------------------------------


def window_rows(key: int, valid: torch.Tensor, size: int, shift: int) -> torch.Tensor:
    """The window's rows (bool ``[1, L]``) after a step that committed position ``key``."""
    L = valid.shape[1]
    win = UpdateWindow(size=size)
    win.start(_run_info(1, 1, L, gen_length=L // 2, valid=valid))
    committed = torch.zeros(1, L, dtype=torch.bool)
    committed[0, key] = True
    win.step_start(SimpleNamespace(last_committed=committed, logit_shift=shift))
    return win.rows.mask(1, L, "cpu")


def test_window_rows_centre_size_and_shift():
    valid = torch.ones(1, 40, dtype=torch.bool)
    rows = window_rows(20, valid, 8, 0)
    assert rows.nonzero()[:, 1].tolist() == list(range(17, 25))  # 3 left of 20, 4 right
    rows = window_rows(20, valid, 8, 1)  # Dream: centred on the row 19 that predicts 20
    assert rows.nonzero()[:, 1].tolist() == list(range(16, 24))
    assert window_rows(1, valid, 8, 0).nonzero()[:, 1].tolist() == list(range(0, 8))
    assert window_rows(39, valid, 8, 0).nonzero()[:, 1].tolist() == list(range(32, 40))
    padded = valid.clone()
    padded[0, :5] = False
    assert window_rows(6, padded, 8, 0).nonzero()[:, 1].tolist() == list(range(5, 13))
    assert window_rows(6, padded, 99, 0).nonzero()[:, 1].tolist() == list(range(5, 40))
    assert int(window_rows(9, valid, 7, 0).sum()) == 7


def test_window_key_is_rightmost_commit_and_persists():
    win = UpdateWindow(size=4)
    B, L, P = 2, 30, 10
    win.start(_run_info(1, B, L, gen_length=L - P))

    def at(committed_cols):
        committed = torch.zeros(B, L, dtype=torch.bool)
        for b, cols in enumerate(committed_cols):
            committed[b, cols] = True
        state = SimpleNamespace(last_committed=committed, valid=torch.ones(B, L, dtype=torch.bool), logit_shift=0)
        win.step_start(state)
        return win.rows.mask(B, L, "cpu").nonzero()[:, 1].view(B, -1).tolist()

    assert at([[], []]) == [list(range(8, 12))] * 2  # before any commit: the last prompt position P-1 = 9
    assert at([[12, 20, 15], [14]]) == [list(range(19, 23)), list(range(13, 17))]
    assert at([[], [25]]) == [list(range(19, 23)), list(range(24, 28))]  # row 0 committed nothing: keeps 20


# --- invariants on real runs ---------------------------------------------------------------------


def _mask(rows, like):
    return None if rows is None else rows.mask(*like.shape, like.device)


class RecordingDCU(DynamicCacheUpdating):
    def layer_rows(self, state, layer, context):
        rows = super().layer_rows(state, layer, context)
        self.log.append((state.step, layer, _mask(rows, state.x), None if self.budgets is None else self.budgets[:, layer].clone()))
        return rows


class RecordingWindow(UpdateWindow):
    def layer_rows(self, state, layer, context):
        rows = super().layer_rows(state, layer, context)
        self.log.append(_mask(rows, state.x))
        return rows


@pytest.mark.parametrize("score,allocation", [("input", "proportional"), ("value", "uniform")])
def test_dcu_window_invariants(any_model, monkeypatch, score, allocation):
    model = any_model.model
    ids, mask = padded_batch(model)
    dcu, win = RecordingDCU(budget=5, score=score, allocation=allocation), RecordingWindow(size=6)
    dcu.log, win.log, unions = [], [], []
    original = engine.union

    def spy(answers, B, L, device):
        out = original(answers, B, L, device)
        unions.append(None if out is None else out.mask(B, L, device))
        return out

    monkeypatch.setattr(engine, "union", spy)
    out = dd.generate(any_model, ids, attention_mask=mask, cache=[dcu, win], **GEN)
    n_layers = model.n_layers
    assert len(unions) == len(dcu.log) == len(win.log) == out.stats.nfe * n_layers
    valid = torch.cat([mask.bool(), torch.ones(2, GEN["gen_length"], dtype=torch.bool)], 1)
    budgets_seen = 0
    for (step, layer, d_rows, budget), w_rows, union in zip(dcu.log, win.log, unions):
        if step == 0:
            continue
        assert w_rows is not None and bool((w_rows <= union).all())           # window ⊆ update set
        assert w_rows.sum(1).tolist() == [6, 6] and not bool((w_rows & ~valid).any())
        extra = (union & ~w_rows).sum(1)
        assert bool((extra <= budget).all())                                   # |rows − window| ≤ B_l
        assert budget is not None and bool((budget >= 0).all())
        if layer == 0:
            budgets_seen += 1
            assert dcu.budgets.sum(1).tolist() == [5 * n_layers] * 2            # budgets sum to the total
        if d_rows is not None:
            assert d_rows.sum(1).tolist() == budget.tolist() and not bool((d_rows & ~valid).any())
    assert budgets_seen == out.stats.nfe - 1
    assert 0 < out.stats.recompute_fraction < 1


# --- degenerate equivalences with none ---------------------------------------------------------


@pytest.mark.parametrize("spec", ["dcu:budget={L}", "dcu:budget={L},score=value", "window:size={L}",
                                  "dynamic-dllm-cache:budget={L},window=0", "dllm-cache:prompt_interval=1,response_interval=1"])
def test_degenerate_settings_equal_none(any_model, spec):
    ids, mask = padded_batch(any_model.model, seed=3)
    L = ids.shape[1] + GEN["gen_length"]
    ref = dd.generate(any_model, ids, attention_mask=mask, cache="none", **GEN)
    out = dd.generate(any_model, ids, attention_mask=mask, cache=spec.format(L=L), **GEN)
    assert torch.equal(out.tokens, ref.tokens)
    real_rows = float(mask.sum() + 2 * GEN["gen_length"]) / (2 * L)  # padding rows may be left stale
    assert out.stats.recompute_fraction >= real_rows - 1e-9


def test_small_budget_actually_caches(any_model):
    """The counterpart of the equivalences: ordinary settings take the partial path."""
    ids, mask = padded_batch(any_model.model, seed=3)
    out = dd.generate(any_model, ids, attention_mask=mask, cache="dynamic-dllm-cache:budget=2,window=4", **GEN)
    assert out.stats.recompute_fraction < 0.5


# --- parameters ------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["dcu:budget=-1", "dcu:score=key", "dcu:allocation=softmax", "dcu:budget=2.5",
                                  "window:size=-3", "dynamic-dllm-cache:window=x", "dcu:windw=3"])
def test_bad_parameters(spec):
    with pytest.raises(ValueError):
        get_registry().make_cache_policies(spec)


def test_defaults_follow_gen_length(llada):
    dcu, win = DynamicCacheUpdating(), UpdateWindow()
    ids, _ = padded_batch(llada.model)
    dd.generate(llada, ids[:1], cache=[dcu, win], gen_length=64, block_length=32, steps=2)
    assert dcu.layer_budget == 8 and win.width == 8


def test_cosine_input_has_the_cosine_of_the_normalised_input(any_model):
    from dynamic_dllm.core.executor import LayerContext, PartialLayerExecutor

    model = any_model.model
    ex = PartialLayerExecutor(model, torch.ones(2, 12, dtype=torch.bool), torch.arange(12).repeat(2, 1))
    g = torch.Generator().manual_seed(0)
    weight = model.layer(1).attn_norm.weight
    saved = weight.detach().clone()
    with torch.no_grad():
        weight.add_(0.3 * torch.randn(model.d_model, generator=g))  # a non-trivial weight
        try:
            a, b = torch.randn(2, 12, model.d_model, generator=g), torch.randn(2, 12, model.d_model, generator=g) * 3.0
            b[:, :4] = a[:, :4] * 7.0  # same direction, other scale: unchanged after normalisation
            ca, cb = LayerContext(ex, 1, a), LayerContext(ex, 1, b)
            expected = torch.nn.functional.cosine_similarity(ca.normed(), cb.normed(), dim=-1)
            got = torch.nn.functional.cosine_similarity(ca.cosine_input(), cb.cosine_input(), dim=-1)
        finally:
            weight.copy_(saved)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[:, :4], torch.ones(2, 4), rtol=1e-5, atol=1e-5)


def test_dcu_waiting_rows_keep_their_scoring_state():
    """A row listed in state.waiting leaves the step's DCU state as it entered it: its previous
    unit vectors are kept and, before any layer dynamics exist, its dynamics are the
    uniform split's all-ones weights — so its next step is budgeted as in its single run."""
    n_layers, B, L = 2, 2, 20
    dcu = DynamicCacheUpdating(budget=4)
    dcu.start(_run_info(n_layers, B, L))
    g = torch.Generator().manual_seed(1)
    inputs = [torch.randn(B, L, 8, generator=g) for _ in range(n_layers)]

    def step(t, new_inputs, waiting=()):
        state = SimpleNamespace(**{**vars(_state(t, B, L, n_layers)), "waiting": waiting})
        dcu.step_start(state)
        for i, x in enumerate(new_inputs):
            dcu.layer_rows(state, i, _context(x))

    step(0, inputs)
    moved = [x + torch.randn(B, L, 8, generator=g) for x in inputs]
    step(1, moved, waiting=(1,))  # row 1 waits at the first scored step
    assert dcu.dynamics[1].tolist() == [1.0, 1.0] and bool((dcu.dynamics[0] != 1.0).all())
    for layer in range(n_layers):  # row 1 still compares against the vectors of step 0
        assert torch.equal(dcu.prev[layer][1], _unit_(inputs[layer][1].clone()))
        assert not torch.equal(dcu.prev[layer][0], _unit_(inputs[layer][0].clone()))


# --- scoring only the rows that can have changed ----------------------------------------------


@pytest.fixture
def changed_rows_only(monkeypatch):
    """DCU scores only the rows whose input can have changed, whatever the canvas size (by default
    it does so on canvases of ≥ 2^17 elements on a CPU), and counts how often it did."""
    from dynamic_dllm.policies import dcu as dcu_module

    monkeypatch.setattr(dcu_module, "EXACT_ROWS_MIN_ELEMENTS", {})
    monkeypatch.setattr(dcu_module, "EXACT_ROWS_MIN_ELEMENTS_OTHER", 0)
    calls = []
    score_rows = DynamicCacheUpdating._score_rows
    monkeypatch.setattr(DynamicCacheUpdating, "_score_rows", lambda self, *a: calls.append(a[2].numel()) or score_rows(self, *a))
    return calls


def test_scoring_changed_rows_only_keeps_the_golden_tokens(changed_rows_only):
    """Every DCU entry of the golden matrix (tiny and a left-padded random Dream batch, every unmask
    policy) gives the recorded tokens, NFE and commits when only the changed rows are scored."""
    import json

    from golden_matrix import CONFIG, GOLDEN, UNMASKS, models

    expected = json.loads(GOLDEN.read_text())
    caches = ["dcu", "dcu:allocation=uniform", "dcu+window", "dcu:budget=4+window:size=4", "dynamic-dllm-cache"]
    differing = []
    for name, lm, ids, mask in models():
        for cache in caches:
            for unmask in UNMASKS:
                out = dd.generate(lm, ids, cache=cache, unmask=unmask, attention_mask=mask, **CONFIG)
                got = {"tokens": out.tokens.tolist(), "nfe": out.stats.nfe, "tokens_per_step": list(out.stats.tokens_per_step)}
                if got != expected[f"{name}|{cache}|{unmask}"]:
                    differing.append(f"{name}|{cache}|{unmask}")
    assert not differing, differing[:5]
    assert changed_rows_only and min(changed_rows_only) < max(changed_rows_only)  # the path ran, on sets of several sizes


@pytest.mark.parametrize("cache", ["dcu+window", "dynamic-dllm-cache:budget=4,window=4"])
def test_scoring_changed_rows_only_with_waiting_rows(tiny_lm, cache, changed_rows_only):
    """Rows finishing blocks at different steps (they wait, and are scored over all rows on their
    return) decode as alone and as with all-row scoring."""
    prompts = ["swap case: ab", "hi", "fill blanks: 4_6__"]
    kw = dict(cache=cache, unmask="threshold", gen_length=32, block_length=16, steps=32)
    both = dd.generate(tiny_lm, prompts, **kw)
    assert changed_rows_only
    for row, prompt in enumerate(prompts):
        assert both.tokens[row].tolist() == dd.generate(tiny_lm, [prompt], **kw).tokens[0].tolist()


def test_equal_vectors_have_zero_dynamics_at_any_width():
    """|v − u|² (= 2(1 − cos)) of unit rows is exactly 0 for equal rows (1 − cos of the same vectors
    would round to up to ~3e-6 at these widths, above the tolerance), whatever the scale."""
    from dynamic_dllm.policies.dcu import _twice_distance_

    g = torch.Generator().manual_seed(0)
    for width in (64, 512, 4096):
        x = torch.randn(500, width, generator=g) * torch.logspace(-3, 4, 500)[:, None]
        u = _unit_(x.clone())
        assert not bool(_twice_distance_(u.clone(), u).any())
        v = _unit_(x + 1e-2 * torch.randn(500, width, generator=g) * x.abs().mean(1, keepdim=True))
        assert bool((_twice_distance_(v, u) > 0).all())
