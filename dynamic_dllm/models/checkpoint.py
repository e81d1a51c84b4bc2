"""Reading and writing HF-format checkpoint folders.

A folder holds ``config.json`` (the family's own field names and ``model_type``), weights as a
single ``model.safetensors`` or shards ``model-0000k-of-0000n.safetensors`` with
``model.safetensors.index.json``, and a tokenizer loadable by ``AutoTokenizer``. The adapter class
is chosen by ``architectures`` (else ``model_type``) through the model registry (``register_models``
hook); mask/EOS/pad ids come from the folder (the mask id from config.json, else from the tokenizer's
mask token; the family's default only when neither names one).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Optional

import attrs
import torch
from safetensors.torch import load_file, save_file

from ..core.architecture import DecoderModel

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"


@attrs.frozen(eq=False)
class LoadedModel:
    """A model adapter with its tokenizer and the folder it came from."""

    model: DecoderModel
    tokenizer: object
    path: Optional[Path] = None


#: files AutoTokenizer builds a tokenizer from (one must be there)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tiktoken.model")


def _reading(path: Path, read):
    """``read()``, with whatever a third-party reader raises on a damaged file (json, safetensors,
    transformers) turned into one ``ValueError`` line naming the file."""
    try:
        return read()
    except Exception as exc:  # noqa: BLE001 - the readers raise many unrelated types
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise ValueError(f"cannot read {path}: {message[:300]}") from exc


def read_config(folder: Path) -> dict:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise ValueError(f"{folder} is not a checkpoint folder: config.json not found")
    config = _reading(path, lambda: json.loads(path.read_text()))
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a JSON object, got a {type(config).__name__}")
    return config


def read_state_dict(folder: Path) -> dict:
    """All tensors of the folder, from one file or from the shards its index names."""
    folder = Path(folder)
    if (folder / WEIGHTS_NAME).is_file():
        return _reading(folder / WEIGHTS_NAME, lambda: load_file(str(folder / WEIGHTS_NAME)))
    if (folder / INDEX_NAME).is_file():
        weight_map = _reading(folder / INDEX_NAME, lambda: dict(json.loads((folder / INDEX_NAME).read_text())["weight_map"]))
        state = {}
        for shard in sorted(set(weight_map.values())):
            state.update(_reading(folder / shard, lambda shard=shard: load_file(str(folder / shard))))
        missing = set(weight_map) - set(state)
        if missing:
            raise ValueError(f"{folder}: tensors listed in {INDEX_NAME} but absent from the shards: {sorted(missing)[:5]}")
        return state
    raise ValueError(f"{folder}: no {WEIGHTS_NAME} and no {INDEX_NAME}")


def load_checkpoint(folder, dtype: torch.dtype = torch.float32, device: str = "cpu") -> LoadedModel:
    """Build the adapter named by ``config.json``'s ``model_type`` and load weights + tokenizer."""
    from transformers import AutoTokenizer

    from ..core.registry import get_registry

    folder = Path(folder)
    config = read_config(folder)
    tokenizer = None
    has_tokenizer = any((folder / name).is_file() for name in TOKENIZER_FILES)
    if config.get("mask_token_id") is None and has_tokenizer:  # the tokenizer's mask token, not the family default
        tokenizer = _reading(folder / "tokenizer.json", lambda: _load_tokenizer(AutoTokenizer, folder))
        if getattr(tokenizer, "mask_token_id", None) is not None:
            config = {**config, "mask_token_id": tokenizer.mask_token_id}
    try:
        model_cls = get_registry().model_class_for(config)
    except ValueError as exc:
        raise ValueError(f"{folder}/config.json: {exc}") from None
    try:
        with torch.device("meta"):
            model = model_cls(config)
    except ValueError as exc:  # the adapter's config checks: name the folder too
        raise ValueError(f"{folder}/{exc}" if str(exc).startswith("config.json") else f"{folder}: {exc}") from None
    state = read_state_dict(folder)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing, unexpected = set(shapes) - set(state), set(state) - set(shapes)
    if missing or unexpected:
        raise ValueError(
            f"{folder}: weights do not match the {model_cls.family} layout;"
            f" missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    for key, tensor in state.items():
        if tuple(tensor.shape) != shapes[key]:
            raise ValueError(f"{folder}: weight {key} has shape {tuple(tensor.shape)}, config.json implies {shapes[key]}")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{folder}: weight {key} holds NaN or infinite values")
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, assign=True)
    model.to(device).eval().requires_grad_(False)
    if not has_tokenizer:
        raise ValueError(f"{folder}: no tokenizer — none of {', '.join(TOKENIZER_FILES)} is in the folder"
                         " (copy the checkpoint's tokenizer files next to config.json)")
    if tokenizer is None:
        tokenizer = _reading(folder / "tokenizer.json", lambda: _load_tokenizer(AutoTokenizer, folder))
    tokenizer.padding_side = "left"
    _check_special_ids(model, tokenizer, folder)
    return LoadedModel(model=model, tokenizer=tokenizer, path=folder)


def _load_tokenizer(auto_tokenizer, folder: Path):
    """``AutoTokenizer`` on the folder, without transformers' warning that ``model_type`` is unknown to it."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():  # e.g. "rope_scaling is deprecated" from a config transformers reads for the tokenizer
            warnings.simplefilter("ignore", FutureWarning)
            return auto_tokenizer.from_pretrained(str(folder))
    finally:
        hf_logging.set_verbosity(level)


def _check_special_ids(model: DecoderModel, tokenizer, folder: Path) -> None:
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id == model.mask_id:
        raise ValueError(f"{folder}: the tokenizer's pad id equals the mask id {model.mask_id}")
    if model.mask_id >= model.vocab_size or model.eos_id >= model.vocab_size:
        raise ValueError(f"{folder}: mask id {model.mask_id} or EOS id {model.eos_id} outside the vocabulary ({model.vocab_size})")


def save_checkpoint(model: DecoderModel, config: dict, folder, tokenizer=None, max_shard_bytes: Optional[int] = None) -> Path:
    """Write ``config.json`` and the weights (sharded with an index when ``max_shard_bytes`` is
    given and exceeded) and, if given, the tokenizer."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if max_shard_bytes is None or sum(t.numel() * t.element_size() for t in state.values()) <= max_shard_bytes:
        save_file(state, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
    else:
        shards, current, size = [], {}, 0
        for name, t in state.items():
            nbytes = t.numel() * t.element_size()
            if current and size + nbytes > max_shard_bytes:
                shards.append(current)
                current, size = {}, 0
            current[name] = t
            size += nbytes
        shards.append(current)
        weight_map = {}
        for i, shard in enumerate(shards, 1):
            name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(folder / name), metadata={"format": "pt"})
            weight_map.update({k: name for k in shard})
        total = sum(t.numel() * t.element_size() for t in state.values())
        (folder / INDEX_NAME).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))
    return folder
