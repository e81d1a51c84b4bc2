"""Per cache policy: time per step, recompute fraction, and the policy's own bookkeeping share.

    python benchmarks/cache_policies.py [--gen-length 256] [--block-length 32] [--threads 2]
                                        [--policies none,dual,dcu+window] [--repeats 1]

Builds (once, cached under $DYNAMIC_DLLM_HOME) a random LLaDA of 8 layers x 512 width and decodes
one prompt with ``low-confidence`` at one token per step (steps = gen_length) under every
registered cache policy (plus the ``dcu+window`` composition). Columns:

* ``ms/step``   wall time of the generation / number of steps (median over repeats after a warm-up);
* ``speedup``   ``none``'s ms/step divided by the policy's;
* ``recompute`` the stats' recompute fraction (layer FLOPs spent / FLOPs of full forwards);
* ``bookkeep``  seconds spent inside the *cache* hooks (generation_start, cache_step_start,
  cache_rows, cache_keys, cache_step_end — selection, scoring, budgets) as a share of the step time.
  This includes any all-row layer norm a policy asks for through ``context.normed()`` even though
  the executor reuses it; ``norm`` gives that part separately. The unmask policy is excluded.

The numbers are wall-clock on whatever machine runs this; a shared, busy machine makes them noisy.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import torch

import dynamic_dllm as dd
from dynamic_dllm.core import engine as engine_module
from dynamic_dllm.core import executor as executor_module
from dynamic_dllm.core.registry import get_registry

CACHE_HOOKS = {"generation_start", "cache_step_start", "cache_rows", "cache_keys", "cache_step_end"}
PROMPT = "Explain why the sky is blue in two sentences."


def bench_model():
    """The registered ``bench-llada-8x512`` random LLaDA (built on first use)."""
    return dd.load_model("bench-llada-8x512")


class HookClock:
    """Patches the engine's hook caller and LayerContext.normed to split time by hook name."""

    def __init__(self):
        self.seconds = defaultdict(float)
        self.norm_in_hooks = 0.0
        self._in_hook = False

    def install(self):
        clock = self
        original_call = engine_module._TimedHooks.call
        original_normed = executor_module.LayerContext.normed

        def call(self, hook, **kwargs):
            t0 = time.perf_counter()
            clock._in_hook = True
            try:
                return original_call(self, hook, **kwargs)
            finally:
                clock._in_hook = False
                clock.seconds[hook] += time.perf_counter() - t0

        def normed(self):
            if not clock._in_hook or self._normed is not None:
                return original_normed(self)
            t0 = time.perf_counter()
            out = original_normed(self)
            clock.norm_in_hooks += time.perf_counter() - t0
            return out

        engine_module._TimedHooks.call = call
        executor_module.LayerContext.normed = normed

    def reset(self):
        self.seconds.clear()
        self.norm_in_hooks = 0.0

    @property
    def cache_seconds(self) -> float:
        return sum(v for k, v in self.seconds.items() if k in CACHE_HOOKS)


def run_policy(lm, spec, args, clock):
    rows = []
    for r in range(args.repeats + 1):
        clock.reset()
        out = dd.generate(lm, PROMPT, cache=spec, unmask="low-confidence", gen_length=args.gen_length,
                          block_length=args.block_length, steps=args.gen_length)
        s = out.stats
        if r > 0 or args.repeats == 0:
            rows.append((s.wall_time / s.nfe, s.recompute_fraction, clock.cache_seconds / s.wall_time,
                         clock.norm_in_hooks / s.wall_time, s.nfe))
    med = lambda i: statistics.median(x[i] for x in rows)  # noqa: E731
    return dict(step=med(0), recompute=med(1), bookkeep=med(2), norm=med(3), nfe=rows[0][4])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gen-length", type=int, default=256)
    ap.add_argument("--block-length", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per policy after one warm-up (0 = time the only run)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--policies", default=None, help="comma-separated cache specs (default: all registered + dcu+window)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lm = bench_model()
    if args.policies:
        specs = [p.strip() for p in args.policies.split(",") if p.strip()]
    else:
        names = sorted(get_registry().cache_policies())
        specs = ["none"] + [n for n in names if n != "none"] + ["dcu+window"]
    clock = HookClock()
    clock.install()
    results = {}
    print(f"random LLaDA 8x512, gen {args.gen_length}, block {args.block_length}, 1 token/step, "
          f"{torch.get_num_threads()} threads, median of {max(args.repeats, 1)} run(s)")
    print(f"{'cache policy':<22}{'ms/step':>9}{'speedup':>9}{'recompute':>11}{'bookkeep':>10}{'norm':>7}{'nfe':>6}")
    for spec in specs:
        res = results[spec] = run_policy(lm, spec, args, clock)
        speedup = f"{results['none']['step'] / res['step']:>8.2f}x" if "none" in results else f"{'-':>9}"
        print(f"{spec:<22}{res['step'] * 1e3:>9.1f}{speedup}{res['recompute']:>11.3f}"
              f"{res['bookkeep'] * 100:>9.1f}%{res['norm'] * 100:>6.1f}%{res['nfe']:>6}", flush=True)


if __name__ == "__main__":
    main()
