"""Masked-diffusion SFT of the tiny LLaDA-architecture model on the task suite, and its evaluation.

Objective (LLaDA's SFT, §1.10 of the reference notes): the prompt is never masked; per sequence
``t ~ U(eps, 1)`` (stratified across the batch); every answer token — the answer, its EOS and the
EOS padding up to the generation length — is replaced by the mask token with probability ``t``; the
loss is the cross-entropy on the masked tokens divided by ``t``, summed over the sequence and
normalised by the answer length including the padding, then averaged over the batch.

Sequences are laid out exactly as the engine lays out generation: the chat-formatted prompt
left-padded (padding hidden by the attention mask, positions counted from the first real token),
followed by the answer region.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .tiny_suite import TASKS, Item, heldout_items, train_items

#: Architecture of the shipped ``tiny`` checkpoint (LLaDA block layout, byte tokenizer).
TINY_SIZES = dict(n_layers=4, d_model=128, n_heads=4, d_ff=384, max_length=512)
#: Evaluation setting the suite is benchmarked with.
EVAL_GEN_LENGTH, EVAL_BLOCK_LENGTH = 256, 32


class PromptCodec:
    """Byte-level ids of chat-formatted prompts and answers for a byte tokenizer, computed once
    from the tokenizer's chat template (identical to :func:`dynamic_dllm.api.encode_prompts`)."""

    def __init__(self, tokenizer):
        marker = "\x00"
        text = tokenizer.apply_chat_template([{"role": "user", "content": marker}], add_generation_prompt=True, tokenize=False)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if ids.count(0) != 1:
            raise ValueError("PromptCodec needs the byte-level tokenizer (byte b has id b)")
        cut = ids.index(0)
        self.prefix, self.suffix = ids[:cut], ids[cut + 1:]
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def prompt_ids(self, prompt: str) -> list[int]:
        return self.prefix + list(prompt.encode("utf-8")) + self.suffix

    def batch(self, items: Sequence[Item], gen_length: int):
        """``(ids [B, P+G], valid [B, P+G], positions [B, P+G], answer_region [B, P+G])``: prompts
        left-padded to the longest, answers followed by EOS up to ``gen_length``."""
        prompts = [self.prompt_ids(it.prompt) for it in items]
        answers = [list(it.answer.encode("utf-8")) for it in items]
        longest = max(len(a) for a in answers)
        if longest >= gen_length:
            raise ValueError(f"gen_length={gen_length} leaves no room for EOS after an answer of {longest} tokens")
        P = max(len(p) for p in prompts)
        B, L = len(items), P + gen_length
        ids = torch.full((B, L), self.eos_id, dtype=torch.long)
        valid = torch.ones(B, L, dtype=torch.bool)
        for i, (p, a) in enumerate(zip(prompts, answers)):
            ids[i, P - len(p):P] = torch.tensor(p)
            ids[i, :P - len(p)] = self.pad_id
            valid[i, :P - len(p)] = False
            ids[i, P:P + len(a)] = torch.tensor(a)
        positions = (valid.long().cumsum(1) - 1).clamp(min=0)
        answer_region = torch.zeros(B, L, dtype=torch.bool)
        answer_region[:, P:] = True
        return ids, valid, positions, answer_region


def diffusion_sft_loss(model, ids: torch.Tensor, valid: torch.Tensor, positions: torch.Tensor, answer_region: torch.Tensor,
                       generator: torch.Generator, eps: float = 1e-3) -> torch.Tensor:
    """LLaDA SFT loss for one batch (see the module docstring)."""
    B = ids.shape[0]
    if not 0 < eps < 1:
        raise ValueError(f"eps must be in (0, 1), got {eps}")
    # stratified t in [eps, 1): one random offset, B evenly spaced points, lower variance than iid
    u = (torch.rand(1, generator=generator) + torch.arange(B) / B) % 1.0
    t = eps + (1 - eps) * u
    masked = answer_region & (torch.rand(ids.shape, generator=generator) < t[:, None])
    noisy = torch.where(masked, torch.full_like(ids, model.mask_id), ids)
    logits = model(noisy, attention_mask=valid, position_ids=positions)
    ce = F.cross_entropy(logits[masked].float(), ids[masked], reduction="none")
    weights = (1.0 / t)[:, None].expand_as(ids)[masked] / answer_region.sum(1)[:, None].expand_as(ids)[masked]
    return (ce * weights).sum() / B


