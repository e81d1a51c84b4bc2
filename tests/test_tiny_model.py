"""The shipped ``tiny`` checkpoint: HF layout, default model, and a held-out accuracy floor."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from dynamic_dllm import DEFAULT_MODEL, load_model
from dynamic_dllm.models.builtin import TINY_CHECKPOINT
from dynamic_dllm.tasks.tiny_suite import heldout_items
from dynamic_dllm.tasks.training import evaluate

#: 8 items per task; the shipped model scores 24/24 on them with low-confidence. The floor leaves
#: room for harmless numeric drift but not for a broken loader, tokenizer, mask id or engine.
FLOOR_ITEMS = 24
FLOOR = 0.8


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny")


def test_default_model_is_the_shipped_tiny_checkpoint():
    assert DEFAULT_MODEL == "tiny"
    size = sum(p.stat().st_size for p in TINY_CHECKPOINT.iterdir())
    assert size <= 20 * 2**20, f"shipped checkpoint is {size} bytes, over 20 MB"


def test_checkpoint_is_in_llada_layout():
    config = json.loads((TINY_CHECKPOINT / "config.json").read_text())
    for field in ("d_model", "n_layers", "n_heads", "mlp_hidden_size", "rope_theta", "mask_token_id", "vocab_size",
                  "embedding_size", "max_sequence_length", "weight_tying"):
        assert field in config, field
    with safe_open(str(TINY_CHECKPOINT / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    expected = {"model.transformer.wte.weight", "model.transformer.ln_f.weight", "model.transformer.ff_out.weight"}
    for i in range(config["n_layers"]):
        expected |= {f"model.transformer.blocks.{i}.{n}.weight" for n in
                     ("attn_norm", "q_proj", "k_proj", "v_proj", "attn_out", "ff_norm", "ff_proj", "up_proj", "ff_out")}
    assert keys == expected


def test_tokenizer_loads_with_transformers():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(TINY_CHECKPOINT))
    config = json.loads((TINY_CHECKPOINT / "config.json").read_text())
    assert tok.mask_token_id == config["mask_token_id"]
    assert tok.eos_token_id == config["eos_token_id"]
    assert tok.pad_token_id is not None
    text = tok.apply_chat_template([{"role": "user", "content": "swap case: aB"}], tokenize=False,
                                   add_generation_prompt=True)
    assert "swap case: aB" in text and text.rstrip().endswith("<|end_header_id|>")


def test_heldout_accuracy_floor(tiny):
    torch.manual_seed(0)
    items = heldout_items(FLOOR_ITEMS)
    result = evaluate(tiny, items, gen_length=64, block_length=32, batch_size=FLOOR_ITEMS)
    assert result["accuracy"] >= FLOOR, result["failures"]
    assert set(result["per_task"]) == {"caesar", "fill", "swapcase"}


def test_cli_generate_uses_the_tiny_model_by_default(capsys):
    from dynamic_dllm.cli import main

    item = heldout_items(3)[2]  # a swapcase item
    assert main(["generate", item.prompt, "--gen-length", "64", "--block-length", "32", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["text"] == item.answer


def test_threshold_one_commits_one_token_per_step_on_the_confident_tiny_model(tiny):
    """The shipped model rounds many float32 probabilities to exactly 1.0; the threshold rule's
    float64 confidences keep threshold 1.0 at one token per step, equal to low-confidence."""
    import dynamic_dllm as dd

    prompts = [it.prompt for it in heldout_items(4)]
    config = dict(gen_length=64, block_length=32, steps=64)
    strict = dd.generate(tiny, prompts, unmask="threshold:threshold=1.0", **config)
    assert strict.stats.nfe == 64 and set(strict.stats.tokens_per_step) == {len(prompts)}
    assert torch.equal(strict.tokens, dd.generate(tiny, prompts, unmask="low-confidence", **config).tokens)
