"""The Python entry points: load a model by name or folder, and generate with named policies.

    >>> import dynamic_dllm as dd
    >>> lm = dd.load_model()                    # the embedded default model
    >>> out = dd.generate(lm, "2+2=", cache="none", unmask="low-confidence", gen_length=64, steps=64)
    >>> out.text, out.stats.nfe
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import attrs
import torch

from .core.engine import denoise
from .core.registry import get_registry
from .core.types import GenerationConfig, GenerationResult
from .models.checkpoint import LoadedModel, load_checkpoint

#: Model used when none is named: the trained tiny LLaDA-architecture checkpoint shipped in the package.
DEFAULT_MODEL = "tiny"


def load_model(name_or_path: Optional[str] = None, dtype: str = "float32", device: str = "cpu") -> LoadedModel:
    """A checkpoint folder (HF layout) or a registered name (``dynamic-dllm policies`` lists none;
    ``dynamic-dllm plugins`` shows who provides names)."""
    if name_or_path is not None and not isinstance(name_or_path, (str, Path)):
        raise ValueError(f"model must be a folder path or a registered name, got {type(name_or_path).__name__} "
                         f"{repr(name_or_path)[:60]}")
    name_or_path = str(name_or_path or DEFAULT_MODEL)
    config = GenerationConfig(dtype=dtype, device=device)
    path = Path(name_or_path)
    if not path.is_dir():
        path = Path(get_registry().checkpoint(str(name_or_path)).obj())
    return load_checkpoint(path, dtype=config.torch_dtype, device=device)


def encode_prompts(tokenizer, prompts: Union[str, Sequence[str]], chat: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ``(input_ids, attention_mask)``; with ``chat`` and a chat template, each prompt
    is wrapped as one user turn followed by the assistant header (LLaDA-Instruct's format)."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, (list, tuple)):
        raise ValueError(f"prompts must be a string, a list of strings or a [B, P] id tensor, got "
                         f"{type(prompts).__name__}" + (" (convert with torch.as_tensor)" if hasattr(prompts, "shape") else ""))
    if not prompts or any(not isinstance(p, str) or not p for p in prompts):
        raise ValueError("prompts must be non-empty strings")
    for i, p in enumerate(prompts):
        try:
            p.encode("utf-8")
        except UnicodeEncodeError as exc:  # undecodable bytes from argv/stdin arrive as lone surrogates
            bad = p[exc.start]
            byte = f"byte 0x{ord(bad) - 0xDC00:02x}" if 0xDC80 <= ord(bad) <= 0xDCFF else f"code point U+{ord(bad):04X}"
            raise ValueError(f"prompt {i} is not valid UTF-8 text ({byte} at character {exc.start})") from None
    if chat and getattr(tokenizer, "chat_template", None):
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
                   for p in prompts]
    tokenizer.padding_side = "left"
    enc = tokenizer(list(prompts), add_special_tokens=False, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def default_block_length(model) -> int:
    """The block length a generation uses when the caller names none: a block-diffusion model's
    trained ``block_size``, else :class:`GenerationConfig`'s default (32)."""
    return model.block_size if model.block_causal else attrs.fields(GenerationConfig).block_length.default


def checked_fields(fields: dict) -> GenerationConfig:
    """``GenerationConfig(**fields)`` checked before a model is known: without ``block_length`` a
    one-block stand-in is used (the real one comes from :func:`config_for`)."""
    return GenerationConfig(**{"block_length": fields.get("gen_length", attrs.fields(GenerationConfig).gen_length.default),
                               **fields})


def config_for(model, fields: dict) -> GenerationConfig:
    """``GenerationConfig(**fields)`` for ``model``, ``block_length`` defaulting to :func:`default_block_length`."""
    return GenerationConfig(**{"block_length": default_block_length(model), **fields})


def generate(lm: Union[LoadedModel, str, None], prompts: Union[str, Sequence[str], torch.Tensor], *, cache="auto",
             unmask="low-confidence", config: Optional[GenerationConfig] = None, attention_mask: Optional[torch.Tensor] = None,
             chat: bool = True, progress=None, on_block=None, **config_fields) -> GenerationResult:
    """Generate for text prompts (or a ``[B, P]`` id tensor). ``cache`` is a cache spec string
    (``"dcu:budget=32+window"``) or policy instances — ``"auto"`` (the default) is the model's own
    exact cache (``DecoderModel.default_cache``: ``none`` for LLaDA and Dream, ``block-kv`` for
    block-diffusion models); ``unmask`` a spec string or an instance. Without a ``block_length``
    (or ``config``), a block-diffusion model decodes in its trained ``block_size``.
    Everything after ``prompts`` is keyword-only. Every input is validated before the model runs."""
    from_fields = config is None
    if from_fields:  # every field checked now; a missing block length once the model is known
        config = checked_fields(config_fields)
    elif not isinstance(config, GenerationConfig):
        raise ValueError(f"config must be a GenerationConfig, got {type(config).__name__}"
                         + (" (pass its fields as keywords: generate(lm, prompts, gen_length=64, ...))" if isinstance(config, dict) else ""))
    elif config_fields:
        raise ValueError(f"pass either config or config fields, not both (got {sorted(config_fields)})")
    if not isinstance(chat, bool):
        raise ValueError(f"chat must be True or False, got {chat!r}")
    if attention_mask is not None and not isinstance(attention_mask, torch.Tensor):
        raise ValueError(f"attention_mask must be a [B, P] tensor or None, got {type(attention_mask).__name__}")
    if isinstance(prompts, torch.Tensor) and (prompts.dim() != 2 or prompts.dtype.is_floating_point or prompts.dtype == torch.bool):
        raise ValueError(f"an id tensor prompt must be [B, P] of integer ids, got {tuple(prompts.shape)} {prompts.dtype}")
    registry = get_registry()
    auto_cache = isinstance(cache, str) and cache == "auto"
    cache_policies = None if auto_cache else registry.make_cache_policies(cache)
    unmask_policy = registry.make_unmask_policy(unmask)
    if not isinstance(lm, LoadedModel):
        lm = load_model(lm, dtype=config.dtype, device=config.device)
    if auto_cache:
        cache_policies = registry.make_cache_policies(lm.model.default_cache)
    if from_fields:
        config = config_for(lm.model, config_fields)
    if isinstance(prompts, torch.Tensor):
        input_ids = prompts
    else:
        input_ids, attention_mask = encode_prompts(lm.tokenizer, prompts, chat=chat)
    sequences, stats = denoise(lm.model, input_ids, config, cache_policies, unmask_policy,
                               attention_mask=attention_mask, progress=progress, on_block=on_block)
    tokens = sequences[:, input_ids.shape[1]:]
    texts = lm.tokenizer.batch_decode(tokens, skip_special_tokens=True) if lm.tokenizer is not None else None
    return GenerationResult(tokens=tokens, sequences=sequences, texts=texts, stats=stats)
