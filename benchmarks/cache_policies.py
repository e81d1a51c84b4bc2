"""Per cache policy: time per step, rows computed, the policy's own bookkeeping, cost per computed row.

    python benchmarks/cache_policies.py [--model bench-llada-8x512] [--prompt-len N] [--gen-length 256]
                                        [--block-length 32] [--threads 1] [--policies none,dual,dcu+window]
                                        [--repeats 1]

Decodes one prompt with ``low-confidence`` at one token per step (steps = gen_length) under every
registered cache policy (plus the ``dcu+window`` composition) on the registered random LLaDA of
8 layers × 512 width (built once, cached under $DYNAMIC_DLLM_HOME). ``--prompt-len N`` uses N
random token ids as the prompt (the paper's geometry: ``--prompt-len 700``, a GSM8K few-shot
prompt's length). Columns:

* ``ms/step``   wall time of the generation / number of steps (median over repeats after a warm-up);
* ``speedup``   ``none``'s ms/step divided by the policy's (when ``none`` is in the list);
* ``computed``  the stats' recompute fraction: layer FLOPs spent on the rows computed (padding of a
  row set included) / FLOPs of full forwards — what the step costs;
* ``chosen``    distinct rows the policies chose / rows computed (1.0 = no padding);
* ``bookkeep``  seconds inside the cache policies' calls (start, step_start, layer_rows,
  layer_keys, step_end — scoring, budgets, selection) as a share of the step time; it includes any
  all-row layer norm a policy asks for through ``context.normed()`` although the executor reuses
  it (``norm`` gives that part separately); the unmask policy is excluded;
* ``ms/row``    ms/step ÷ computed — the cost of a step per unit of recompute; ``vs dual`` is its
  ratio to ``dual``'s (when ``dual`` is in the list).

Wall-clock on whatever machine runs this: quote ratios from one run on a shared machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import dynamic_dllm as dd
from dynamic_dllm.core import executor as executor_module
from dynamic_dllm.core.registry import get_registry
from dynamic_dllm.evaluation.profiling import benchmark_prompt

CACHE_CALLS = ("start", "step_start", "layer_rows", "layer_keys", "step_end")
PROMPT = "Explain why the sky is blue in two sentences."


class CacheClock:
    """Times the calls of cache-policy instances, and the all-row norms they trigger."""

    def __init__(self):
        self.seconds = 0.0
        self.norm = 0.0
        self.inside = False
        original = executor_module.LayerContext.normed
        clock = self

        def normed(ctx):
            if not clock.inside or ctx._normed is not None:
                return original(ctx)
            t0 = time.perf_counter()
            out = original(ctx)
            clock.norm += time.perf_counter() - t0
            return out

        executor_module.LayerContext.normed = normed

    def wrap(self, policies: list) -> list:
        for p in policies:
            for name in CACHE_CALLS:
                setattr(p, name, self._timed(getattr(p, name)))
        return policies

    def _timed(self, fn):
        def timed(*args):
            t0 = time.perf_counter()
            self.inside = True
            try:
                return fn(*args)
            finally:
                self.inside = False
                self.seconds += time.perf_counter() - t0
        return timed


def run_policy(lm, prompt, chat, spec, args):
    rows = []
    for r in range(args.repeats + 1):
        clock = CacheClock()
        cache = clock.wrap(get_registry().make_cache_policies(spec))
        s = dd.generate(lm, prompt, cache=cache, unmask="low-confidence", gen_length=args.gen_length,
                        block_length=args.block_length, steps=args.gen_length, chat=chat).stats
        if r > 0 or args.repeats == 0:
            rows.append((s.wall_time / s.nfe, s.recompute_fraction, s.chosen_fraction * s.recompute_fraction,
                         clock.seconds / s.wall_time, clock.norm / s.wall_time, s.nfe))
    med = lambda i: statistics.median(x[i] for x in rows)  # noqa: E731
    return dict(step=med(0), computed=med(1), chosen=med(2) / med(1), bookkeep=med(3), norm=med(4), nfe=rows[0][5])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="bench-llada-8x512", help="registered name or checkpoint folder")
    ap.add_argument("--prompt-len", type=int, default=None, help="use N random token ids as the prompt")
    ap.add_argument("--gen-length", type=int, default=256)
    ap.add_argument("--block-length", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per policy after one warm-up (0 = time the only run)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--policies", default=None, help="comma-separated cache specs (default: all registered + dcu+window)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lm = dd.load_model(args.model)
    prompt, chat = benchmark_prompt(lm.model.vocab_size, args.prompt_len, PROMPT)
    if args.policies:
        specs = [p.strip() for p in args.policies.split(",") if p.strip()]
    else:
        names = sorted(get_registry().cache_policies())
        specs = ["none"] + [n for n in names if n != "none"] + ["dcu+window"]
    results = {}
    print(f"{args.model}, prompt {f'{args.prompt_len} random ids' if args.prompt_len else 'text'}, gen {args.gen_length},"
          f" block {args.block_length}, 1 token/step, {torch.get_num_threads()} thread(s), median of {max(args.repeats, 1)} run(s)")
    print(f"{'cache policy':<34}{'ms/step':>9}{'speedup':>9}{'computed':>10}{'chosen':>8}{'bookkeep':>10}{'norm':>7}"
          f"{'ms/row':>9}{'vs dual':>9}{'nfe':>6}")
    for spec in specs:
        res = results[spec] = run_policy(lm, prompt, chat, spec, args)
        speedup = f"{results['none']['step'] / res['step']:>8.2f}x" if "none" in results else f"{'-':>9}"
        per_row = res["step"] * 1e3 / res["computed"]
        vs_dual = (f"{per_row / (results['dual']['step'] * 1e3 / results['dual']['computed']):>9.2f}"
                   if "dual" in results else f"{'-':>9}")
        print(f"{spec:<34}{res['step'] * 1e3:>9.1f}{speedup}{res['computed']:>10.3f}{res['chosen']:>8.3f}"
              f"{res['bookkeep'] * 100:>9.1f}%{res['norm'] * 100:>6.1f}%{per_row:>9.1f}{vs_dual}{res['nfe']:>6}", flush=True)


if __name__ == "__main__":
    main()
