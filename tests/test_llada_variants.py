"""LLaDA-layout options against the reference modeling code (NVlabs/Fast-dLLM 24cc59e
``llada/model/modeling_llada.py``): the LLaDA-8B layout and the iLLaDA-style grouped-query
attention with tied embeddings (``weight_tying=true``). ``tests/data/llada_reference_logits.json``
holds the reference's full-forward logits recorded by ``tools/llada_reference_logits.py`` on
checkpoints built by :func:`build_random_checkpoint` with the recorded arguments; our plain forward
must match to 1e-4 (fp32), and the tied GQA variant generates through the cached executor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import dynamic_dllm as dd
from dynamic_dllm.models.random_checkpoint import build_random_checkpoint

RECORD = json.loads((Path(__file__).parent / "data" / "llada_reference_logits.json").read_text())


@pytest.mark.parametrize("variant", sorted(RECORD["variants"]))
def test_logits_equal_the_reference_modeling_code(tmp_path, variant):
    lm = dd.load_model(str(build_random_checkpoint("llada", tmp_path / variant, **RECORD["variants_args"][variant])))
    rec = RECORD["variants"][variant]
    with torch.no_grad():
        ours = lm.model(torch.tensor([rec["input_ids"]]))[0]
    assert torch.allclose(ours, torch.tensor(rec["logits"]), atol=1e-4, rtol=0)


def test_tied_gqa_variant_generates_with_every_kind_of_policy(tmp_path):
    lm = dd.load_model(str(build_random_checkpoint("llada", tmp_path / "t", **RECORD["variants_args"]["gqa-tied"])))
    assert lm.model.tied and lm.model.n_kv_heads == 2
    base = dd.generate(lm, "hi", cache="none", gen_length=16, block_length=8)
    for cache, unmask in [("dual", "threshold"), ("dcu+window", "apd"), ("dcu:budget=1000+window:size=1000", "low-confidence")]:
        out = dd.generate(lm, "hi", cache=cache, unmask=unmask, gen_length=16, block_length=8)
        assert out.tokens.shape == (1, 16) and not bool((out.tokens == lm.model.mask_id).any())
        if cache.startswith("dcu:budget=1000"):  # a budget covering every row equals no cache
            assert torch.equal(out.tokens, base.tokens)


def test_tied_gqa_variant_reproduces_llada_generate(tmp_path):
    """The iLLaDA-style variant under LLaDA's sampler (written out in tests/test_reference_samplers.py)."""
    from test_reference_samplers import llada_reference

    lm = dd.load_model(str(build_random_checkpoint("llada", tmp_path / "t", **RECORD["variants_args"]["gqa-tied"])))
    prompt = torch.tensor([[72, 101, 108, 108, 111, 32], [87, 111, 114, 108, 100, 33]])
    out = dd.generate(lm, prompt, cache="none", unmask="low-confidence", gen_length=16, block_length=8, steps=16)
    assert torch.equal(out.tokens, llada_reference(lm.model, prompt, 16, 16, 8))
