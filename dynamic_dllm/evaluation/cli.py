"""``dynamic-dllm bench``: presets × tasks on one model → paper-style table, records, plots.

Data parallel: ``torchrun --nproc-per-node N -m dynamic_dllm bench …`` shards the examples over
the processes (gloo on CPU, NCCL on CUDA) and rank 0 prints and writes the merged results.
"""

from __future__ import annotations

import json
import sys
import time


def _csv(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def split_rows(text: str) -> list[str]:
    """Rows are ';'-separated (user specs may contain commas: ``dcu:budget=16,score=input+window/apd``);
    a list of plain preset names may also be comma-separated."""
    sep = ";" if (";" in text or "/" in text) else ","
    rows = [p.strip() for p in text.split(sep) if p.strip()]
    if not rows:
        raise ValueError("--presets names no row")
    return rows


def cmd_bench(args) -> int:
    import torch

    from .bench import OPT_IN, PRESETS, available_presets, init_distributed, resolve_row, run_bench
    from .tasks import make_task

    if args.list_presets:
        for name, (cache, unmask) in PRESETS.items():
            note = "  (only when named: batch 1, LLaDA layout)" if name in OPT_IN else ""
            print(f"{name:<31} cache={cache:<12} unmask={unmask}{note}")
        return 0
    task_names = _csv(args.tasks)
    if not task_names:
        raise ValueError("--tasks names no task")
    twice = sorted({t for t in task_names if task_names.count(t) > 1})
    if twice:
        raise ValueError(f"--tasks names {', '.join(twice)} more than once")
    for folder in (args.out, args.plot):  # fail now, not after the whole run
        if folder is not None:
            _check_writable(folder)
    # rows are ';'-separated since user specs may contain commas (dcu:budget=16,score=input+window/apd)
    rows = [resolve_row(r) for r in (split_rows(args.presets) if args.presets else available_presets())]
    tasks = [make_task(t, data_dir=args.data_dir, allow_code_execution=args.allow_code_execution,
                       gpqa_subset=args.gpqa_subset) for t in task_names]
    dist = init_distributed(args.device)
    if dist.world_size > 1 and args.device == "cuda":  # one GPU per process
        import os

        args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', dist.rank))}"
        torch.cuda.set_device(args.device)
    from ..api import load_model

    lm = load_model(args.model, dtype=args.dtype, device=args.device)
    t0 = time.time()
    try:
        result = _run(args, lm, tasks, rows, dist, run_bench)
    finally:
        if dist.world_size > 1:
            import torch.distributed

            torch.distributed.destroy_process_group()
    if not dist.main:
        return 0
    return _report(args, lm, tasks, rows, dist, result, t0)


def _check_writable(folder) -> None:
    """Create ``folder`` and check a file can be written there (one line naming it if not)."""
    import tempfile
    from pathlib import Path

    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ValueError(f"cannot write to {folder}: {exc.strerror or exc}") from None


def _run(args, lm, tasks, rows, dist, run_bench):
    return run_bench(lm, tasks, rows, limit=args.limit, batch_size=args.batch_size, repeats=args.repeats,
                       warmup=not args.no_warmup, baseline=args.baseline, dist=dist, progress=not args.no_progress,
                       gen_length=args.gen_length, block_length=args.block_length, steps=args.steps,
                       stop_at_eos=args.stop_at_eos, temperature=args.temperature, seed=args.seed, dtype=args.dtype,
                       device=args.device)


def _report(args, lm, tasks, rows, dist, result, t0) -> int:
    import torch

    from .bench import write_outputs

    meta = {"model": args.model, "tasks": [t.name for t in tasks],
            "rows": [{"name": r.name, "cache": r.cache, "unmask": r.unmask} for r in rows], "baseline": result["baseline"],
            "limit": args.limit, "batch_size": args.batch_size, "repeats": args.repeats, "world_size": dist.world_size,
            "configs": result["configs"], "torch_threads": torch.get_num_threads(), "seconds": time.time() - t0,
            "command": " ".join(sys.argv)}
    out = write_outputs(args.out, result["records"], result["summary"], meta, result["table"])
    if args.plot:
        _plots(args, lm, tasks, rows, result)
    if args.json:
        print(json.dumps(result["summary"]))
    else:
        print(f"model {args.model or 'tiny (embedded)'} | {dist.world_size} process(es) | torch threads "
              f"{torch.get_num_threads()} | batch size {args.batch_size} | repeats {args.repeats}")
        print(result["table"])
        print(f"[records and summary (JSON, CSV) in {out}]", file=sys.stderr)
    return 0


def _plots(args, lm, tasks, rows, result) -> None:
    from pathlib import Path

    from .bench import Row, decode_batch, task_config
    from .observe import recompute_fractions
    from .plots import frontier, recompute_heatmap

    folder = Path(args.plot)
    folder.mkdir(parents=True, exist_ok=True)
    written = [frontier(result["summary"], folder / "frontier.png")]
    row = next((r for r in rows if "dcu" in r.cache), None)
    if row is None:
        try:
            from .bench import resolve_row

            row = resolve_row("dynamic-dllm")
        except ValueError as exc:
            print(f"warning: no recompute heatmap: no dcu row and the dynamic-dllm preset is unavailable ({exc})",
                  file=sys.stderr)
    if row is not None:
        task = tasks[0]
        example = task.load(1)[0]
        config = task_config(task, gen_length=args.gen_length, block_length=args.block_length, steps=args.steps,
                             stop_at_eos=args.stop_at_eos, dtype=args.dtype, device=args.device)
        _, _, stats = decode_batch(lm, [example], Row(row.name, row.cache, row.unmask), config)
        written.append(recompute_heatmap(recompute_fractions(stats), folder / "recompute_heatmap.png",
                                         title=f"{row.cache} ({task.name}, item 0): rows recomputed per layer and step"))
    print(f"[plots: {', '.join(str(p) for p in written)}]", file=sys.stderr)


def add_parser(sub) -> None:
    from ..cli import add_model_options, add_threads_option, positive_int

    b = sub.add_parser("bench", help="presets x tasks on one model: accuracy, tokens/s, speedup, agreement (paper table)")
    add_model_options(b)
    b.add_argument("--tasks", default="tiny-suite",
                   help="comma-separated: tiny-suite, gsm8k, mmlu, arc_challenge, gpqa, humaneval")
    b.add_argument("--presets", default=None,
                   help="rows: preset names (',' or ';'-separated) or CACHE/UNMASK specs (';'-separated); see --list-presets"
                        " (default: every preset whose policies are registered)")
    b.add_argument("--baseline", default=None, help="row the speedup and agreement refer to (default: baseline, else the first)")
    b.add_argument("--list-presets", action="store_true", help="print the presets and exit")
    b.add_argument("--data-dir", default=None, help="benchmark data folder (default: $DYNAMIC_DLLM_DATA or ../shared/data)")
    b.add_argument("--limit", type=positive_int, default=None, help="first N examples of each task")
    b.add_argument("--batch-size", type=positive_int, default=1)
    b.add_argument("--repeats", type=positive_int, default=1, help="timed rounds; tokens/s is their median (spread reported)")
    b.add_argument("--no-warmup", action="store_true", help="do not run an untimed warm-up batch per row and task")
    b.add_argument("--gen-length", type=positive_int, default=None, help="override the task's Table-4 generation length")
    b.add_argument("--block-length", type=positive_int, default=None)
    b.add_argument("--steps", type=positive_int, default=None, help="default: the task's; = gen-length when that is overridden")
    eos = b.add_mutually_exclusive_group()
    eos.add_argument("--stop-at-eos", dest="stop_at_eos", action="store_true", default=None,
                     help="stop a row after the block in which it produced EOS (default: per task; tiny-suite on)")
    eos.add_argument("--no-stop-at-eos", dest="stop_at_eos", action="store_false")
    b.add_argument("--temperature", type=float, default=0.0)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--gpqa-subset", default="main", choices=["main", "diamond"])
    b.add_argument("--allow-code-execution", action="store_true",
                   help="allow humaneval to execute model-generated code (subprocess, timeout, memory limit)")
    add_threads_option(b)
    b.add_argument("--out", default="bench_results", help="folder for records/summary JSON+CSV and the table")
    b.add_argument("--plot", default=None, metavar="DIR", help="write frontier.png and recompute_heatmap.png here")
    b.add_argument("--json", action="store_true", help="print the summary as JSON instead of the table")
    b.add_argument("--no-progress", action="store_true")
    b.set_defaults(func=cmd_bench)
