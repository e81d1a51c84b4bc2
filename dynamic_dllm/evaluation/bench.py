"""Grid of policy presets × tasks on one model: per-item records, a paper-style summary, timing.

Protocol (:func:`run_bench`):

* Every row (preset) runs the same examples in the same batches. Before timing a task, each row
  decodes its first batch once untimed (warm-up). Then ``repeats`` rounds run every row over all
  examples, rows interleaved inside a round (side by side in one process, so drift hits all rows
  alike). Throughput of a round = generated non-EOS tokens / seconds inside the denoising loop;
  the summary gives the median over rounds and the min/max spread. Records come from round 1;
  later rounds must reproduce its outputs (``reproducible`` in the summary).
* Accuracy: the task's extracted answer scored against the gold one. Agreement: the fraction of
  examples whose extracted answer equals the baseline row's (a missing answer equals a missing one).
* Batched runs left-pad prompts; NFE and tokens/step then describe the batch the example ran in.
* Data parallel (``torchrun``): examples are sharded round-robin over ranks, each rank decodes its
  shard, records and timings are gathered on rank 0, which writes the outputs. A round's
  throughput is then all ranks' tokens / the slowest rank's seconds.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

import attrs

from .tasks import Example, Task, TaskSettings, answer_of

#: The paper's rows: name → (cache spec, unmask spec). Resolved through the registry when used, so
#: a policy that is not registered fails with the registry's error naming the known ones.
PRESETS = {
    "baseline": ("none", "low-confidence"),
    "dllm-cache": ("dllm-cache", "low-confidence"),
    "dkv-cache": ("dkv-cache", "low-confidence"),
    "fast-dllm": ("dual", "low-confidence"),
    "fast-dllm-parallel": ("dual", "threshold:threshold=0.9"),
    "dynamic-dllm": ("dcu+window", "low-confidence"),
    "dynamic-dllm-parallel": ("dcu+window", "apd"),
    # the authors' released code (TianyiWu233/DYNAMIC-DLLM @ 43cb93b7) rule for rule: batch 1, LLaDA layout
    "dynamic-dllm-released": ("dcu-released", "low-confidence:commit_mask=true"),
    "dynamic-dllm-released-parallel": ("dcu-released", "apd-released:mode=global"),
}


@attrs.frozen
class Row:
    """One bench row: a display name and its policy specs."""

    name: str
    cache: str
    unmask: str


def resolve_row(name: str) -> Row:
    """A preset name or a user spec ``CACHE/UNMASK`` (e.g. ``dcu:budget=16+window/apd``), checked
    against the registry."""
    from ..core.registry import get_registry

    name = name.strip()
    if name in PRESETS:
        row = Row(name, *PRESETS[name])
    elif "/" in name:
        cache, _, unmask = name.partition("/")
        if not cache.strip() or not unmask.strip():
            raise ValueError(f"bad row {name!r}: a user spec is CACHE/UNMASK, e.g. dual/threshold:threshold=0.9")
        row = Row(name, cache.strip(), unmask.strip())
    else:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)} (or a CACHE/UNMASK spec)")
    registry = get_registry()
    registry.make_cache_policies(row.cache)
    registry.make_unmask_policy(row.unmask)
    return row


#: presets run only when named (``--presets``): the released-code rows decode one sequence of a
#: LLaDA-layout model at a time, so they are not part of the default grid
OPT_IN = ("dynamic-dllm-released", "dynamic-dllm-released-parallel")


def available_presets(opt_in: bool = False) -> list[str]:
    """Presets whose policies are all registered in this installation (the default grid; with
    ``opt_in`` also the :data:`OPT_IN` ones)."""
    out = []
    for name in PRESETS:
        if name in OPT_IN and not opt_in:
            continue
        try:
            resolve_row(name)
        except ValueError:
            continue
        out.append(name)
    return out


# --- distributed -----------------------------------------------------------------------------


@attrs.frozen
class Dist:
    rank: int = 0
    world_size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def gather(self, obj):
        """``[obj of rank 0, obj of rank 1, …]`` on every rank (a no-op list of one alone)."""
        if self.world_size == 1:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out


def init_distributed(device: str = "cpu") -> Dist:
    """The process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1): gloo on CPU, NCCL on
    CUDA; global rank. A single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)
    return Dist(rank=dist.get_rank(), world_size=dist.get_world_size())


