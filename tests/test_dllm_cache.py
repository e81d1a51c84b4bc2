"""dllm-cache: the released control flow step by step (refresh phases over the global counter,
layer 0 always full, V-verify picks the least V-similar response rows, the prompt V is refreshed
only on prompt refresh steps), and LayerContext.values(rows) — the executor extension it uses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import dynamic_dllm as dd
from dynamic_dllm.core.rows import RowSet
from dynamic_dllm.core.policy import CachePolicy
from dynamic_dllm.core.registry import get_registry
from dynamic_dllm.policies.dcu import ROUNDING_TOLERANCE
from dynamic_dllm.policies.dllm_cache import DllmCache

GEN = dict(gen_length=32, block_length=8, steps=32)


def padded_batch(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, min(model.vocab_size, 200), (2, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    ids[1, :3] = 0
    return ids, mask


class RecordingDllmCache(DllmCache):
    """Records, per step and layer, the rows chosen, the V cache before the layer ran, the fresh V
    of every row (computed independently here) and the V cache after the step."""

    def layer_rows(self, state, layer, context):
        before = context.cached_values()
        before = None if before is None else before.clone()
        fresh = context.parts.v_proj(context.normed())
        rows = super().layer_rows(state, layer, context)
        self.ex = context.executor
        mask = torch.zeros_like(state.masked) if rows is None else rows.mask(*state.masked.shape, state.masked.device)
        self.log.append(dict(step=state.step, layer=layer, rows=mask, before=before, fresh=fresh))
        return rows

    def step_end(self, state, committed):
        L = state.length
        self.after[state.step] = torch.stack([v[:, :L] for v in self.ex.v]).flatten(3).clone()


def test_dllm_cache_released_control_flow(any_model):
    model = any_model.model
    ids, mask = padded_batch(model)
    P, G = ids.shape[1], GEN["gen_length"]
    Kp, Kr, n_replace = 5, 3, int(G * 0.25)
    policy = RecordingDllmCache(prompt_interval=Kp, response_interval=Kr, ratio=0.25)
    policy.log, policy.after = [], {}
    out = dd.generate(any_model, ids, attention_mask=mask, cache=[policy], **GEN)
    r0 = P - model.logit_shift  # Dream: the row P-1 that predicts the first generated token is a response row
    response = torch.zeros(2, P + G, dtype=torch.bool)
    response[:, r0:] = True
    assert len(policy.log) == out.stats.nfe * model.n_layers
    kinds = set()
    for e in policy.log:
        t, layer, rows = e["step"], e["layer"], e["rows"]
        rp, rr = t % Kp == 0, t % Kr == 0
        if layer == 0 or (rp and rr):
            assert bool(rows.all())
            continue
        if rr:
            kinds.add("response")
            assert torch.equal(rows, response)
            continue
        kinds.add("prompt+verify" if rp else "verify")
        assert torch.equal(rows[:, :r0], torch.full_like(rows[:, :r0], rp))
        assert rows[:, r0:].sum(1).tolist() == [n_replace, n_replace]
        # the least V-similar response rows against the previous step's V, per batch row (changes
        # 1 - cos below the rounding tolerance count as none; equal changes are taken left to right)
        change = F.threshold(1 - F.cosine_similarity(e["fresh"][:, r0:], e["before"][:, r0:], dim=-1), ROUNDING_TOLERANCE, 0.0)
        expected = torch.sort(change, dim=1, descending=True, stable=True).indices[:, :n_replace] + r0
        assert torch.equal(rows.nonzero()[:, 1].view(2, -1)[:, -n_replace:].sort(1).values, expected.sort(1).values)
        # V cache after the step: fresh for every response row; prompt rows only where recomputed
        after = policy.after[t][layer]
        torch.testing.assert_close(after[:, r0:], e["fresh"][:, r0:], rtol=1e-5, atol=1e-5)
        if not rp:
            assert torch.equal(after[:, :r0], e["before"][:, :r0]), "prompt V refreshed outside a prompt refresh"
    assert kinds == {"response", "prompt+verify", "verify"}
    assert 0 < out.stats.recompute_fraction < 1


def test_ratio_zero_reuses_everything_between_refreshes(llada):
    policy = RecordingDllmCache(prompt_interval=100, response_interval=100, ratio=0.0)
    policy.log, policy.after = [], {}
    ids, mask = padded_batch(llada.model)
    dd.generate(llada, ids, attention_mask=mask, cache=[policy], **GEN)
    for e in policy.log:
        if e["step"] > 0 and e["layer"] > 0:
            assert not bool(e["rows"].any())


@pytest.mark.parametrize("spec", ["dllm-cache:prompt_interval=0", "dllm-cache:response_interval=-2", "dllm-cache:ratio=1.5",
                                  "dllm-cache:ratio=-0.1", "dllm-cache:prompt_interval=2.5", "dllm-cache:rho=0.2"])
def test_bad_parameters(spec):
    with pytest.raises(ValueError):
        get_registry().make_cache_policies(spec)


# --- the executor extension: LayerContext.values(rows) ---------------------------------------------


class ValuesProbe(CachePolicy):
    """At step 1, layer 1: asks for fresh V on a row subset, optionally recomputes other rows."""

    def __init__(self, subset, recompute):
        self.subset, self.recompute = subset, recompute

    def layer_rows(self, state, layer, context):
        if state.step != 1 or layer != 1:
            return None
        self.ex = context.executor
        self.before = context.cached_values().clone()
        self.fresh = context.parts.v_proj(context.normed())
        flops0 = self.ex.extra_flops
        subset = RowSet.from_mask(self.subset)
        self.got = context.values(rows=subset).clone()
        self.flops = self.ex.extra_flops - flops0
        again = context.values(rows=subset)  # the same rows again: no recompute
        assert again.data_ptr() == context.fresh_values.data_ptr() and self.ex.extra_flops - flops0 == self.flops
        return None if self.recompute is None else RowSet.from_mask(self.recompute)

    def step_end(self, state, committed):
        if state.step == 1:
            self.after = self.ex.cached(self.ex.v, 1).clone()


@pytest.mark.parametrize("with_rows", [False, True])
def test_values_for_a_row_subset(llada, with_rows):
    ids = torch.randint(1, 200, (2, 6), generator=torch.Generator().manual_seed(5))
    L = 6 + 16
    subset = torch.zeros(2, L, dtype=torch.bool)
    subset[0, 10:] = True
    subset[1, 4:9] = True
    recompute = None
    if with_rows:
        recompute = torch.zeros(2, L, dtype=torch.bool)
        recompute[:, 1] = True
    probe = ValuesProbe(subset, recompute)
    dd.generate(llada, ids, cache=[probe], gen_length=16, block_length=16, steps=4)
    m = llada.model
    expected = torch.where(subset[..., None], probe.fresh, probe.before)
    torch.testing.assert_close(probe.got, expected)
    assert probe.flops == 2 * (2 * 12) * m.d_model * m.kv_dim  # R = 12 rows per batch row (padded index)
    after_expected = expected.clone()
    if with_rows:
        after_expected[:, 1] = probe.fresh[:, 1]  # recomputed rows also get fresh V
    torch.testing.assert_close(probe.after, after_expected, rtol=1e-5, atol=1e-6)
    untouched = ~subset
    if with_rows:
        untouched[:, 1] = False
    assert torch.equal(probe.after[untouched], probe.before[untouched])
