"""LLaDA-MoE (mixture-of-experts FFN, bidirectional) against its reference code.

``tests/data/llada_moe_reference.json`` holds what ``tools/llada_moe_reference.py`` recorded by running
the checkpoint's ``modeling_lladamoe.py`` (InfiniTensor/InfiniLM 0a7e522a, transformers 4.52.4) and
ML-GSAI/LLaDA b7e6c35's ``generate`` (the sampler the model card runs) on random LLaDA-MoE checkpoints
built by :func:`build_random_checkpoint` with the recorded arguments: full-forward logits of an
all-MoE GQA variant and of a dense + MoE-with-shared-expert variant with tied embeddings, and greedy
low-confidence tokens for two step counts on a batch of two prompts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import dynamic_dllm as dd
from dynamic_dllm.core.executor import PartialLayerExecutor
from dynamic_dllm.core.moe import SparseMoE
from dynamic_dllm.core.rows import RowSet
from dynamic_dllm.models.random_checkpoint import build_random_checkpoint, random_config

RECORD = json.loads((Path(__file__).parent / "data" / "llada_moe_reference.json").read_text())


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    root = tmp_path_factory.mktemp("llada_moe_ref")
    return {name: dd.load_model(str(build_random_checkpoint("llada-moe", root / name, **sizes)))
            for name, sizes in RECORD["variants"].items()}


def test_loads_by_architecture_although_model_type_says_llada(variants):
    lm = variants["dense-moe-shared-tied"]
    config = json.loads((lm.path / "config.json").read_text())
    assert config["architectures"] == ["LLaDAMoEModelLM"] and config["model_type"] == "llada"
    assert type(lm.model).__name__ == "LLaDAMoEModel" and lm.model.moe_layers == (False, True)
    keys = set(lm.model.state_dict())
    assert {"model.layers.0.mlp.gate_proj.weight", "model.layers.1.mlp.gate.weight",
            "model.layers.1.mlp.experts.5.down_proj.weight", "model.layers.1.shared_expert.up_proj.weight",
            "model.layers.0.self_attn.q_norm.weight"} <= keys
    assert "lm_head.weight" not in keys  # tied
    assert "lm_head.weight" in variants["moe-gqa"].model.state_dict()


@pytest.mark.parametrize("variant", sorted(RECORD["variants"]))
def test_logits_equal_the_reference_modeling_code(variants, variant):
    rec = RECORD["cases"][f"{variant}/logits"]
    with torch.no_grad():
        ours = variants[variant].model(torch.tensor([rec["input_ids"]]))[0]
    assert torch.allclose(ours, torch.tensor(rec["logits"]), atol=1e-4, rtol=0)


SAMPLER_CASES = sorted(name for name in RECORD["cases"] if "/generate/" in name)


@pytest.mark.parametrize("name", SAMPLER_CASES)
def test_low_confidence_reproduces_llada_generate(variants, name):
    steps, gen, block = (int(part.split("=")[1]) for part in name.split("/")[2:])
    out = dd.generate(variants["moe-gqa"], torch.tensor(RECORD["prompts"]), cache="none", unmask="low-confidence",
                      gen_length=gen, block_length=block, steps=steps)
    assert out.tokens.tolist() == RECORD["cases"][name]["tokens"]


def test_record_step_counts_differ():
    assert len({str(RECORD["cases"][n]["tokens"]) for n in SAMPLER_CASES}) == len(SAMPLER_CASES) == 2


@pytest.mark.parametrize("cache, unmask", [("dual", "threshold"), ("dcu+window", "apd"), ("auto", "apd"),
                                           ("prefix", "threshold")])
def test_acceleration_policies_generate(variants, cache, unmask):
    out = dd.generate(variants["moe-gqa"], torch.tensor(RECORD["prompts"]), cache=cache, unmask=unmask,
                      gen_length=16, block_length=8)
    assert out.tokens.shape == (2, 16) and not bool((out.tokens == variants["moe-gqa"].model.mask_id).any())


def test_partial_layers_route_only_the_recomputed_rows(llada_moe):
    """The executor hands the mixture only the rows it recomputes (padding entries of the index included)."""
    model = llada_moe.model
    routed = []
    hooks = [model.model.layers[i].mlp.register_forward_hook(lambda m, args, out: routed.append(args[0].shape[:-1].numel()))
             for i in range(model.n_layers)]
    try:
        B, L = 2, 20
        x = torch.randint(0, 250, (B, L))
        ex = PartialLayerExecutor(model, torch.ones(B, L, dtype=torch.bool), torch.arange(L).expand(B, L))
        ex.forward(x, None, full=True, head_start=0, head_end=1)
        assert routed == [B * L] * model.n_layers
        routed.clear()
        span, index = RowSet.span(4, 7), RowSet.indexed(torch.tensor([[1, 7], [2, 9]]))
        ex.forward(x, lambda layer, ctx: span if layer == 0 else index, False, 0, 1)
        assert routed == [B * 3] + [B * 2] * (model.n_layers - 1)
    finally:
        for h in hooks:
            h.remove()


def test_mixture_equals_its_definition():
    """Dispatch by sorted expert slices equals Σ_j w_j·Expert_{e_j}(x) written row by row (fp64)."""
    torch.manual_seed(0)
    moe = SparseMoE(16, 8, n_experts=5, top_k=3).double()
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.5)
    x = torch.randn(2, 7, 16, dtype=torch.float64)
    want = torch.zeros_like(x)
    for b in range(2):
        for i in range(7):
            probs = torch.softmax(moe.gate(x[b, i]), -1)
            w, e = probs.topk(3)
            want[b, i] = sum(w[j] * moe.experts[int(e[j])](x[b, i]) for j in range(3))
    torch.testing.assert_close(moe(x), want, atol=1e-12, rtol=0)
    assert moe(x[:0]).shape == (0, 7, 16)


@pytest.mark.parametrize("change, message", [
    (dict(partial_rotary_factor=0.5), "partial_rotary_factor=0.5"),
    (dict(moe_layer_freq=[1]), "moe_layer_freq must list"),
    (dict(num_experts_per_tok=9), "num_experts_per_tok=9 exceeds num_experts=8"),
    (dict(clip_qkv=8.0), "clip_qkv=8.0 is not supported"),
    (dict(expert_intermediate_size=0), "expert_intermediate_size must be a positive integer"),
])
def test_config_refusals(change, message):
    from dynamic_dllm.models.llada_moe import LLaDAMoEModel

    config = {**random_config("llada-moe", 262, 258, 257), **change}
    with torch.device("meta"), pytest.raises(ValueError, match=message):
        LLaDAMoEModel(config)