# --- running ---------------------------------------------------------------------------------


def task_config(task: Task, gen_length=None, block_length=None, steps=None, stop_at_eos=None, temperature=0.0,
                seed=0, dtype="float32", device="cpu"):
    """The task's Table-4 settings with overrides. Overriding ``gen_length`` without ``steps``
    keeps one step per token."""
    from ..core.types import GenerationConfig

    s: TaskSettings = task.settings
    gen = gen_length or s.gen_length
    return GenerationConfig(
        gen_length=gen, block_length=block_length or s.block_length,
        steps=steps or (s.steps if gen_length is None else gen),
        stop_at_eos=s.stop_at_eos if stop_at_eos is None else stop_at_eos,
        temperature=temperature, seed=seed, dtype=dtype, device=device)


def decode_batch(lm, examples: Sequence[Example], row: Row, config):
    """Generate for ``examples`` as one left-padded batch. Returns ``(tokens [B, G] list, texts, stats)``."""
    from ..api import generate

    out = generate(lm, [e.prompt for e in examples], cache=row.cache, unmask=row.unmask, config=config, chat=True)
    return out.tokens.tolist(), out.texts, out.stats


def check_lengths(lm, task: Task, examples: Sequence[Example], config) -> None:
    """Reject a task whose longest prompt (chat-formatted) plus ``gen_length`` exceeds the model."""
    from ..api import encode_prompts

    longest = max(encode_prompts(lm.tokenizer, [e.prompt], chat=True)[0].shape[1] for e in examples)
    if longest + config.gen_length > lm.model.max_length:
        raise ValueError(f"task {task.name} needs a context of {longest + config.gen_length} tokens (longest prompt "
                         f"{longest} + gen_length {config.gen_length}); this model allows {lm.model.max_length}: use a "
                         "model with a longer context (LLaDA-8B: 4096), a smaller --gen-length, or --limit to the "
                         "first examples if they are shorter")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _batches(indexed: list, size: int) -> list:
    return [indexed[i:i + size] for i in range(0, len(indexed), size)]


def run_task(lm, task: Task, examples: Sequence[Example], rows: Sequence[Row], config, *, batch_size: int = 1,
             repeats: int = 1, warmup: bool = True, dist: Dist = Dist(), progress: Optional[Callable[[int], None]] = None):
    """Run every row over this rank's shard of ``examples``. Returns ``(records, timings)``:
    records of this rank; timings ``{row: [(tokens, seconds), …per round]}`` of this rank."""
    if batch_size <= 0 or repeats <= 0:
        raise ValueError(f"batch_size and repeats must be positive, got {batch_size} and {repeats}")
    shard = [(i, e) for i, e in enumerate(examples)][dist.rank::dist.world_size]
    batches = _batches(shard, batch_size)
    eos = lm.model.eos_id
    records, timings = [], {r.name: [] for r in rows}
    if warmup and batches:
        for row in rows:
            decode_batch(lm, [e for _, e in batches[0]], row, config)
    first_outputs: dict = {}
    for round_ in range(repeats):
        for row in rows:
            tokens_total, seconds = 0, 0.0
            for batch in batches:
                tokens, texts, stats = decode_batch(lm, [e for _, e in batch], row, config)
                tokens_total += stats.generated_tokens
                seconds += stats.wall_time
                if progress is not None:
                    progress(len(batch))
                for (index, example), toks, text in zip(batch, tokens, texts):
                    key = (row.name, index)
                    if round_:
                        first_outputs[key]["reproducible"] &= toks == first_outputs[key]["tokens"]
                        continue
                    answer = answer_of(task, example, text, toks, eos)
                    record = {
                        "task": task.name, "preset": row.name, "cache": row.cache, "unmask": row.unmask,
                        "index": index, "id": example.id, "target": example.target, "answer": answer,
                        "correct": bool(task.score(answer, example)),
                        "output_sha256": _sha(text),
                        "generated_tokens": sum(1 for t in toks if t != eos),
                        "batch_size": len(batch), "batch_nfe": stats.nfe,
                        "batch_tokens_per_step": stats.mean_tokens_per_step / len(batch),
                        "batch_recompute_fraction": stats.recompute_fraction,
                        "batch_wall_time": stats.wall_time, "batch_policy_time": stats.policy_time,
                    }
                    if task.sensitive:
                        record["answer"] = None if answer is None else _sha(answer)[:16]
                    else:
                        record["output"] = text
                    records.append(record)
                    first_outputs[key] = {"tokens": toks, "reproducible": True}
            timings[row.name].append((tokens_total, seconds))
    for r in records:
        r["reproducible"] = first_outputs[(r["preset"], r["index"])]["reproducible"]
    return records, timings


