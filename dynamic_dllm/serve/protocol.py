"""OpenAI request parsing and response shapes for ``dynamic-dllm serve``.

A request body becomes a :class:`Job`: the prompt's token ids (chat template applied for
``/v1/chat/completions``), the generation settings and the policy specs, all validated before it is
queued — a bad field is a :class:`RequestError` (HTTP 400, OpenAI's error shape, the one-line
message the CLI would print).

Field mapping: ``max_tokens`` (or ``max_completion_tokens``) → ``gen_length`` rounded up to whole
blocks of ``block_length`` (default 32), the output cut back to ``max_tokens``; ``temperature``,
``seed``, ``stop`` (a string or up to 4), ``n`` (must be 1), ``stream``; extra fields ``cache``,
``unmask`` (registry specs), ``block_length``, ``steps`` (default: one token per step).
"""

from __future__ import annotations

import time
import uuid
from typing import Optional

import attrs
import torch

#: request fields the server reads; anything else is refused rather than silently ignored
CHAT_FIELDS = {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "seed", "stop", "n",
               "stream", "cache", "unmask", "block_length", "steps", "user"}
COMPLETION_FIELDS = (CHAT_FIELDS - {"messages"}) | {"prompt"}


class RequestError(ValueError):
    """A client error: HTTP ``status`` with OpenAI's error body."""

    def __init__(self, message: str, status: int = 400, kind: str = "invalid_request_error"):
        super().__init__(" ".join(str(message).split()))
        self.status, self.kind = status, kind


def error_body(message: str, kind: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


@attrs.define(eq=False)
class Job:
    """One validated request. ``key`` groups requests that may share a batch."""

    id: str
    kind: str                      # "chat" | "completion"
    model_name: str
    prompt_ids: list
    max_tokens: int
    gen_length: int
    block_length: int
    steps: int
    temperature: float
    seed: int
    stop: tuple
    stream: bool
    cache: str
    unmask: str
    batchable: bool
    #: the model is block-causal (SDAR): rows of a batch must not be padded, so only prompts of one length share one
    pad_free: bool = False
    created: int = attrs.field(factory=lambda: int(time.time()))
    arrived: float = attrs.field(factory=time.perf_counter)

    @property
    def key(self) -> tuple:
        """Requests with equal keys decode together exactly as alone (padded batch guarantee)."""
        if not self.batchable:
            return ("alone", self.id)
        key = (self.cache, self.unmask, self.gen_length, self.block_length, self.steps)
        return key + (len(self.prompt_ids),) if self.pad_free else key


def _int_field(body: dict, name: str, default, low: int, high: Optional[int] = None):
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        rule = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise RequestError(f"{name} must be an integer {rule}, got {value!r}")
    return value


def parse_request(body, kind: str, lm, model_name: str, defaults: dict) -> Job:
    """Validate a JSON body for ``kind`` ("chat" or "completion") and build its :class:`Job`."""
    from ..core.registry import get_registry
    from ..core.types import GenerationConfig

    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    allowed = CHAT_FIELDS if kind == "chat" else COMPLETION_FIELDS
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise RequestError(f"unsupported field(s) {', '.join(unknown)}; supported: {', '.join(sorted(allowed))}")
    if body.get("model") not in (None, model_name):
        raise RequestError(f"model {body.get('model')!r} is not served here; this server serves {model_name!r}",
                           status=404, kind="model_not_found")
    if _int_field(body, "n", 1, 1) != 1:
        raise RequestError("n must be 1 (one completion per request)")
    tok = lm.tokenizer
    if kind == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in messages):
            raise RequestError("messages must be a non-empty list of {role, content} objects with string values")
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template([{"role": m["role"], "content": m["content"]} for m in messages],
                                           add_generation_prompt=True, tokenize=False)
        else:
            text = "\n".join(m["content"] for m in messages)
    else:
        text = body.get("prompt")
        if isinstance(text, list) and len(text) == 1:
            text = text[0]
        if not isinstance(text, str) or not text:
            raise RequestError("prompt must be a non-empty string")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError("the prompt is not valid UTF-8 text") from None
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise RequestError("the prompt encodes to no tokens")
    if lm.model.mask_id in ids:
        raise RequestError(f"the prompt contains the mask token (id {lm.model.mask_id})")

    block_length = _int_field(body, "block_length", defaults["block_length"], 1)
    room = lm.model.max_length - len(ids)
    max_tokens = body.get("max_tokens")
    max_tokens = body.get("max_completion_tokens") if max_tokens is None else max_tokens
    max_tokens = defaults["max_tokens"] if max_tokens is None else max_tokens
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens <= 0:
        raise RequestError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    gen_length = -(-max_tokens // block_length) * block_length
    if gen_length > room:
        raise RequestError(f"prompt ({len(ids)} tokens) + max_tokens {max_tokens} (rounded up to {gen_length}, whole "
                           f"blocks of {block_length}) exceeds the model's maximum length {lm.model.max_length}")
    steps = _int_field(body, "steps", gen_length, 1)
    temperature = body.get("temperature", 0.0)
    temperature = 0.0 if temperature is None else temperature
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not 0 <= temperature < float("inf"):
        raise RequestError(f"temperature must be a finite number >= 0, got {temperature!r}")
    seed = _int_field(body, "seed", 0, 0, 2 ** 63 - 1)
    stop = body.get("stop")
    stop = () if stop is None else ((stop,) if isinstance(stop, str) else stop)
    if not isinstance(stop, (list, tuple)) or len(stop) > 4 or not all(isinstance(s, str) and s for s in stop):
        raise RequestError("stop must be a non-empty string or a list of at most 4 of them")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError(f"stream must be true or false, got {stream!r}")
    cache, unmask = body.get("cache", defaults["cache"]), body.get("unmask", defaults["unmask"])
    if not isinstance(cache, str) or not isinstance(unmask, str):
        raise RequestError("cache and unmask must be policy spec strings (see GET /v1/models → policies)")
    if cache == "auto":  # the model's own exact cache (block-kv for block-diffusion models, else none)
        cache = lm.model.default_cache
    try:
        GenerationConfig(gen_length=gen_length, block_length=block_length, steps=steps, temperature=float(temperature),
                         seed=seed)
        registry = get_registry()
        caches, unmasker = registry.make_cache_policies(cache), registry.make_unmask_policy(unmask)
    except ValueError as exc:
        raise RequestError(str(exc)) from None
    if stream and getattr(unmasker, "commit_mask", False):
        raise RequestError("stream=true needs blocks that are final when sent; commit_mask=true may still commit "
                           "masks of earlier blocks")
    batchable = (temperature == 0 and getattr(unmasker, "exact_in_batches", False)
                 and all(getattr(c, "exact_for_waiting_rows", False) for c in caches))
    return Job(id=f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}", kind=kind,
               model_name=model_name, prompt_ids=list(ids), max_tokens=max_tokens, gen_length=gen_length,
               block_length=block_length, steps=steps, temperature=float(temperature), seed=seed, stop=tuple(stop),
               stream=stream, cache=cache, unmask=unmask, batchable=batchable, pad_free=lm.model.block_causal)


