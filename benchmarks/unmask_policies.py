"""Committed tokens per step and NFE of the unmask policies on the default model.

    python benchmarks/unmask_policies.py [--model NAME] [--prompts 6] [--gen-length 256]
        [--block-length 32] [--steps 256] [--policies low-confidence,threshold,factor,apd,eb-sampler]

Prompts are the first held-out items of the tiny task suite (one per row, batch 1, chat template
as the CLI uses). For every policy (default parameters, cache ``none``, greedy) prints the mean over
prompts of the NFE and of the mean committed tokens per step (= gen_length / NFE at batch 1), and
the share of exact answers (text before the first EOS equal to the task's answer, the suite's
scoring) and the share of generations whose tokens after that EOS are all EOS (``clean``; a
policy that commits a late block in one step can leave stray bytes there, which
``skip_special_tokens`` decoding would show). Both are meaningful only for the trained ``tiny`` model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import dynamic_dllm as dd
from dynamic_dllm.tasks.tiny_suite import heldout_items
from dynamic_dllm.tasks.training import decode_until_eos


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help=f"checkpoint name or folder (default {dd.DEFAULT_MODEL})")
    ap.add_argument("--prompts", type=int, default=6)
    ap.add_argument("--gen-length", type=int, default=256)
    ap.add_argument("--block-length", type=int, default=32)
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--policies", default="low-confidence,threshold,factor,apd,eb-sampler")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    lm = dd.load_model(args.model)
    items = heldout_items(args.prompts)
    rows = []
    for spec in args.policies.split(","):
        nfe, tps, exact, clean, wall = [], [], [], [], 0.0
        for item in items:
            t0 = time.perf_counter()
            out = dd.generate(lm, item.prompt, cache="none", unmask=spec, gen_length=args.gen_length,
                              block_length=args.block_length, steps=args.steps)
            wall += time.perf_counter() - t0
            nfe.append(out.stats.nfe)
            tps.append(out.stats.mean_tokens_per_step)
            row = out.tokens[0, -args.gen_length:].tolist()
            exact.append(decode_until_eos(row, lm.model.eos_id) == item.answer)
            tail = row[row.index(lm.model.eos_id):] if lm.model.eos_id in row else [None]
            clean.append(all(t == lm.model.eos_id for t in tail))
        rows.append(dict(policy=spec, nfe=statistics.mean(nfe), tokens_per_step=statistics.mean(tps),
                         nfe_min=min(nfe), nfe_max=max(nfe), exact=sum(exact) / len(exact),
                         clean=sum(clean) / len(clean), seconds=wall))
    result = dict(model=args.model or dd.DEFAULT_MODEL, prompts=len(items), gen_length=args.gen_length,
                  block_length=args.block_length, steps=args.steps, rows=rows)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"model {result['model']}, {len(items)} prompts, gen {args.gen_length} / block {args.block_length}"
          f" / steps {args.steps}, cache none, greedy")
    width = max(16, *(len(r["policy"]) + 2 for r in rows))
    print(f"{'policy':<{width}}{'tokens/step':>12}{'NFE':>8}{'NFE range':>12}{'exact':>8}{'clean':>8}{'seconds':>9}")
    for r in rows:
        print(f"{r['policy']:<{width}}{r['tokens_per_step']:>12.2f}{r['nfe']:>8.1f}{str(r['nfe_min']) + '-' + str(r['nfe_max']):>12}"
              f"{r['exact']:>8.2f}{r['clean']:>8.2f}{r['seconds']:>9.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