def summarize(records: list, timings: dict, rows: Sequence[Row], task: str, baseline: str) -> list[dict]:
    """Per-row summary of one task. ``timings``: ``{row: [(tokens, seconds) per rank] per round}``."""
    by_row = {r.name: sorted((x for x in records if x["preset"] == r.name), key=lambda x: x["index"]) for r in rows}
    base = {x["index"]: x["answer"] for x in by_row.get(baseline, [])}
    out = []
    for row in rows:
        recs = by_row[row.name]
        n = len(recs)
        tps = [sum(t for t, _ in rnd) / max(max(s for _, s in rnd), 1e-12) for rnd in timings[row.name]]
        secs = [max(s for _, s in rnd) for rnd in timings[row.name]]
        out.append({
            "task": task, "preset": row.name, "cache": row.cache, "unmask": row.unmask, "n": n,
            "accuracy": sum(x["correct"] for x in recs) / n if n else float("nan"),
            "tokens_per_second": statistics.median(tps), "tps_min": min(tps), "tps_max": max(tps), "tps_rounds": tps,
            "seconds_per_item": statistics.median(secs) / n if n else float("nan"),
            "nfe": sum(x["batch_nfe"] for x in recs) / n if n else float("nan"),
            "tokens_per_step": _mean(x["batch_tokens_per_step"] for x in recs),
            "recompute_fraction": _mean(x["batch_recompute_fraction"] for x in recs),
            "policy_time_fraction": _policy_fraction(recs),
            "agreement": (sum(x["answer"] == base.get(x["index"]) for x in recs) / n) if base and n else float("nan"),
            "reproducible": all(x["reproducible"] for x in recs),
        })
    base_tps = next((s["tokens_per_second"] for s in out if s["preset"] == baseline), float("nan"))
    for s in out:
        s["speedup"] = s["tokens_per_second"] / base_tps if base_tps and base_tps == base_tps else float("nan")
    return out


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def _policy_fraction(recs) -> float:
    seen = {}
    for x in recs:  # one entry per batch (records of one batch share the batch stats)
        seen[(x["batch_wall_time"], x["batch_policy_time"])] = None
    wall = sum(w for w, _ in seen)
    return sum(p for _, p in seen) / wall if wall else float("nan")


# --- output ----------------------------------------------------------------------------------