def until_eos(tokens: list, eos_id: int) -> tuple[list, bool]:
    """``tokens`` before the first EOS, and whether there was one."""
    if eos_id in tokens:
        return tokens[:tokens.index(eos_id)], True
    return tokens, False


def cut(text: str, stop: tuple) -> tuple[str, bool]:
    """``text`` up to the first stop string, and whether one was found."""
    hits = [i for i in (text.find(s) for s in stop) if i >= 0]
    return (text[:min(hits)], True) if hits else (text, False)


def completion_body(job: Job, text: str, finish: str, usage: dict, stats: dict) -> dict:
    if job.kind == "chat":
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish, "logprobs": None}
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
        obj = "text_completion"
    return {"id": job.id, "object": obj, "created": job.created, "model": job.model_name, "choices": [choice],
            "usage": usage, "dynamic_dllm": stats}


def chunk_body(job: Job, text: Optional[str], finish: Optional[str], first: bool = False) -> dict:
    if job.kind == "chat":
        delta = {"role": "assistant", "content": ""} if first else ({} if text is None else {"content": text})
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
        obj = "text_completion"
    return {"id": job.id, "object": obj, "created": job.created, "model": job.model_name, "choices": [choice]}


def left_pad(jobs: list, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, P]`` ids and attention mask of the jobs' prompts, left-padded (as ``encode_prompts``)."""
    P = max(len(j.prompt_ids) for j in jobs)
    ids = torch.full((len(jobs), P), pad_id, dtype=torch.long)
    mask = torch.zeros((len(jobs), P), dtype=torch.long)
    for row, job in enumerate(jobs):
        n = len(job.prompt_ids)
        ids[row, P - n:] = torch.tensor(job.prompt_ids)
        mask[row, P - n:] = 1
    return ids, mask
