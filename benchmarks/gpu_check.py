"""Tokens/s of the paper's presets on a random model at LLaDA-8B-Instruct's sizes, eager and compiled.

    python benchmarks/gpu_check.py --device cuda [--prompt-len 512] [--gen-length 256] [--block-length 32]
                                   [--modes eager,compiled] [--presets baseline,fast-dllm,...]
    python benchmarks/gpu_check.py --device cpu --small        # the same code path, tiny sizes (tests)
    python benchmarks/gpu_check.py --device cpu --model bench-llada-8x512   # a registered model instead

Builds the model in memory on the device (no download, no checkpoint on disk): LLaDA-8B-Instruct's
configuration (32 layers × 4096, 32 heads, d_ff 12288, vocabulary 126464, bf16) with random
weights, or with ``--small`` 2 layers × 64 in fp32. Decodes one prompt of random ids per preset
(``baseline``, ``fast-dllm``, ``dynamic-dllm``, ``fast-dllm-parallel``, ``dynamic-dllm-parallel``:
the cache / unmask pairs of ``dynamic-dllm bench``), once to warm up (and compile) and once timed,
in each mode. Prints per preset and mode: tokens/s, ms/step, NFE, speedup over ``baseline`` in the
same mode, and whether the compiled tokens equal the eager ones (bf16 on a GPU: a different kernel
may round differently, so equality is reported, not required).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

import dynamic_dllm as dd
from dynamic_dllm.models.checkpoint import LoadedModel
from dynamic_dllm.evaluation.bench import PRESETS
from dynamic_dllm.evaluation.profiling import benchmark_prompt
from dynamic_dllm.models.llada import LLaDAModel
from dynamic_dllm.models.random_checkpoint import random_config

#: LLaDA-8B-Instruct's config.json sizes
LLADA_8B = dict(n_layers=32, d_model=4096, n_heads=32, n_kv_heads=32, d_ff=12288, max_length=4096)
SMALL = dict(n_layers=2, d_model=64, n_heads=4, n_kv_heads=4, d_ff=128, max_length=1024)
VOCAB_8B, MASK_8B, EOS_8B = 126464, 126336, 126081
DEFAULT_PRESETS = "baseline,fast-dllm,dynamic-dllm,fast-dllm-parallel,dynamic-dllm-parallel"


def build_model(small: bool, device: str, dtype: torch.dtype) -> LLaDAModel:
    """A random LLaDA at the chosen sizes, made on ``device`` (weights N(0, 0.02), norms 1)."""
    vocab, mask, eos = (300, 256, 257) if small else (VOCAB_8B, MASK_8B, EOS_8B)
    config = random_config("llada", vocab, mask, eos, **(SMALL if small else LLADA_8B))
    with torch.device(device):
        model = LLaDAModel(config).to(dtype)
    g = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim > 1:
                p.normal_(0.0, 0.02, generator=g)
            else:
                p.fill_(1.0)
    return model.eval()


def timed(lm, ids, cache, unmask, args, compile: bool):
    """(result, seconds) of one generation after one warm-up run."""
    kwargs = dict(cache=cache, unmask=unmask, gen_length=args.gen_length, block_length=args.block_length,
                  steps=args.gen_length, dtype=args.dtype, device=args.device, compile=compile)
    dd.generate(lm, ids, **kwargs)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = dd.generate(lm, ids, **kwargs)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true", help="2 layers x 64 in fp32 (the CPU test of this script)")
    ap.add_argument("--model", default=None, help="a registered model name or folder instead of the built one (fp32)")
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--gen-length", type=int, default=256)
    ap.add_argument("--block-length", type=int, default=32)
    ap.add_argument("--modes", default="eager,compiled", help="comma-separated: eager, compiled")
    ap.add_argument("--presets", default=DEFAULT_PRESETS)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.dtype = "float32" if args.small or args.model else "bfloat16"
    dd.GenerationConfig(device=args.device, dtype=args.dtype)  # one-line error for a device this machine lacks
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - {"eager", "compiled"}:
        raise SystemExit(f"error: --modes must name eager and/or compiled, got {args.modes!r}")
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        raise SystemExit(f"error: unknown preset(s) {', '.join(unknown)}; known: {', '.join(PRESETS)}")
    if args.model:
        lm = dd.load_model(args.model, dtype=args.dtype, device=args.device)
        model = lm.model
    else:
        model = build_model(args.small, args.device, dd.GenerationConfig(dtype=args.dtype).torch_dtype)
        lm = LoadedModel(model=model, tokenizer=None)
    ids, _ = benchmark_prompt(model.vocab_size, args.prompt_len, "")
    name = args.model or ("random LLaDA 2x64 (fp32)" if args.small else "random LLaDA-8B-Instruct sizes (bf16)")
    device_name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    print(f"{name} on {device_name}, prompt {args.prompt_len} random ids, gen {args.gen_length}, block {args.block_length},"
          f" steps = gen, torch {torch.__version__}")
    print(f"{'preset':<24}{'mode':<10}{'tok/s':>9}{'ms/step':>9}{'nfe':>6}{'speedup':>9}{'= eager':>9}")
    base: dict = {}
    for preset in presets:
        cache, unmask = PRESETS[preset]
        eager_tokens = None
        for mode in modes:
            out, seconds = timed(lm, ids, cache, unmask, args, compile=mode == "compiled")
            tps = args.gen_length / seconds
            base.setdefault(mode, tps if preset == "baseline" else None)
            speedup = f"{tps / base[mode]:>8.2f}x" if base.get(mode) else f"{'-':>9}"
            same = "-"
            if mode == "eager":
                eager_tokens = out.tokens
            elif eager_tokens is not None:
                same = "yes" if torch.equal(out.tokens, eager_tokens) else "no"
            print(f"{preset:<24}{mode:<10}{tps:>9.1f}{1000 * seconds / out.stats.nfe:>9.2f}{out.stats.nfe:>6}{speedup}{same:>9}",
                  flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ValueError as exc:
        sys.exit(f"error: {exc}")