@torch.no_grad()
def evaluate(lm, items: Sequence[Item], cache: str = "none", unmask: str = "low-confidence",
             gen_length: int = EVAL_GEN_LENGTH, block_length: int = EVAL_BLOCK_LENGTH, steps: Optional[int] = None,
             batch_size: int = 64, progress=None) -> dict:
    """Exact-match accuracy of greedy generation on ``items``: the generated text up to the first
    EOS must equal the answer. Batches are left-padded through :func:`dynamic_dllm.api.encode_prompts`.
    ``steps`` defaults to ``gen_length`` (one token per step for fixed-schedule policies).
    Generation stops after the block in which every row produced EOS (``stop_at_eos``), which
    cannot change the text before the first EOS since earlier blocks are final.

    ``nfe`` is summed over the ``batches``; ``mean_tokens_per_step`` is per sequence: committed
    tokens (EOS padding included) / Σ_batches NFE × rows."""
    from ..api import generate
    from ..core.types import GenerationConfig

    if not items:
        raise ValueError("evaluate needs at least one item")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    config = GenerationConfig(gen_length=gen_length, block_length=block_length, steps=steps or gen_length, stop_at_eos=True)
    model = lm.model
    correct = {t: 0 for t in TASKS}
    total = {t: 0 for t in TASKS}
    nfe, commits, row_steps, failures = 0, 0, 0, []
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        out = generate(lm, [it.prompt for it in chunk], cache=cache, unmask=unmask, config=config, chat=True)
        stats = out.stats
        nfe += stats.nfe
        commits += sum(stats.tokens_per_step)
        row_steps += stats.nfe * len(chunk)
        for it, row in zip(chunk, out.tokens.tolist()):
            text = decode_until_eos(row, model.eos_id)
            ok = text == it.answer
            correct[it.task] += ok
            total[it.task] += 1
            if not ok and len(failures) < 5:
                failures.append({"task": it.task, "prompt": it.prompt, "answer": it.answer, "got": text})
        if progress is not None:
            progress(len(chunk))
    per_task = {t: correct[t] / total[t] for t in TASKS if total[t]}
    return {"accuracy": sum(correct.values()) / len(items), "per_task": per_task, "n": len(items),
            "nfe": nfe, "batches": -(-len(items) // batch_size),
            "mean_tokens_per_step": commits / row_steps if row_steps else 0.0, "cache": cache, "unmask": unmask,
            "gen_length": gen_length, "block_length": block_length, "steps": config.steps, "failures": failures}


def decode_until_eos(row: Sequence[int], eos_id: int) -> Optional[str]:
    """The bytes before the first EOS as text; ``None`` if there is no EOS or a non-byte token
    (mask, special) precedes it — never equal to an answer."""
    if eos_id not in row:
        return None
    body = row[:row.index(eos_id)]
    if any(t > 255 for t in body):
        return None
    return bytes(body).decode("utf-8", errors="replace")


def lr_at(step: int, total: int, peak: float, warmup: int, floor: float = 0.1, time_fraction: float = 0.0) -> float:
    """Linear warmup to ``peak`` over ``warmup`` steps, then cosine decay to ``floor * peak``.
    The decay follows the larger of the step progress and ``time_fraction`` (elapsed / time limit),
    so a run cut by its time limit on a slower-than-planned machine still ends annealed."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, max((step - warmup) / max(1, total - warmup), time_fraction))
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def train_tiny(out_dir, *, steps: int = 3200, batch_size: int = 32, lr: float = 2e-3, warmup: int = 100,
               weight_decay: float = 0.01, seed: int = 0, short_gen_length: int = 64, full_every: int = 6,
               eval_every: int = 500, eval_items: int = 24, eval_gen_length: int = 64, threads: int = 1,
               time_limit_min: Optional[float] = None,
               log_path=None, init_from=None, sizes: Optional[dict] = None, eps: float = 1e-3, rope_theta: Optional[float] = None,
               progress: bool = True) -> dict:
    """Train the tiny model from scratch (or from ``init_from``) and save it to ``out_dir``.

    Every ``full_every``-th batch uses the full evaluation length (answer + EOS padding to 256);
    the others pad to ``short_gen_length`` only, which is ~2x cheaper. ``time_limit_min`` stops
    early; the cosine schedule follows whichever of ``steps`` and ``time_limit_min`` runs out first. Checkpoints are written at every
    evaluation (``out_dir``) and the best-scoring one is kept in ``out_dir/best``. Periodic
    evaluations decode ``eval_gen_length`` tokens (64: cheap and bounded even before the model
    learns to stop); ``eval-tiny`` measures the full 256-token setting.

    ``threads`` defaults to 1: on a 2-core machine shared with other jobs, two intra-op threads
    were measured 3-4x slower than one (threads wait on each other when one is descheduled)."""
    from tqdm import tqdm

    from ..models.checkpoint import LoadedModel, load_checkpoint, save_checkpoint
    from ..models.llada import LLaDAModel
    from ..models.random_checkpoint import init_weights, random_config
    from ..models.tokenizer import build_byte_tokenizer

    for name, value in (("steps", steps), ("batch_size", batch_size), ("warmup", warmup), ("eval_every", eval_every),
                        ("full_every", full_every), ("threads", threads), ("eval_items", eval_items),
                        ("short_gen_length", short_gen_length), ("eval_gen_length", eval_gen_length)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    for name, value in (("lr", lr), ("eps", eps)):
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0 or (name == "eps" and value >= 1):
            raise ValueError(f"{name} must be a finite number {'in (0, 1)' if name == 'eps' else '> 0'}, got {value!r}")
    if time_limit_min is not None and not time_limit_min > 0:
        raise ValueError(f"time_limit_min must be > 0, got {time_limit_min!r}")
    from ..core.types import GenerationConfig

    try:  # the evaluations' decoding settings, checked now rather than at the first evaluation
        GenerationConfig(gen_length=eval_gen_length, block_length=EVAL_BLOCK_LENGTH)
    except ValueError as exc:
        raise ValueError(f"eval_gen_length: {exc}") from None
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = Path(log_path) if log_path else out_dir / "train_log.jsonl"
    tokenizer = build_byte_tokenizer()
    codec = PromptCodec(tokenizer)
    if init_from is not None:
        loaded = load_checkpoint(init_from)
        model, config = loaded.model, json.loads((Path(init_from) / "config.json").read_text())
        model.requires_grad_(True)
    else:
        config = random_config("llada", len(tokenizer), tokenizer.mask_token_id, tokenizer.eos_token_id, **(sizes or TINY_SIZES))
        if rope_theta is not None:
            config["rope_theta"] = float(rope_theta)
        model = LLaDAModel(config)
        init_weights(model, seed, final_norm=0.0)
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.98), eps=1e-8)
    gen = torch.Generator().manual_seed(seed)
    order_rng = random.Random(seed + 1)
    stream = train_items(seed)
    held = heldout_items(eval_items)
    log = log_path.open("a")

    def write(record):
        log.write(json.dumps(record) + "\n")
        log.flush()

    write({"event": "start", "n_params": n_params, "config": config, "steps": steps, "batch_size": batch_size, "lr": lr,
           "seed": seed, "short_gen_length": short_gen_length, "full_every": full_every, "threads": threads,
           "eval_gen_length": eval_gen_length, "eps": eps})
    t0 = time.perf_counter()
    best, history, ema = -1.0, [], None
    bar = tqdm(total=steps, disable=not progress, dynamic_ncols=True, mininterval=5)
    step = 0
    stopped_early = False
    while step < steps:
        model.train()
        items = [next(stream) for _ in range(batch_size)]
        order_rng.shuffle(items)
        gen_length = EVAL_GEN_LENGTH if step % full_every == 0 else short_gen_length
        time_fraction = 0.0 if time_limit_min is None else (time.perf_counter() - t0) / 60 / time_limit_min
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup, time_fraction=time_fraction)
        loss = diffusion_sft_loss(model, *codec.batch(items, gen_length), generator=gen, eps=eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
        opt.step()
        step += 1
        value = float(loss.detach())
        if not math.isfinite(value) or not math.isfinite(grad_norm):
            raise RuntimeError(f"training diverged at step {step}: loss {value}, grad norm {grad_norm} "
                               f"(lower --lr, currently {lr}); checkpoints of earlier evaluations are kept")
        ema = value if ema is None else 0.98 * ema + 0.02 * value
        bar.update(1)
        bar.set_postfix(loss=f"{ema:.4f}", refresh=False)
        elapsed = (time.perf_counter() - t0) / 60
        if step % 25 == 0:
            write({"event": "step", "step": step, "loss": value, "loss_ema": ema, "grad_norm": grad_norm,
                   "lr": opt.param_groups[0]["lr"], "minutes": round(elapsed, 2)})
        out_of_time = time_limit_min is not None and elapsed >= time_limit_min
        if step % eval_every == 0 or step == steps or out_of_time:
            model.eval()
            result = evaluate(LoadedModel(model=model, tokenizer=tokenizer), held, gen_length=eval_gen_length,
                              batch_size=len(held))
            record = {"event": "eval", "step": step, "minutes": round((time.perf_counter() - t0) / 60, 2), "loss_ema": ema,
                      "accuracy": result["accuracy"], "per_task": result["per_task"], "failures": result["failures"][:2]}
            write(record)
            history.append(record)
            bar.write(f"step {step}: loss {ema:.4f}, held-out accuracy {result['accuracy']:.3f} {result['per_task']}")
            save_checkpoint(model, config, out_dir, tokenizer=tokenizer)
            if result["accuracy"] >= best:
                best = result["accuracy"]
                save_checkpoint(model, config, out_dir / "best", tokenizer=tokenizer)
        if out_of_time:
            stopped_early = True
            break
    bar.close()
    minutes = (time.perf_counter() - t0) / 60
    summary = {"event": "done", "steps": step, "minutes": round(minutes, 2), "n_params": n_params, "best_accuracy": best,
               "stopped_early": stopped_early}
    write(summary)
    log.close()
    return {**summary, "history": history}
