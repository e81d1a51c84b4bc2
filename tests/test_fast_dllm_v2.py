"""Fast-dLLM v2 (block diffusion, Qwen2.5 layout, shifted logits) against its reference code.

``tests/data/fast_dllm_v2_reference.json`` holds what ``tools/fast_dllm_v2_reference.py`` recorded by
running the checkpoint's ``modeling.py`` (the Fast_dLLM_v2_7B copy committed in
Satgoy152/DualDiffusion 189fa7a, transformers 4.53.1) on a random Fast-dLLM v2 checkpoint built by
:func:`build_random_checkpoint` with the recorded arguments: full-forward logits under the
block-causal evaluation mask, and ``generate``'s greedy tokens (exact path, no sub-block cache) at
thresholds 1.0 and 0.3 for prompts shorter than a block, ending inside one, and filling two.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import dynamic_dllm as dd
from dynamic_dllm.models.random_checkpoint import build_random_checkpoint

RECORD = json.loads((Path(__file__).parent / "data" / "fast_dllm_v2_reference.json").read_text())
SAMPLER_CASES = sorted(name for name in RECORD["cases"] if name != "logits")
BLOCK, SUB = RECORD["block_length"], RECORD["sub_block"]


def prompt(n: int) -> torch.Tensor:
    return torch.tensor([[(i * 37 + 5) % 250 for i in range(n)]])


@pytest.fixture(scope="module")
def fdllm2(tmp_path_factory):
    folder = build_random_checkpoint("fast-dllm-v2", tmp_path_factory.mktemp("fdllm2") / "fdllm2", **RECORD["checkpoint"])
    return dd.load_model(str(folder))


def test_loads_the_hf_layout_by_architecture(fdllm2):
    config = json.loads((fdllm2.path / "config.json").read_text())
    assert config["architectures"] == ["Fast_dLLM_QwenForCausalLM"] and config["model_type"] == "Fast_dLLM_Qwen"
    m = fdllm2.model
    assert type(m).__name__ == "FastDLLMv2Model" and m.block_causal and m.block_size == config["bd_size"] == BLOCK
    assert m.logit_shift == 1 and m.default_cache == "block-kv"
    assert {"model.layers.0.self_attn.q_proj.bias", "lm_head.weight"} <= set(m.state_dict())


def test_logits_equal_the_reference_modeling_code(fdllm2):
    rec = RECORD["cases"]["logits"]
    with torch.no_grad():
        ours = fdllm2.model(torch.tensor([rec["input_ids"]]), block_length=BLOCK)[0]
    assert torch.allclose(ours, torch.tensor(rec["logits"]), atol=1e-4, rtol=0)


@pytest.mark.parametrize("cache", ["none", "block-kv"])
@pytest.mark.parametrize("name", SAMPLER_CASES)
def test_sampler_reproduces_the_reference_generate(fdllm2, name, cache):
    """The reference's output (through the next block's autoregressive first token) is our prefix."""
    want = RECORD["cases"][name]
    assert not want["committed_mask"] and not want["stopped"]
    n, threshold = (float(part.split("=")[1]) for part in name.split("/"))
    gen = -(-len(want["tokens"]) // BLOCK) * BLOCK
    out = dd.generate(fdllm2, prompt(int(n)), cache=cache, unmask=f"fast-dllm-v2:threshold={threshold},sub_block={SUB}",
                      gen_length=gen, block_length=BLOCK)
    assert out.tokens[0, :len(want["tokens"])].tolist() == want["tokens"]


def test_thresholds_are_distinguished_by_the_record():
    cases = RECORD["cases"]
    for n in (5, 13, 16):
        assert cases[f"prompt={n}/threshold=1.0"]["tokens"] != cases[f"prompt={n}/threshold=0.3"]["tokens"]


@pytest.mark.parametrize("unmask", ["low-confidence", "threshold:threshold=0.2", "apd", "eb-sampler", "fast-dllm-v2"])
def test_block_kv_equals_recomputing_everything(fdllm2, unmask):
    ids = prompt(11)
    base = dd.generate(fdllm2, ids, cache="none", unmask=unmask, gen_length=24, block_length=BLOCK)
    kv = dd.generate(fdllm2, ids, cache="auto", unmask=unmask, gen_length=24, block_length=BLOCK)
    assert torch.equal(kv.tokens, base.tokens) and kv.tokens.shape == (1, 24)
    assert kv.stats.nfe == base.stats.nfe and kv.stats.recompute_fraction < 0.6


def test_block_start_is_decoded_first_and_alone(fdllm2):
    """Prompt filling a whole block: the first generated token is committed alone at step one."""
    out = dd.generate(fdllm2, prompt(16), cache="block-kv", unmask="fast-dllm-v2:threshold=0.0,sub_block=4",
                      gen_length=16, block_length=BLOCK)
    assert out.stats.tokens_per_step[0] == 1 and out.stats.tokens_per_step[1] > 1


def test_equal_length_batch_equals_single_runs(fdllm2):
    a, b = prompt(13)[0].tolist(), [(i * 13 + 1) % 250 for i in range(13)]
    kw = dict(cache="block-kv", unmask="fast-dllm-v2:threshold=0.3,sub_block=4", gen_length=16, block_length=BLOCK)
    batch = dd.generate(fdllm2, torch.tensor([a, b]), **kw)
    for row, ids in enumerate((a, b)):
        assert torch.equal(batch.tokens[row], dd.generate(fdllm2, torch.tensor([ids]), **kw).tokens[0])


def test_sub_block_must_divide_the_block(fdllm2):
    with pytest.raises(ValueError, match="sub_block=3 must divide block_length=8"):
        dd.generate(fdllm2, prompt(5), unmask="fast-dllm-v2:sub_block=3", gen_length=16, block_length=BLOCK)


def test_sampler_on_a_bidirectional_model_has_no_autoregressive_first_token(llada):
    """On LLaDA there is no shifted prediction for the block start: sub-blocks only."""
    out = dd.generate(llada, prompt(6), unmask="fast-dllm-v2:threshold=1.0,sub_block=4", gen_length=16, block_length=8)
    assert out.stats.nfe == 16 and set(out.stats.tokens_per_step) == {1}
