"""LLaDA2.0 (block diffusion, group-limited MoE, fused QKV, partial RoPE) against its reference code.

``tests/data/llada2_reference.json`` holds what ``tools/llada2_reference.py`` recorded by running
``modeling_llada2_moe.py`` (the copy in ZHZisZZ/dllm ca176752, transformers 4.57.0) on random LLaDA2
checkpoints built by :func:`build_random_checkpoint` with the recorded arguments: full-forward logits
under ``generate``'s block mask for a dense-then-MoE variant and an all-MoE tied variant, and
``generate``'s greedy tokens at two step counts and three thresholds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import dynamic_dllm as dd
from dynamic_dllm.core.architecture import Rotary, apply_rope, rope_cos_sin
from dynamic_dllm.core.moe import GroupLimitedMoE
from dynamic_dllm.models.random_checkpoint import build_random_checkpoint, random_config

RECORD = json.loads((Path(__file__).parent / "data" / "llada2_reference.json").read_text())
BLOCK, GEN = RECORD["block_length"], RECORD["gen_length"]
SAMPLER_CASES = sorted(name for name in RECORD["cases"] if "/generate/" in name)


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    root = tmp_path_factory.mktemp("llada2")
    return {name: dd.load_model(str(build_random_checkpoint("llada2", root / name, **sizes)))
            for name, sizes in RECORD["variants"].items()}


def test_loads_the_hf_layout_by_architecture(variants):
    lm = variants["dense-then-moe"]
    config = json.loads((lm.path / "config.json").read_text())
    assert config["architectures"] == ["LLaDA2MoeModelLM"] and config["model_type"] == "llada2_moe"
    m = lm.model
    assert type(m).__name__ == "LLaDA2Model" and m.block_causal and m.block_size == BLOCK and m.logit_shift == 0
    assert m.moe_layers == (False, True, True) and m.rope_dim == m.head_dim // 2 == 16
    keys = set(m.state_dict())
    assert {"model.word_embeddings.weight", "model.layers.0.attention.query_key_value.weight",
            "model.layers.0.attention.dense.weight", "model.layers.0.attention.query_layernorm.weight",
            "model.layers.0.mlp.gate_proj.weight", "model.layers.1.mlp.gate.weight", "model.layers.1.mlp.gate.expert_bias",
            "model.layers.1.mlp.experts.7.down_proj.weight", "model.layers.1.mlp.shared_experts.up_proj.weight",
            "lm_head.weight"} <= keys
    assert "lm_head.weight" not in variants["all-moe-tied"].model.state_dict()


@pytest.mark.parametrize("variant", sorted(RECORD["variants"]))
def test_logits_equal_the_reference_modeling_code(variants, variant):
    rec = RECORD["cases"][f"{variant}/logits"]
    with torch.no_grad():
        ours = variants[variant].model(torch.tensor([rec["input_ids"]]), block_length=BLOCK)[0]
    assert torch.allclose(ours, torch.tensor(rec["logits"]), atol=1e-4, rtol=0)


@pytest.mark.parametrize("cache", ["none", "block-kv"])
@pytest.mark.parametrize("name", SAMPLER_CASES)
def test_sampler_reproduces_the_reference_generate(variants, name, cache):
    want = RECORD["cases"][name]
    assert not want["committed_mask"] and not want["stopped"]
    steps, threshold = (part.split("=")[1] for part in name.split("/")[2:])
    unmask = "llada2" if threshold == "0.95" else f"sdar:threshold={threshold}"  # the preset is generate's default
    out = dd.generate(variants["dense-then-moe"], torch.tensor([RECORD["prompt"]]), cache=cache, unmask=unmask,
                      gen_length=GEN, block_length=BLOCK, steps=int(steps) * GEN // BLOCK)
    assert out.tokens[0].tolist() == want["tokens"]


def test_record_thresholds_and_steps_differ():
    tokens = {name: RECORD["cases"][name]["tokens"] for name in SAMPLER_CASES}
    base = tokens["dense-then-moe/generate/steps=4/threshold=0.95"]
    assert base != tokens["dense-then-moe/generate/steps=2/threshold=0.95"] != tokens["dense-then-moe/generate/steps=4/threshold=0.2"]


@pytest.mark.parametrize("unmask", ["low-confidence", "threshold:threshold=0.2", "apd", "eb-sampler", "llada2:threshold=0.3"])
def test_block_kv_equals_recomputing_everything(variants, unmask):
    lm, ids = variants["all-moe-tied"], torch.tensor([RECORD["prompt"] + [7]])
    base = dd.generate(lm, ids, cache="none", unmask=unmask, gen_length=16, block_length=BLOCK)
    kv = dd.generate(lm, ids, cache="auto", unmask=unmask, gen_length=16, block_length=BLOCK)
    assert torch.equal(kv.tokens, base.tokens) and kv.stats.nfe == base.stats.nfe and kv.stats.recompute_fraction < 0.6


def test_partial_rotary_table_equals_apply_rope():
    """Rotary with rope_dim < head_dim rotates the first rope_dim dimensions exactly as apply_rope
    (half-split within them) and passes the rest unchanged."""
    positions = torch.arange(9).expand(2, 9)
    x = torch.randn(2, 9, 3, 16, generator=torch.Generator().manual_seed(0))
    cos, sin = rope_cos_sin(positions, 8, 600000.0)
    want = apply_rope(x, cos, sin, full_precision=False)
    rope = Rotary(positions, 16, 600000.0, torch.float32, False, rope_dim=8)
    assert torch.equal(rope.rotate(x, rope.cos, rope.sin), want)
    assert torch.equal(want[..., 8:], x[..., 8:]) and not torch.equal(want[..., :8], x[..., :8])


def test_group_limited_router_equals_its_definition():
    """Row by row (fp64): groups ranked by their top-2 biased scores, the best topk_group kept, the
    top-k biased scores among them chosen, weights = unbiased sigmoid scores normalised × scale."""
    torch.manual_seed(0)
    moe = GroupLimitedMoE(16, 8, n_experts=12, top_k=3, n_group=4, topk_group=2, scaling=2.5, d_shared=8).double()
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.5)
    moe.gate.expert_bias.copy_(torch.randn(12, dtype=torch.float64) * 0.3)
    x = torch.randn(10, 16, dtype=torch.float64)
    want = torch.zeros_like(x)
    for n in range(10):
        s = torch.sigmoid(moe.gate.weight @ x[n])
        biased = s + moe.gate.expert_bias
        group_score = [sorted(biased[g * 3:(g + 1) * 3].tolist())[-2:] for g in range(4)]
        kept = sorted(range(4), key=lambda g: -sum(group_score[g]))[:2]
        allowed = [e for e in range(12) if e // 3 in kept]
        chosen = sorted(allowed, key=lambda e: -biased[e].item())[:3]
        w = s[chosen] / s[chosen].sum() * 2.5
        want[n] = sum(w[j] * moe.experts[e](x[n]) for j, e in enumerate(chosen)) + moe.shared_experts(x[n])
    torch.testing.assert_close(moe(x), want, atol=1e-12, rtol=0)


@pytest.mark.parametrize("change, message", [
    (dict(partial_rotary_factor=0.3), "partial_rotary_factor=0.3 gives 9 rotated dimensions"),
    (dict(n_group=3), "n_group=3 must divide num_experts=8"),
    (dict(first_k_dense_replace=-1), "first_k_dense_replace must be an integer >= 0"),
    (dict(use_sliding_window=True), "use_sliding_window=true is not supported"),
])
def test_config_refusals(change, message):
    from dynamic_dllm.models.llada2 import LLaDA2Model

    config = {**random_config("llada2", 262, 258, 257, head_dim=32), **change}
    with torch.device("meta"), pytest.raises(ValueError, match=message):
        LLaDA2Model(config)


EDITING_CASES = sorted(name for name in RECORD["cases"] if "/generate21/" in name)


@pytest.mark.parametrize("cache", ["none", "block-kv"])
@pytest.mark.parametrize("name", EDITING_CASES)
def test_editing_sampler_reproduces_llada21_generate(variants, name, cache):
    want = RECORD["cases"][name]
    assert not want["committed_mask"] and not want["stopped"]
    threshold, editing, post = (part.split("=")[1] for part in name.split("/")[2:])
    out = dd.generate(variants["dense-then-moe"], torch.tensor([RECORD["prompt"]]), cache=cache,
                      unmask=f"llada21:threshold={threshold},editing_threshold={editing},max_post_steps={post}",
                      gen_length=GEN, block_length=BLOCK)
    assert out.tokens[0].tolist() == want["tokens"]
    assert (out.stats.edited_tokens > 0) == (editing != "0.9")  # the default thresholds never edit this model


def test_editing_batch_equals_single_runs(variants):
    lm, spec = variants["all-moe-tied"], "llada21:threshold=0.3,editing_threshold=0.2,max_post_steps=3"
    a, b = RECORD["prompt"], [(i * 13 + 1) % 250 for i in range(10)]
    batch = dd.generate(lm, torch.tensor([a, b]), cache="block-kv", unmask=spec, gen_length=GEN, block_length=BLOCK)
    singles = [dd.generate(lm, torch.tensor([ids]), cache="block-kv", unmask=spec, gen_length=GEN, block_length=BLOCK)
               for ids in (a, b)]
    for row, single in enumerate(singles):
        assert torch.equal(batch.tokens[row], single.tokens[0])
    assert batch.stats.edited_tokens == sum(s.stats.edited_tokens for s in singles) > 0


class Edits(dd.UnmaskPolicy):
    """Commits like ``low-confidence`` one token per step and edits ``where(state)`` to ``token(state)``."""

    def __init__(self, where, token):
        self.where, self.token = where, token

    def commit(self, state, logits):
        masked = state.block_masked
        tokens = torch.where(masked, logits.argmax(-1), state.x[:, state.block_start:state.block_end])
        first = masked & (masked.cumsum(1) == 1)
        edits = self.where(state)
        tokens = torch.where(edits, self.token(state), tokens)
        return dd.Commit(positions=first, tokens=tokens, edits=edits)


@pytest.mark.parametrize("where, token", [
    (lambda s: torch.arange(s.block_start, s.block_end)[None] < s.prompt_length, lambda s: 1),  # the prompt's tail
    (lambda s: s.block_masked, lambda s: 1),                                                      # a mask
    (lambda s: ~s.block_masked & (s.step_in_block > 0), lambda s: s.mask_id),                    # writes [MASK]
])
def test_bad_edits_are_refused(variants, where, token):
    """The commit contract: edits rewrite decoded tokens of the current block only, never into a mask."""
    with pytest.raises(RuntimeError, match="edited masked, prompt or earlier-block positions, or wrote the mask token"):
        dd.generate(variants["dense-then-moe"], torch.tensor([RECORD["prompt"]]), unmask=Edits(where, token),
                    gen_length=GEN, block_length=BLOCK)


def test_edits_of_earlier_blocks_are_refused(variants):
    """A commit covering the whole response may still edit its current block only: earlier blocks are
    final (streamed, and kept as they are by block-kv)."""
    class EditsFirstBlock(dd.UnmaskPolicy):
        logits_rows = "response"

        def commit(self, state, logits):
            P, bs = state.prompt_length, state.block_start
            masked = state.masked[:, P:state.block_end]
            tokens = torch.where(masked, logits[:, :masked.shape[1]].argmax(-1), (state.x[:, P:state.block_end] + 1) % 250)
            first = masked & (masked.cumsum(1) == 1)
            edits = torch.zeros_like(masked)
            if bs > P:
                edits[:, 0] = True  # the first response token, in an earlier block
            return dd.Commit(positions=first, tokens=tokens, edits=edits)

    with pytest.raises(RuntimeError, match="earlier-block positions"):
        dd.generate(variants["dense-then-moe"], torch.tensor([RECORD["prompt"]]), unmask=EditsFirstBlock(),
                    gen_length=GEN, block_length=BLOCK)


def test_rows_still_refining_do_not_wait(variants, monkeypatch):
    """A row in its mask-free refinement steps is busy, not waiting: its caches are not frozen and
    restored around each step (only rows done with the block are)."""
    from dynamic_dllm.core.executor import PartialLayerExecutor

    frozen = []
    original = PartialLayerExecutor.freeze
    monkeypatch.setattr(PartialLayerExecutor, "freeze", lambda self, rows: frozen.append(tuple(rows)) or original(self, rows))
    out = dd.generate(variants["dense-then-moe"], torch.tensor([RECORD["prompt"]]), cache="block-kv",
                      unmask="llada21:threshold=0.3,editing_threshold=0.2,max_post_steps=4", gen_length=GEN, block_length=BLOCK)
    assert out.stats.edited_tokens > 0 and len(frozen) == out.stats.nfe and not any(frozen)
