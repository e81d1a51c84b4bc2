"""The paper's Dynamic-dLLM rules (our defaults) against the released code's (``*-released``), rule by rule.

    python benchmarks/released_vs_paper.py [--model bench-llada-8x512] [--prompt-len 700]
                                           [--gen-length 256] [--block-length 32] [--threads 1]

Decodes one prompt (``--prompt-len N`` random ids; 700 = the paper's GSM8K few-shot length) under
each row's cache + unmask policies and prints, per row: the recompute fraction (layer FLOPs spent /
full forwards), NFE, and ``agree`` — the share of generated positions equal to the no-cache run
with the same unmask policy (``none`` is run once per unmask policy). Rows go from the paper's
``dcu+window`` one switch at a time towards the released code (each row changes one rule of the
previous one), then the released policies themselves; docs/paper_vs_released.md lists the rules.
On a random checkpoint ``agree`` measures how far a rule moves the outputs, not accuracy.
"""

from __future__ import annotations

import argparse

import torch

import dynamic_dllm as dd
from dynamic_dllm.evaluation.profiling import benchmark_prompt

#: (label, rule changed, cache spec, unmask spec)
ROWS = [
    ("paper", "Eq. 4-7: input dynamics, proportional budgets, window ∪ top-B",
     "dcu:budget=32+window:size=32", "low-confidence"),
    ("value score", "dynamics on V (released select_from=v)",
     "dcu:budget=32,score=value+window:size=32", "low-confidence"),
    ("uniform budget", "B_l = budget (released softmax(1e-8·s) is uniform)",
     "dcu:budget=32,score=value,allocation=uniform+window:size=32", "low-confidence"),
    ("released", "layer 0 dense, prompt frozen, V of all response rows, window + top-B disjoint, 2(w//2)+1 rows",
     "dcu-released", "low-confidence:commit_mask=true"),
    ("released input", "released with select_from=x",
     "dcu-released:score=input", "low-confidence:commit_mask=true"),
    ("apd paper", "APD Eq. 8-9, alpha 0.001, beta 0.0008, tau reset per block", "none", "apd"),
    ("apd released", "alpha 0.01, beta 0.15, tau carried over blocks", "none", "apd-released:mode=global"),
    ("parallel released", "dcu-released + apd-released (the released default pair)",
     "dcu-released", "apd-released:mode=global"),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="bench-llada-8x512")
    ap.add_argument("--prompt-len", type=int, default=700)
    ap.add_argument("--gen-length", type=int, default=256)
    ap.add_argument("--block-length", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.threads <= 0:
        raise SystemExit(f"--threads must be a positive integer, got {args.threads}")
    torch.set_num_threads(args.threads)
    lm = dd.load_model(args.model)
    prompt, chat = benchmark_prompt(lm.model.vocab_size, args.prompt_len, "Explain why the sky is blue.")
    config = dict(gen_length=args.gen_length, block_length=args.block_length, steps=args.gen_length)
    baseline = {}

    def run(cache, unmask):
        return dd.generate(lm, prompt, cache=cache, unmask=unmask, chat=chat, **config)

    print(f"{args.model}, prompt {args.prompt_len} random ids, gen {args.gen_length}, block {args.block_length}, "
          f"{args.threads} thread(s)")
    print(f"{'row':<18} {'cache':<60} {'unmask':<32} {'computed':>8} {'nfe':>5} {'agree':>6}  rule")
    for label, rule, cache, unmask in ROWS:
        out = run(cache, unmask)
        if unmask not in baseline:
            baseline[unmask] = out if cache == "none" else run("none", unmask)
        agree = float((out.tokens == baseline[unmask].tokens).double().mean())
        print(f"{label:<18} {cache:<60} {unmask:<32} {out.stats.recompute_fraction:>8.3f} {out.stats.nfe:>5} "
              f"{agree:>6.3f}  {rule}", flush=True)


if __name__ == "__main__":
    main()
