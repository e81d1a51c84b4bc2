"""lm-evaluation-harness model ``dynamic-dllm`` (needs ``pip install 'dynamic-dllm[eval]'``).

Importing this module registers the model with lm-eval. Use it from Python::

    import lm_eval, dynamic_dllm.evaluation.lm_eval_adapter  # noqa: F401 (registers the model)
    lm_eval.simple_evaluate(model="dynamic-dllm", model_args={"pretrained": "tiny", "preset": "dynamic-dllm"},
                            tasks=["gsm8k"])

or from the shell, where this module runs lm-eval's CLI with the model registered::

    python -m dynamic_dllm.evaluation.lm_eval_adapter --model dynamic-dllm \\
        --model_args pretrained=tiny,cache=dual,unmask=threshold:threshold=0.9 --tasks gsm8k

Model args: ``pretrained`` (folder or registered name), ``preset`` (a bench preset) or ``cache`` /
``unmask`` specs (write ``;`` for the ``,`` between a policy's parameters, since lm-eval splits
model args on commas: ``cache=dcu:budget=16;score=input+window``), ``gen_length``, ``block_length`` (32;
a block-diffusion model's trained block size),
``steps`` (per ``gen_length``; scaled to ``max_gen_toks``), ``batch_size``, ``temperature``,
``cfg_scale``, ``stop_at_eos``, ``mc_num`` / ``mc_batch_size`` (Monte-Carlo samples of
``loglikelihood``), ``check_greedy``, ``seed``, ``dtype``, ``device``.

* ``generate_until`` decodes ``max_gen_toks`` tokens (rounded up to whole blocks, extra tokens
  dropped), batched and left-padded, then cuts the text at the first ``until`` string. The context
  is used as given: pass ``--apply_chat_template`` to lm-eval to wrap it in the model's template.
* ``loglikelihood`` is LLaDA's Monte-Carlo estimate of the masked-diffusion bound: ``mc_num``
  copies of context + continuation in batches of ``mc_batch_size``; in a batch of ``b`` copies a
  random ``k`` in 1..T sets evenly spread mask counts ``n_i`` (T = continuation length), copy ``i``
  masks ``n_i`` random continuation positions and contributes its masked cross-entropy divided by
  ``n_i / T``; the estimate is minus the mean over copies. The sampling is seeded per request, so
  results do not depend on request order or rank. ``is_greedy`` is only computed with
  ``check_greedy=True`` (one-token-at-a-time greedy decoding of the continuation), else False.
* Data parallel (``torchrun`` / ``accelerate launch``): rank and world size are the *global* ones
  from ``torch.distributed`` (initialised here from the launcher's environment if needed); the only
  collectives are lm-eval's own ``all_gather`` / ``gather_object`` / ``barrier`` calls.
"""

from __future__ import annotations

import hashlib
import os
import sys
import warnings
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from tqdm import tqdm


def _spec(text) -> str:
    return str(text).replace(";", ",")


