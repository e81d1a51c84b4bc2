"""What a GPU would pay for per denoising step: ops, host syncs, time and the policies' share.

    python benchmarks/engine_profile.py [--model tiny] [--prompt-len N] [--threads 1]
                                        [--caches none,dual,...] [--unmasks low-confidence,...]

Per cache × unmask pair (block 32, steps = gen length, fp32, temperature 0, batch 1):

* **ops/step** — top-level aten ops (on a GPU at batch 1 roughly one kernel launch each);
* **syncs/step** — device→host synchronisations;

both counted as :mod:`dynamic_dllm.evaluation.profiling` defines them, per step as
``(count at gen 2G − count at gen G) / (NFE difference)`` after a warm-up generation.

* **ms/step** — wall time / NFE of an unprofiled generation at gen 2G (median of ``--repeats``);
* **policy** — the share of that wall time spent inside policy calls (``GenerationStats.policy_time``).

``--model`` takes a registered name or folder (``bench-llada-8x512`` for the issues' 8 × 512 random
LLaDA); ``--prompt-len N`` uses N random token ids as the prompt instead of the default text.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch

import dynamic_dllm as dd
from dynamic_dllm.evaluation.profiling import benchmark_prompt, per_step

DEFAULT_CACHES = "none,prefix,dual,dcu+window,dllm-cache,sparse-dllm,dkv-cache"
DEFAULT_UNMASKS = "low-confidence,threshold,apd"
TINY_PROMPT = "swap case: JuLOTmu FqiAoF kWE MImwn fu xjWR UsUt qITfWV"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny", help="registered name or checkpoint folder (default: tiny)")
    ap.add_argument("--prompt-len", type=int, default=None, help="use N random token ids as the prompt")
    ap.add_argument("--gen-length", type=int, default=32, help="G: the counts difference gen 2G and gen G (default 32)")
    ap.add_argument("--block-length", type=int, default=32)
    ap.add_argument("--caches", default=DEFAULT_CACHES)
    ap.add_argument("--unmasks", default=DEFAULT_UNMASKS)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    lm = dd.load_model(args.model)
    prompt, chat = benchmark_prompt(lm.model.vocab_size, args.prompt_len, TINY_PROMPT)
    G, Lb = args.gen_length, args.block_length

    def runner(cache, unmask, gen):
        return lambda: dd.generate(lm, prompt, cache=cache, unmask=unmask, gen_length=gen, block_length=Lb, steps=gen, chat=chat)

    print(f"{args.model}, prompt {'text' if not args.prompt_len else f'{args.prompt_len} random ids'}, gen {G}→{2 * G},"
          f" block {Lb}, steps = gen, {args.threads} thread(s), torch {torch.__version__}")
    print(f"{'cache':<14}{'unmask':<16}{'ops/step':>10}{'syncs/step':>12}{'ms/step':>10}{'policy':>9}")
    for cache in args.caches.split(","):
        for unmask in args.unmasks.split(","):
            ops, syncs = per_step(lambda gen: runner(cache, unmask, gen), G)
            times, shares = [], []
            for _ in range(args.repeats):
                st = runner(cache, unmask, 2 * G)().stats
                times.append(1000 * st.wall_time / st.nfe)
                shares.append(st.policy_time / st.wall_time if st.wall_time else 0.0)
            print(f"{cache:<14}{unmask:<16}{ops:>10.1f}{syncs:>12.2f}"
                  f"{statistics.median(times):>10.2f}{statistics.median(shares):>9.1%}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
