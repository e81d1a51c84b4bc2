"""The Dream-architecture coders (DiffuCoder-7B, Dream-Coder-7B) load through the Dream adapter.

Their config.json is Dream's (``architectures: DreamModel``, ``model_type: Dream``, Qwen2.5 keys,
shifted logits; the model code is Dream's ``modeling_dream.py``, checked against the reference in
tests/test_dream_reference.py). What differs is the tokenizer: DiffuCoder pads with ``<|dlm_pad|>``
(its config.json keeps ``pad_token_id`` = ``<|endoftext|>``) and writes it after its answer. A random
Dream checkpoint with such a tokenizer: loads, pads left with ``<|dlm_pad|>``, decodes batch rows as
alone, and leaves ``<|dlm_pad|>`` out of the text.
"""

from __future__ import annotations

import json

import pytest
import torch

import dynamic_dllm as dd
from dynamic_dllm.models.random_checkpoint import build_random_checkpoint


@pytest.fixture(scope="module")
def diffucoder(tmp_path_factory):
    folder = build_random_checkpoint("dream", tmp_path_factory.mktemp("diffucoder") / "m", seed=4, std=0.5,
                                     tokenizer_style="diffucoder", n_layers=2, d_model=64, n_heads=4, n_kv_heads=2)
    return dd.load_model(str(folder))


def test_loads_with_the_dlm_pad_tokenizer(diffucoder):
    config = json.loads((diffucoder.path / "config.json").read_text())
    tok = diffucoder.tokenizer
    assert config["architectures"] == ["DreamModel"] and type(diffucoder.model).__name__ == "DreamModel"
    assert tok.pad_token == "<|dlm_pad|>" and tok.pad_token_id != config["pad_token_id"] == tok.eos_token_id
    assert tok.mask_token == "<|mask|>" and tok.mask_token_id == diffucoder.model.mask_id


def test_left_padded_batch_equals_single_runs(diffucoder):
    prompts = ["def add(a, b):", "x"]
    batch = dd.generate(diffucoder, prompts, chat=False, cache="dual", unmask="entropy", gen_length=16, block_length=8)
    enc = diffucoder.tokenizer(prompts, padding=True, return_tensors="pt")
    assert int(enc["input_ids"][1, 0]) == diffucoder.tokenizer.pad_token_id  # padded with <|dlm_pad|>
    for row, prompt in enumerate(prompts):
        single = dd.generate(diffucoder, [prompt], chat=False, cache="dual", unmask="entropy", gen_length=16, block_length=8)
        assert torch.equal(batch.tokens[row], single.tokens[0])


def test_dlm_pad_is_left_out_of_the_text(diffucoder):
    pad = diffucoder.tokenizer.pad_token_id
    text = diffucoder.tokenizer.batch_decode(torch.tensor([[100, 101, pad, pad]]), skip_special_tokens=True)[0]
    assert "<|dlm_pad|>" not in text and text == diffucoder.tokenizer.decode([100, 101])
