"""Checkpoint folders in HF layout: keys, sharding, tokenizer, special ids, padding invariance."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from dynamic_dllm.models.checkpoint import load_checkpoint
from dynamic_dllm.models.random_checkpoint import build_random_checkpoint

from conftest import SMALL

LLADA_KEYS = {"model.transformer.wte.weight", "model.transformer.ln_f.weight", "model.transformer.ff_out.weight"} | {
    f"model.transformer.blocks.0.{n}.weight"
    for n in ("attn_norm", "q_proj", "k_proj", "v_proj", "attn_out", "ff_norm", "ff_proj", "up_proj", "ff_out")
}
DREAM_KEYS = {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"} | {
    f"model.layers.0.{n}" for n in (
        "input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.q_proj.weight", "self_attn.q_proj.bias",
        "self_attn.k_proj.weight", "self_attn.k_proj.bias", "self_attn.v_proj.weight", "self_attn.v_proj.bias",
        "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight")
}


def test_llada_folder_has_hf_keys_and_config_names(llada_dir):
    keys = set(load_file(str(llada_dir / "model.safetensors")))
    assert LLADA_KEYS <= keys and not any(k.endswith(".bias") for k in keys)
    assert len([k for k in keys if ".blocks." in k]) == 9 * SMALL["n_layers"]
    config = json.loads((llada_dir / "config.json").read_text())
    assert config["model_type"] == "llada" and {"d_model", "n_layers", "n_heads", "mlp_hidden_size", "mask_token_id"} <= set(config)


def test_dream_folder_has_hf_keys(dream_dir):
    keys = set(load_file(str(dream_dir / "model.safetensors")))
    assert DREAM_KEYS <= keys and "model.layers.0.self_attn.o_proj.bias" not in keys
    assert load_checkpoint(dream_dir).model.n_kv_heads == 2  # GQA


def test_sharded_checkpoint_loads_identically(tmp_path, llada_dir, llada):
    folder = build_random_checkpoint("llada", tmp_path / "sharded", seed=1, std=0.5, max_shard_bytes=60_000, **SMALL)
    assert (folder / "model.safetensors.index.json").is_file() and not (folder / "model.safetensors").exists()
    assert len(list(folder.glob("model-*-of-*.safetensors"))) > 1
    sharded = load_checkpoint(folder)
    x = torch.randint(0, 250, (1, 10))
    torch.testing.assert_close(sharded.model(x), llada.model(x), atol=0, rtol=0)


def test_tokenizer_and_special_ids_come_from_the_folder(llada_dir, llada):
    tok = AutoTokenizer.from_pretrained(str(llada_dir))
    assert tok.mask_token_id == llada.model.mask_id and tok.eos_token_id == llada.model.eos_id
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    config = json.loads((llada_dir / "config.json").read_text())
    config["mask_token_id"] = config["eos_token_id"] - 1  # a different id in the folder is honoured
    (llada_dir.parent / "moved").mkdir()
    moved = llada_dir.parent / "moved"
    for f in llada_dir.iterdir():
        (moved / f.name).write_bytes(f.read_bytes())
    (moved / "config.json").write_text(json.dumps(config))
    assert load_checkpoint(moved).model.mask_id == config["mask_token_id"]


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_left_padded_row_gets_the_same_logits_as_alone(family, request):
    model = copy.deepcopy(request.getfixturevalue(family).model).double()  # fp64: kernels differ with/without a mask
    short = torch.tensor([[72, 101, 108, 108, 111]])
    long = torch.tensor([[87, 111, 114, 108, 100, 33, 33, 63]])
    pad = long.shape[1] - short.shape[1]
    ids = torch.cat([torch.cat([torch.full((1, pad), model.pad_id), short], 1), long])
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[0, :pad] = False
    positions = (mask.long().cumsum(1) - 1).clamp(min=0)
    logits = model(ids, attention_mask=mask, position_ids=positions)
    torch.testing.assert_close(logits[0, pad:], model(short)[0], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(logits[1], model(long)[0], atol=1e-10, rtol=1e-10)


def test_bad_folders_give_clear_errors(tmp_path, llada_dir):
    with pytest.raises(ValueError, match="config.json not found"):
        load_checkpoint(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "gpt9"}))
    with pytest.raises(ValueError, match="no model adapter for model_type 'gpt9'; known: Dream, Fast_dLLM_Qwen, llada, llada-moe, llada2_moe, sdar"):
        load_checkpoint(broken)
    (broken / "config.json").write_text((llada_dir / "config.json").read_text())
    with pytest.raises(ValueError, match="no model.safetensors"):
        load_checkpoint(broken)


def test_mask_id_from_the_tokenizer_when_config_names_none(tmp_path, llada_dir):
    """A config.json without mask_token_id (iLLaDA-style): the tokenizer's mask token decides, not
    LLaDA-8B's default 126336 (which lies outside this vocabulary)."""
    import shutil

    folder = tmp_path / "no-mask-id"
    shutil.copytree(llada_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config.pop("mask_token_id")
    (folder / "config.json").write_text(json.dumps(config))
    lm = load_checkpoint(folder)
    assert lm.model.mask_id == lm.tokenizer.mask_token_id == load_checkpoint(llada_dir).model.mask_id != 126336