def mc_loglikelihood(model, prompt: torch.Tensor, target: torch.Tensor, mc_num: int, mc_batch_size: int,
                     generator: torch.Generator, cfg_scale: float = 0.0) -> float:
    """Monte-Carlo estimate of log p(target | prompt) for a masked-diffusion ``model`` (1-D id
    tensors; see the module docstring)."""
    if mc_num <= 0 or mc_batch_size <= 0 or mc_num % mc_batch_size:
        raise ValueError(f"mc_num ({mc_num}) must be a positive multiple of mc_batch_size ({mc_batch_size})")
    device = next(model.parameters()).device
    P, T = len(prompt), len(target)
    if T == 0:
        return 0.0
    seq = torch.cat([prompt, target]).to(device)
    b = mc_batch_size
    losses = []
    for _ in range(mc_num // b):
        k = int(torch.randint(1, T + 1, (1,), generator=generator))
        counts = torch.linspace(k, k + (b - 1) * T / b, b).round().long()
        counts = (counts - 1) % T + 1
        ranks = torch.rand(b, T, generator=generator).argsort(1).argsort(1)  # a random permutation per copy
        masked = torch.zeros(b, P + T, dtype=torch.bool)
        masked[:, P:] = ranks < counts[:, None]
        masked = masked.to(device)
        x = torch.where(masked, torch.full_like(masked, model.mask_id, dtype=torch.long), seq.expand(b, -1))
        logits = _logits(model, x, P, cfg_scale)
        ce = F.cross_entropy(logits[masked].float(), seq.expand(b, -1)[masked], reduction="none")
        weight = (T / counts.to(device).float())[:, None].expand(b, P + T)[masked]
        losses.append(float((ce * weight).sum()) / b)
    return -sum(losses) / len(losses)


def _logits(model, x: torch.Tensor, prompt_length: int, cfg_scale: float) -> torch.Tensor:
    """Logits aligned to the positions they predict (Dream's one-position shift undone)."""
    if cfg_scale > 0:
        from ..core.engine import guided, unconditional

        cond, un = model(torch.cat([x, unconditional(x, prompt_length, model.mask_id)])).chunk(2)
        logits = guided(cond, un, cfg_scale)
    else:
        logits = model(x)
    shift = model.logit_shift
    if shift:
        logits = torch.cat([logits[:, :shift], logits[:, :-shift]], 1)
    return logits


def greedy_matches(model, prompt: torch.Tensor, target: torch.Tensor) -> bool:
    """Whether decoding the continuation from all-masked, committing the single most confident
    position per step, reproduces ``target``."""
    device = next(model.parameters()).device
    P, T = len(prompt), len(target)
    x = torch.cat([prompt, torch.full((T,), model.mask_id, dtype=torch.long)]).to(device)[None]
    for _ in range(T):
        probs = _logits(model, x, P, 0.0)[0, P:].float().softmax(-1)
        conf, tok = probs.max(-1)
        conf = torch.where(x[0, P:] == model.mask_id, conf, torch.full_like(conf, -1.0))
        j = int(conf.argmax())
        x[0, P + j] = tok[j]
    return bool((x[0, P:].cpu() == target).all())


def _from_lm_eval_cli() -> bool:
    return Path(sys.argv[0]).name in ("lm_eval", "lm-eval") or Path(sys.argv[0]).parent.name == "lm_eval"


def _int_arg(name: str, value, low: int) -> int:
    """A model arg that must be an integer >= ``low`` (lm-eval passes numbers parsed, others as strings)."""
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


_FLAGS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def _flag_arg(name: str, value) -> bool:
    """A boolean model arg: True/False or one of true/false, yes/no, on/off, 1/0 (any case)."""
    if isinstance(value, bool):
        return value
    if str(value).strip().lower() in _FLAGS:
        return _FLAGS[str(value).strip().lower()]
    raise ValueError(f"{name} must be true or false (yes/no, on/off, 1/0), got {value!r}")


@register_model("dynamic-dllm")
class DynamicDllmLM(LM):
    """lm-eval model backed by :func:`dynamic_dllm.generate` with named policies."""

    def __init__(self, pretrained: Optional[str] = None, preset: Optional[str] = None, cache: str = "none",
                 unmask: str = "low-confidence", gen_length: int = 256, block_length: Optional[int] = None,
                 steps: Optional[int] = None,
                 batch_size=1, max_batch_size=None, temperature: float = 0.0, cfg_scale: float = 0.0,
                 stop_at_eos: bool = False, mc_num: int = 128, mc_batch_size: int = 32, check_greedy: bool = False,
                 seed: int = 0, dtype: str = "float32", device: Optional[str] = None, **unknown):
        super().__init__()
        try:
            self._setup(pretrained, preset, cache, unmask, gen_length, block_length, steps, batch_size, max_batch_size,
                        temperature, cfg_scale, stop_at_eos, mc_num, mc_batch_size, check_greedy, seed, dtype, device,
                        unknown)
        except ValueError as exc:
            if _from_lm_eval_cli():  # lm-eval's CLI would print our ValueError with its whole traceback
                sys.exit(f"error: dynamic-dllm model args: {' '.join(str(exc).split())}")
            raise

    def _setup(self, pretrained, preset, cache, unmask, gen_length, block_length, steps, batch_size, max_batch_size,
               temperature, cfg_scale, stop_at_eos, mc_num, mc_batch_size, check_greedy, seed, dtype, device, unknown):
        if unknown:
            raise ValueError(f"unknown model args {sorted(unknown)}; known: pretrained, preset, cache, unmask, gen_length, "
                             "block_length, steps, batch_size, temperature, cfg_scale, stop_at_eos, mc_num, "
                             "mc_batch_size, check_greedy, seed, dtype, device")
        gen_length = _int_arg("gen_length", gen_length, 1)
        block_length = None if block_length is None else _int_arg("block_length", block_length, 1)
        mc_num, mc_batch_size = _int_arg("mc_num", mc_num, 1), _int_arg("mc_batch_size", mc_batch_size, 1)
        seed = _int_arg("seed", seed, 0)
        steps = None if steps is None else _int_arg("steps", steps, 1)
        stop_at_eos, check_greedy = _flag_arg("stop_at_eos", stop_at_eos), _flag_arg("check_greedy", check_greedy)
        from ..api import default_block_length, load_model
        from ..core.registry import get_registry
        from .bench import resolve_row

        if preset is not None:
            row = resolve_row(str(preset))
            cache, unmask = row.cache, row.unmask
        self.cache, self.unmask = _spec(cache), _spec(unmask)
        registry = get_registry()
        registry.make_cache_policies(self.cache)  # fail now, with the registry's message
        registry.make_unmask_policy(self.unmask)
        if str(batch_size).startswith("auto"):
            batch_size = max_batch_size or 1
        self.batch_size = int(batch_size)
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if mc_num % min(mc_batch_size, mc_num):
            raise ValueError(f"mc_num ({mc_num}) must be a multiple of mc_batch_size ({mc_batch_size})")
        self.gen_length, self.block_length = gen_length, block_length
        self.steps_per_token = (steps or gen_length) / gen_length
        self.temperature, self.cfg_scale, self.stop_at_eos = float(temperature), float(cfg_scale), stop_at_eos
        self.mc_num, self.mc_batch_size = mc_num, min(mc_batch_size, mc_num)
        self.check_greedy, self.seed, self.dtype = check_greedy, seed, dtype

        if device and str(device).startswith("cuda") and not torch.cuda.is_available():
            # lm-eval's CLI passes device=cuda unless told otherwise
            warnings.warn(f"device {device!r} requested but CUDA is not available; using cpu")
            device = "cpu"
        self._rank, self._world_size = 0, 1
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1 or (torch.distributed.is_available() and torch.distributed.is_initialized()):
            import torch.distributed as dist

            wants_cuda = (device or "").startswith("cuda") or (device is None and torch.cuda.is_available())
            if not dist.is_initialized():
                dist.init_process_group(backend="nccl" if wants_cuda else "gloo")
            self._rank, self._world_size = dist.get_rank(), dist.get_world_size()  # global, not local
            if wants_cuda:
                device = f"cuda:{int(os.environ.get('LOCAL_RANK', self._rank % max(torch.cuda.device_count(), 1)))}"
        self._device = torch.device(device or "cpu")
        self.lm = load_model(pretrained, dtype=dtype, device=str(self._device))
        self.lm.model.eval()
        if self.block_length is None:  # 32, or a block-diffusion model's trained block size
            self.block_length = default_block_length(self.lm.model)
        self.tokenizer = self.lm.tokenizer
        self._name = str(pretrained)

    # --- distributed primitives lm-eval's evaluator calls (once per task, not per request) ---

    def all_gather(self, tensor):
        """Every rank's ``tensor`` concatenated along dim 0 in rank order; a 0-d tensor (lm-eval's
        per-rank request count) becomes one entry per rank."""
        tensor = tensor.reshape(1) if tensor.dim() == 0 else tensor
        if self._world_size == 1:
            return tensor
        import torch.distributed as dist

        parts = [torch.zeros_like(tensor) for _ in range(self._world_size)]
        dist.all_gather(parts, tensor)
        return torch.cat(parts)

    def gather_object(self, obj, dst=0):
        if self._world_size == 1:
            return [obj]
        import torch.distributed as dist

        out = [None] * self._world_size
        dist.all_gather_object(out, obj)
        return out if self._rank == dst else None

    def barrier(self):
        if self._world_size > 1:
            torch.distributed.barrier()

    # --- chat templates ------------------------------------------------------------------------

    @property
    def tokenizer_name(self) -> str:
        return self._name.replace("/", "__")

    def chat_template(self, chat_template=False):
        return getattr(self.tokenizer, "chat_template", None) or ""

    def apply_chat_template(self, chat_history, add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(chat_history, tokenize=False, add_generation_prompt=add_generation_prompt)

    # --- requests --------------------------------------------------------------------------------

    def _prefix_ids(self) -> list[int]:
        tok = self.tokenizer
        for t in (tok.bos_token_id, tok.eos_token_id):
            if t is not None:
                return [t]
        return [self.lm.model.eos_id]

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def _generator(self, *parts: str) -> torch.Generator:
        digest = hashlib.sha256("\x00".join((str(self.seed),) + parts).encode("utf-8")).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))

    def _config(self, max_gen_toks: int, temperature: float):
        from ..core.types import GenerationConfig

        # a block-diffusion model decodes in its own blocks; others may use one short block
        block = self.block_length if self.lm.model.block_causal else min(self.block_length, max_gen_toks)
        blocks = -(-max_gen_toks // block)
        steps_per_block = max(1, round(self.steps_per_token * block))
        return GenerationConfig(gen_length=blocks * block, block_length=block, steps=blocks * steps_per_block,
                                temperature=temperature, seed=self.seed, cfg_scale=self.cfg_scale,
                                stop_at_eos=self.stop_at_eos, dtype=self.dtype, device=str(self._device))

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        from ..api import generate

        results: list[Optional[str]] = [None] * len(requests)
        groups: dict = {}
        for i, req in enumerate(requests):
            context, kwargs = req.args
            kwargs = dict(kwargs or {})
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            max_gen = int(kwargs.get("max_gen_toks", self.gen_length))
            if max_gen <= 0:
                raise ValueError(f"max_gen_toks must be positive, got {max_gen}")
            temperature = float(kwargs.get("temperature", self.temperature)) if kwargs.get("do_sample", True) else 0.0
            groups.setdefault((max_gen, temperature), []).append((i, context, until))
        eos = self.lm.model.eos_id
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
        bar = tqdm(total=len(requests), desc="generate_until", disable=disable_tqdm or self._rank != 0)
        for (max_gen, temperature), items in groups.items():
            config = self._config(max_gen, temperature)
            items = [(i, c, u, self._encode(c) or self._prefix_ids()) for i, c, u in items]
            items.sort(key=lambda it: -len(it[3]))  # similar lengths together: less padding
            # a block-diffusion model refuses left padding (its blocks start at each row's position 0):
            # its batches hold prompts of one length
            buckets = ([[it for it in items if len(it[3]) == n] for n in sorted({len(it[3]) for it in items}, reverse=True)]
                       if self.lm.model.block_causal else [items])
            chunks = [b[k:k + self.batch_size] for b in buckets for k in range(0, len(b), self.batch_size)]
            for chunk in chunks:
                encoded = [e for *_, e in chunk]
                width = max(len(e) for e in encoded)
                ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                mask = torch.zeros(len(chunk), width, dtype=torch.long)
                for r, e in enumerate(encoded):
                    ids[r, width - len(e):] = torch.tensor(e)
                    mask[r, width - len(e):] = 1
                out = generate(self.lm, ids, cache=self.cache, unmask=self.unmask, config=config, attention_mask=mask)
                tokens = out.tokens[:, :max_gen].tolist()
                for (i, context, until, _), toks in zip(chunk, tokens):
                    text = self.tokenizer.decode(toks, skip_special_tokens=True)
                    for stop in until:
                        if stop:
                            text = text.split(stop)[0]
                    results[i] = text
                    self.cache_hook.add_partial("generate_until", requests[i].args, text)
                bar.update(len(chunk))
        bar.close()
        return results

    def _pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole = self._encode(context + continuation)
        ctx = self._encode(context)
        if whole[:len(ctx)] != ctx:  # the tokenizer merged across the boundary: encode separately
            return ctx or self._prefix_ids(), self._encode(continuation)
        return ctx or self._prefix_ids(), whole[len(ctx):]

    def _score(self, ctx: list[int], cont: list[int], key: tuple) -> tuple[float, bool]:
        max_len = self.lm.model.max_length
        if self.lm.model.mask_id in ctx or self.lm.model.mask_id in cont:
            raise ValueError(f"a loglikelihood request contains the mask token (id {self.lm.model.mask_id}): a masked-"
                             "diffusion model would treat it as a position to predict; remove it from the task text")
        if len(cont) >= max_len:
            raise ValueError(f"continuation of {len(cont)} tokens does not fit the model's maximum length {max_len}")
        ctx = ctx[-(max_len - len(cont)):]
        prompt, target = torch.tensor(ctx, dtype=torch.long), torch.tensor(cont, dtype=torch.long)
        with torch.no_grad():
            ll = mc_loglikelihood(self.lm.model, prompt, target, self.mc_num, self.mc_batch_size,
                                  self._generator(*key), self.cfg_scale)
            greedy = greedy_matches(self.lm.model, prompt, target) if self.check_greedy and cont else False
        return ll, greedy

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        out = []
        for req in tqdm(requests, desc="loglikelihood", disable=disable_tqdm or self._rank != 0):
            context, continuation = req.args
            ctx, cont = self._pair(context, continuation)
            result = self._score(ctx, cont, ("ll", context, continuation))
            self.cache_hook.add_partial("loglikelihood", req.args, result)
            out.append(result)
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Whole-string estimate conditioned on the BOS (or EOS) token, the string truncated to the
        model's maximum length (no sliding windows: the bound is bidirectional)."""
        out = []
        for req in tqdm(requests, desc="loglikelihood_rolling", disable=disable_tqdm or self._rank != 0):
            (string,) = req.args
            ids = self._encode(string)[: self.lm.model.max_length - 1]
            ll, _ = self._score(self._prefix_ids(), ids, ("rolling", string))
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, ll)
            out.append(ll)
        return out


if __name__ == "__main__":
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()