def format_table(summary: list[dict], tasks: Sequence[str], rows: Sequence[Row]) -> str:
    """The paper's shape: one line per row, per task ``acc  tok/s (speedup)``; then per task and
    row NFE, tokens/step, recompute fraction, agreement and the timing spread."""
    cell = {(s["task"], s["preset"]): s for s in summary}
    width = max(len("preset"), *(len(r.name) for r in rows))
    average = len(tasks) > 1  # the paper's last column: mean accuracy and mean speedup over tasks
    head = f"{'preset':<{width}}" + "".join(f" | {t[:24]:^25}" for t in tasks) + (f" | {'average':^16}" if average else "")
    sub = (" " * width + "".join(f" | {'acc':>7} {'tok/s':>8} {'(x)':>7} " for _ in tasks)
           + (f" | {'acc':>7} {'(x)':>7} " if average else ""))
    lines = [head, sub, "-" * len(sub)]
    for r in rows:
        line = f"{r.name:<{width}}"
        for t in tasks:
            s = cell[(t, r.name)]
            line += f" | {100 * s['accuracy']:7.2f} {s['tokens_per_second']:8.1f} {_x(s['speedup']):>7} "
        if average:
            line += (f" | {100 * _mean(cell[(t, r.name)]['accuracy'] for t in tasks):7.2f}"
                     f" {_x(_mean(cell[(t, r.name)]['speedup'] for t in tasks)):>7} ")
        lines.append(line)
    lines += ["", f"{'task':<12} {'preset':<{width}} {'n':>5} {'acc%':>7} {'tok/s':>8} {'spread':>17} {'speedup':>7} "
              f"{'NFE':>7} {'tok/step':>8} {'recomp':>7} {'agree%':>7}"]
    for t in tasks:
        for r in rows:
            s = cell[(t, r.name)]
            spread = f"[{s['tps_min']:.1f}-{s['tps_max']:.1f}]"
            lines.append(f"{t[:12]:<12} {r.name:<{width}} {s['n']:>5} {100 * s['accuracy']:7.2f} "
                         f"{s['tokens_per_second']:8.1f} {spread:>17} {_x(s['speedup']):>7} {s['nfe']:7.1f} "
                         f"{s['tokens_per_step']:8.2f} {s['recompute_fraction']:7.3f} {100 * s['agreement']:7.1f}")
    return "\n".join(lines)


def _x(v: float) -> str:
    return f"{v:.2f}x" if v == v else "-"


def write_outputs(out_dir, records: list, summary: list, meta: dict, table: str) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "records.json").write_text(json.dumps(records, indent=1))
    (out / "summary.json").write_text(json.dumps({"meta": meta, "summary": summary}, indent=1))
    (out / "table.txt").write_text(table + "\n")
    for name, rows in (("records.csv", records), ("summary.csv", summary)):
        keys = list(dict.fromkeys(k for r in rows for k in r))
        with open(out / name, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            for r in rows:
                w.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()})
    return out


def run_bench(lm, tasks: Sequence[Task], rows: Sequence[Row], *, limit: Optional[int] = None, batch_size: int = 1,
              repeats: int = 1, warmup: bool = True, baseline: Optional[str] = None, dist: Dist = Dist(),
              progress: bool = False, **config_overrides) -> dict:
    """Run the grid; on rank 0 returns ``{"records", "summary", "table", "configs"}`` (other ranks
    get the same, gathered). ``config_overrides`` go to :func:`task_config`."""
    from tqdm import tqdm

    if not rows or not tasks:
        raise ValueError("the bench needs at least one row and one task")
    names = [r.name for r in rows]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate rows: {names}")
    baseline = baseline or ("baseline" if "baseline" in names else names[0])
    if baseline not in names:
        raise ValueError(f"baseline {baseline!r} is not one of the rows {names}")
    if lm.model.block_causal and config_overrides.get("block_length") is None:
        config_overrides = {**config_overrides, "block_length": lm.model.block_size}  # its trained blocks, not Table 4's
    all_records, summary, configs, loaded = [], [], {}, []
    for task in tasks:  # every input error before any decoding
        config = task_config(task, **config_overrides)
        configs[task.name] = attrs.asdict(config)
        examples = task.load(limit)
        if not examples:
            raise ValueError(f"task {task.name} has no examples")
        check_lengths(lm, task, examples, config)
        loaded.append((task, config, examples))
    for task, config, examples in loaded:
        mine = len(examples[dist.rank::dist.world_size])
        with tqdm(total=mine * len(rows) * repeats, desc=task.name, unit="item", file=sys.stderr,
                  disable=not (progress and dist.main)) as bar:
            records, timings = run_task(lm, task, examples, rows, config, batch_size=batch_size, repeats=repeats,
                                        warmup=warmup, dist=dist, progress=bar.update)
        gathered = dist.gather((records, timings))
        records = sorted((r for recs, _ in gathered for r in recs), key=lambda r: (names.index(r["preset"]), r["index"]))
        merged = {name: [[t[name][k] for _, t in gathered] for k in range(repeats)] for name in names}
        all_records += records
        summary += summarize(records, merged, rows, task.name, baseline)
    table = format_table(summary, [t.name for t in tasks], rows)
    return {"records": all_records, "summary": summary, "table": table, "configs": configs, "baseline": baseline}
