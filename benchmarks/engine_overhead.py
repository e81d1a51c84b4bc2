"""Where the time of one generation goes: model compute vs. engine and policy overhead.

    python benchmarks/engine_overhead.py [--gen-length 128] [--repeats 3]

Builds (once, cached under $DYNAMIC_DLLM_HOME) a random LLaDA of 8 layers x 512 width, runs
``none`` + ``low-confidence`` with one token per step, and splits the wall time into the
executor's forward (model compute incl. cache writes), the policy calls, and the rest of the loop.
Prints the median over repeats (first run = warm-up, excluded).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import dynamic_dllm as dd
from dynamic_dllm.core import executor as executor_module

def bench_model():
    """The registered ``bench-llada-8x512`` random LLaDA (built on first use)."""
    return dd.load_model("bench-llada-8x512")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gen-length", type=int, default=128)
    ap.add_argument("--block-length", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lm = bench_model()
    prompt = "Explain why the sky is blue in two sentences."
    forward_seconds = []
    original = executor_module.PartialLayerExecutor.forward

    def timed_forward(self, *a, **k):
        t0 = time.perf_counter()
        out = original(self, *a, **k)
        forward_seconds[-1] += time.perf_counter() - t0
        return out

    executor_module.PartialLayerExecutor.forward = timed_forward
    rows = []
    for r in range(args.repeats + 1):
        forward_seconds.append(0.0)
        out = dd.generate(lm, prompt, cache="none", unmask="low-confidence", gen_length=args.gen_length,
                          block_length=args.block_length, steps=args.gen_length)
        s = out.stats
        if r:
            rows.append((s.wall_time, forward_seconds[-1], s.policy_time, s.nfe))
    executor_module.PartialLayerExecutor.forward = original
    wall = statistics.median(r[0] for r in rows)
    fwd = statistics.median(r[1] for r in rows)
    pol = statistics.median(r[2] for r in rows)
    nfe = rows[0][3]
    print(f"random LLaDA 8x512, gen {args.gen_length}, block {args.block_length}, 1 token/step, {args.threads} threads,"
          f" median of {args.repeats}")
    print(f"{'part':<28}{'seconds':>10}{'share':>9}{'ms/step':>10}")
    for name, sec in (("total", wall), ("model compute (executor)", fwd), ("policy calls", pol),
                      ("engine loop (rest)", wall - fwd - pol)):
        print(f"{name:<28}{sec:>10.3f}{sec / wall:>9.1%}{1000 * sec / nfe:>10.2f}")


if __name__ == "__main__":
    main()
