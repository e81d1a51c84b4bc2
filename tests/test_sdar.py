"""SDAR (block diffusion, Qwen3 layout) against its reference code, and the ``block-kv`` cache.

``tests/data/sdar_reference.json`` holds what ``tools/sdar_reference.py`` recorded by running
JetAstra/SDAR c2041a8's ``modeling_sdar.py`` (transformers 4.52.4, CPU stand-ins for its flash-attn
kernels) and its paper-evaluation sampler ``block_diffusion_generate`` on a random SDAR checkpoint
built by :func:`build_random_checkpoint` with the recorded arguments: full-forward logits under the
block-causal mask, and greedy tokens for static and dynamic thresholds with 4 and 2 steps per
block, on a prompt whose last two tokens share the first block with masks.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import dynamic_dllm as dd
from dynamic_dllm.core.architecture import block_causal_mask
from dynamic_dllm.models.random_checkpoint import build_random_checkpoint

RECORD = json.loads((Path(__file__).parent / "data" / "sdar_reference.json").read_text())
SAMPLER_CASES = sorted(name for name in RECORD["cases"] if name != "logits")


@pytest.fixture(scope="module")
def sdar(tmp_path_factory):
    return dd.load_model(str(build_random_checkpoint("sdar", tmp_path_factory.mktemp("sdar") / "sdar", **RECORD["checkpoint"])))


def test_loads_the_hf_layout_by_architecture(sdar):
    config = json.loads((sdar.path / "config.json").read_text())
    assert config["architectures"] == ["SDARForCausalLM"] and config["model_type"] == "sdar"
    assert type(sdar.model).__name__ == "SDARModel" and sdar.model.block_causal and sdar.model.block_size == 4
    keys = set(sdar.model.state_dict())
    assert {"model.layers.0.self_attn.q_norm.weight", "model.layers.0.self_attn.k_norm.weight", "lm_head.weight"} <= keys
    assert sdar.model.head_dim == 32 != sdar.model.d_model // sdar.model.n_heads  # head_dim from config (Qwen3)
    assert sdar.tokenizer.mask_token == "<|MASK|>" and sdar.tokenizer.mask_token_id == sdar.model.mask_id


def test_logits_equal_the_reference_modeling_code(sdar):
    rec = RECORD["cases"]["logits"]
    with torch.no_grad():
        ours = sdar.model(torch.tensor([rec["input_ids"]]))[0]
    assert torch.allclose(ours, torch.tensor(rec["logits"]), atol=1e-4, rtol=0)


@pytest.mark.parametrize("cache", ["none", "block-kv"])
@pytest.mark.parametrize("name", SAMPLER_CASES)
def test_sdar_sampler_reproduces_block_diffusion_generate(sdar, name, cache):
    want = RECORD["cases"][name]
    assert not want["committed_mask"]
    steps, threshold = (float(part.split("=")[1]) for part in name.split("/"))
    G, Lb = RECORD["gen_length"], RECORD["block_length"]
    out = dd.generate(sdar, torch.tensor([RECORD["prompt"]]), cache=cache, unmask=f"sdar:threshold={threshold}",
                      gen_length=G, block_length=Lb, steps=int(steps) * G // Lb)
    assert out.tokens[0].tolist() == want["tokens"]


def test_dynamic_thresholds_are_distinguished_by_the_record():
    cases = RECORD["cases"]
    assert cases["steps=4/threshold=1.0"]["tokens"] != cases["steps=4/threshold=0.1"]["tokens"]


@pytest.mark.parametrize("unmask", ["low-confidence", "threshold:threshold=0.2", "apd", "eb-sampler", "sdar:threshold=0.1"])
def test_block_kv_equals_recomputing_everything(sdar, unmask):
    """Exact for a block-causal model: the same tokens as ``none``, at a fraction of the rows."""
    ids = torch.tensor([RECORD["prompt"] + [7, 9, 11]])  # 13 ids: a tail of one in the first block
    base = dd.generate(sdar, ids, cache="none", unmask=unmask, gen_length=24, block_length=4, steps=24)
    kv = dd.generate(sdar, ids, cache="block-kv", unmask=unmask, gen_length=24, block_length=4, steps=24)
    assert torch.equal(kv.tokens, base.tokens) and kv.tokens.shape == (1, 24)
    assert kv.stats.nfe == base.stats.nfe and kv.stats.recompute_fraction < 0.5


def test_row_recompute_policies_run_on_block_causal_models(sdar):
    for cache, unmask in [("dual", "threshold"), ("dcu+window", "apd")]:
        out = dd.generate(sdar, torch.tensor([RECORD["prompt"]]), cache=cache, unmask=unmask, gen_length=16, block_length=4)
        assert out.tokens.shape == (1, 16) and not bool((out.tokens == sdar.model.mask_id).any())


def test_equal_length_batch_equals_single_runs(sdar):
    a, b = RECORD["prompt"], [(i * 13 + 1) % 250 for i in range(10)]
    batch = dd.generate(sdar, torch.tensor([a, b]), cache="block-kv", unmask="sdar", gen_length=16, block_length=4, steps=16)
    for row, ids in enumerate((a, b)):
        single = dd.generate(sdar, torch.tensor([ids]), cache="block-kv", unmask="sdar", gen_length=16, block_length=4, steps=16)
        assert torch.equal(batch.tokens[row], single.tokens[0])


def test_block_causal_mask():
    m = block_causal_mask(6, 2)
    assert m.tolist()[2] == [True, True, True, True, False, False]  # row 2 (block 1) sees blocks 0 and 1
    assert m.tolist()[5] == [True] * 6


@pytest.mark.parametrize("kwargs, message", [
    (dict(block_length=8), "trained with block_size=4"),
    (dict(attention_mask=torch.tensor([[0, 1, 1], [1, 1, 1]])), "block-causal"),
])
def test_refusals(sdar, kwargs, message):
    ids = torch.tensor([[5, 6, 7], [8, 9, 10]])
    with pytest.raises(ValueError, match=message):
        dd.generate(sdar, ids, gen_length=16, **{"block_length": 4, **kwargs})


def test_block_kv_is_refused_on_bidirectional_models():
    with pytest.raises(ValueError, match="block-causal models"):
        dd.generate("tiny", "swap case: ab", cache="block-kv", gen_length=32)


def test_server_batches_block_causal_requests_only_with_equal_prompt_lengths(sdar):
    """A padded batch is refused for block-causal models, so the server's batch key holds the prompt length."""
    pytest.importorskip("starlette")
    from dynamic_dllm.serve.protocol import parse_request

    defaults = {"cache": "auto", "unmask": "sdar", "block_length": 4, "max_tokens": 8}
    job = lambda prompt: parse_request({"prompt": prompt}, "completion", sdar, "sdar", defaults)  # noqa: E731
    assert job("abcd").key == job("wxyz").key != job("abcde").key
    assert job("abcd").cache == "block-kv"  # 'auto' (the server's default) is the model's exact cache


def test_block_length_defaults_to_the_trained_block_size(sdar):
    """No block_length given: a block-diffusion model decodes in its block_size (4), not the usual 32."""
    ids = torch.tensor([RECORD["prompt"]])
    default = dd.generate(sdar, ids, unmask="sdar", gen_length=16)
    assert torch.equal(default.tokens, dd.generate(sdar, ids, unmask="sdar", gen_length=16, block_length=4).tokens)
    with pytest.raises(ValueError, match="trained with block_size=4"):
        dd.generate(sdar, ids, gen_length=32, block_length=32)  # named explicitly: still refused
