"""``dynamic-dllm train-tiny`` and ``dynamic-dllm eval-tiny``: train and score the tiny model."""

from __future__ import annotations

import json
import sys


def cmd_train_tiny(args) -> int:
    from .training import train_tiny

    result = train_tiny(args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup=args.warmup,
                        seed=args.seed, short_gen_length=args.short_gen_length, full_every=args.full_every,
                        eval_every=args.eval_every, eval_items=args.eval_items, eval_gen_length=args.eval_gen_length,
                        threads=args.threads,
                        time_limit_min=args.time_limit_min, log_path=args.log, init_from=args.init_from, eps=args.eps,
                        rope_theta=args.rope_theta,
                        progress=not args.no_progress)
    print(json.dumps({k: v for k, v in result.items() if k != "history"}))
    return 0


def cmd_eval_tiny(args) -> int:
    from tqdm import tqdm

    from ..api import load_model
    from .tiny_suite import heldout_items
    from .training import evaluate

    lm = load_model(args.model)
    tasks = None
    if args.tasks is not None:
        tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
        if not tasks:
            raise ValueError("--tasks names no task (omit it for all tasks: caesar, fill, swapcase)")
    items = heldout_items(args.n, tasks=tasks)
    with tqdm(total=len(items), disable=args.no_progress, file=sys.stderr) as bar:
        result = evaluate(lm, items, cache=args.cache, unmask=args.unmask, gen_length=args.gen_length,
                          block_length=args.block_length, steps=args.steps, batch_size=args.batch_size, progress=bar.update)
    if args.json:
        print(json.dumps(result))
    else:
        tasks = ", ".join(f"{t} {a:.3f}" for t, a in result["per_task"].items())
        print(f"exact match {result['accuracy']:.3f} on {result['n']} held-out items ({tasks}); "
              f"cache={args.cache} unmask={args.unmask} nfe={result['nfe']} over {result['batches']} batches, tokens/step per sequence={result['mean_tokens_per_step']:.2f}")
    return 0


def add_parser(sub) -> None:
    from ..cli import add_threads_option

    t = sub.add_parser("train-tiny", help="train the tiny LLaDA-architecture model on the synthetic task suite")
    t.add_argument("--out", required=True, help="output checkpoint folder (HF layout); the best one goes to OUT/best")
    t.add_argument("--steps", type=int, default=3200, help="optimizer steps the LR schedule is planned over")
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate (linear warmup, cosine decay)")
    t.add_argument("--warmup", type=int, default=100)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--eps", type=float, default=1e-3, help="t ~ U(eps, 1): the smallest masking rate (caps the 1/t weight)")
    t.add_argument("--rope-theta", type=float, default=None, help="RoPE base of a new model (default: LLaDA's 500000)")
    t.add_argument("--short-gen-length", type=int, default=64, help="answer-region length of the cheap batches")
    t.add_argument("--full-every", type=int, default=6, help="every N-th batch uses the full 256-token answer region")
    t.add_argument("--eval-every", type=int, default=500)
    t.add_argument("--eval-items", type=int, default=24, help="held-out items scored at each evaluation")
    t.add_argument("--eval-gen-length", type=int, default=64, help="tokens decoded by the periodic evaluations")
    add_threads_option(t)
    t.add_argument("--time-limit-min", type=float, default=None, help="stop (and save) after this many minutes")
    t.add_argument("--init-from", default=None, help="continue from this checkpoint folder instead of random weights")
    t.add_argument("--log", default=None, help="JSON-lines log (default OUT/train_log.jsonl)")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=cmd_train_tiny)

    e = sub.add_parser("eval-tiny", help="exact-match accuracy on held-out items of the tiny task suite")
    e.add_argument("--model", default="tiny", help="checkpoint folder or registered name")
    e.add_argument("--n", type=int, default=500, help="number of held-out items")
    e.add_argument("--tasks", default=None, help="comma-separated subset of caesar,fill,swapcase")
    e.add_argument("--cache", default="none")
    e.add_argument("--unmask", default="low-confidence")
    e.add_argument("--gen-length", type=int, default=256)
    e.add_argument("--block-length", type=int, default=32)
    e.add_argument("--steps", type=int, default=None, help="default: gen-length (one token per step)")
    e.add_argument("--batch-size", type=int, default=64)
    add_threads_option(e)
    e.add_argument("--json", action="store_true")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(func=cmd_eval_tiny)
