"""Tokens/s of the paper's presets on a random model at a real checkpoint's sizes, eager and compiled.

    python benchmarks/gpu_check.py --device cuda [--family llada] [--prompt-len 512] [--gen-length 256]
                                   [--block-length 32] [--modes eager,compiled] [--presets baseline,fast-dllm,...]
    python benchmarks/gpu_check.py --device cpu --small        # the same code path, tiny sizes (tests)
    python benchmarks/gpu_check.py --device cpu --model bench-llada-8x512   # a registered model instead

Builds the model in memory on the device (no download, no checkpoint on disk) with random weights
at the configuration of ``--family``: ``llada`` LLaDA-8B-Instruct (32 layers × 4096, 32 heads, d_ff
12288, vocabulary 126464), ``llada-moe`` LLaDA-MoE-7B-A1B (16 × 2048, 64 experts × 1024, top 8),
``sdar`` SDAR-4B-Chat (36 × 2560, GQA 32/8, head_dim 128, block 4), ``fast-dllm-v2`` Fast_dLLM_v2_7B
(28 × 3584, GQA 28/4, block 32), ``llada2`` LLaDA2.0-mini (20 × 2048, 256 experts × 512, top 8 of 4
groups, one shared expert, block 32) — bf16; or with ``--small`` 2 layers × 64 in fp32. Decodes one
prompt of random ids per preset, once to warm up (and compile) and once timed, in each mode.
Bidirectional families: ``baseline``, ``fast-dllm``, ``dynamic-dllm``, ``fast-dllm-parallel``,
``dynamic-dllm-parallel`` (the cache / unmask pairs of ``dynamic-dllm bench``); block-diffusion
families (whose ``--block-length`` is the checkpoint's block size): ``baseline`` (no cache),
``block-kv`` and ``block-kv-parallel`` (the family's own parallel sampler). Prints per preset and
mode: tokens/s, ms/step, NFE, speedup over ``baseline`` in the same mode, and whether the compiled
tokens equal the eager ones (bf16 on a GPU: a different kernel may round differently, so equality
is reported, not required).
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
from dynamic_dllm.core.architecture import DecoderModel
from dynamic_dllm.models.random_checkpoint import FAMILIES, random_config

#: per family: (random_config sizes at the real checkpoint's config, vocabulary, mask id, EOS id) — the
#: values their config.json files hold (LLaDA-MoE's and LLaDA2's as third parties publish them)
FAMILY_SIZES = {
    "llada": (dict(n_layers=32, d_model=4096, n_heads=32, n_kv_heads=32, d_ff=12288, max_length=4096),
              126464, 126336, 126081),
    "llada-moe": (dict(n_layers=16, d_model=2048, n_heads=16, n_kv_heads=16, d_ff=8192, n_experts=64, top_k=8,
                       d_expert=1024, max_length=8192), 157184, 156895, 156892),
    "sdar": (dict(n_layers=36, d_model=2560, n_heads=32, n_kv_heads=8, head_dim=128, d_ff=9728, block_size=4,
                  max_length=32768), 151936, 151669, 151643),
    "fast-dllm-v2": (dict(n_layers=28, d_model=3584, n_heads=28, n_kv_heads=4, d_ff=18944, block_size=32,
                          max_length=32768), 152064, 151665, 151645),
    "llada2": (dict(n_layers=20, d_model=2048, n_heads=16, n_kv_heads=4, head_dim=128, d_ff=5120, n_experts=256,
                    top_k=8, d_expert=512, n_group=8, topk_group=4, d_shared=1, dense_layers=1, block_size=32,
                    max_length=32768), 157184, 156895, 156892),
}
#: ``--small``: 2 layers × 64, fp32, with each family's structure (experts, groups, blocks) kept
SMALL_EXTRA = {"llada-moe": dict(n_experts=4, top_k=2, d_expert=32), "sdar": dict(n_kv_heads=2, block_size=8),
               "fast-dllm-v2": dict(n_kv_heads=2, block_size=8),
               "llada2": dict(n_kv_heads=2, n_experts=8, top_k=2, d_expert=32, n_group=4, topk_group=2, block_size=8)}
SMALL = dict(n_layers=2, d_model=64, n_heads=4, n_kv_heads=4, d_ff=128, max_length=1024)
DEFAULT_PRESETS = "baseline,fast-dllm,dynamic-dllm,fast-dllm-parallel,dynamic-dllm-parallel"
#: block-diffusion families: their exact cache, with low-confidence and with the family's own parallel sampler
BLOCK_PRESETS = {"baseline": ("none", "low-confidence"), "block-kv": ("block-kv", "low-confidence")}
PARALLEL_SAMPLER = {"sdar": "sdar:threshold=0.95", "fast-dllm-v2": "fast-dllm-v2", "llada2": "llada2"}


def presets_for(model: DecoderModel) -> dict:
    """The presets a model runs: ``dynamic-dllm bench``'s for bidirectional ones; for block-diffusion
    ones BLOCK_PRESETS, plus ``block-kv-parallel`` when the family's own sampler is known."""
    if not model.block_causal:
        return PRESETS
    parallel = PARALLEL_SAMPLER.get(model.family)
    return {**BLOCK_PRESETS, **({"block-kv-parallel": ("block-kv", parallel)} if parallel else {})}


def build_model(small: bool, device: str, dtype: torch.dtype, family: str = "llada") -> DecoderModel:
    """A random ``family`` model at its sizes, made on ``device`` (matrices N(0, 0.02), norms 1, biases 0)."""
    sizes, vocab, mask, eos = FAMILY_SIZES[family]
    if small:
        sizes, vocab, mask, eos = {**SMALL, **SMALL_EXTRA.get(family, {})}, 300, 256, 257
    config = random_config(family, vocab, mask, eos, **sizes)
    with torch.device(device):
        model = FAMILIES[family][0](config).to(dtype)
    g = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim > 1:
                p.normal_(0.0, 0.02, generator=g)
            elif name.endswith("bias"):
                p.zero_()
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
    ap.add_argument("--family", default="llada", choices=sorted(FAMILY_SIZES), help="whose sizes the random model has")
    ap.add_argument("--small", action="store_true", help="2 layers x 64 in fp32 (the CPU test of this script)")
    ap.add_argument("--model", default=None, help="a registered model name or folder instead of the built one (fp32)")
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--gen-length", type=int, default=256)
    ap.add_argument("--block-length", type=int, default=32)
    ap.add_argument("--modes", default="eager,compiled", help="comma-separated: eager, compiled")
    ap.add_argument("--presets", default=None, help=f"comma-separated (default: {DEFAULT_PRESETS}; for block-diffusion"
                                                   " families baseline,block-kv,block-kv-parallel)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.dtype = "float32" if args.small or args.model else "bfloat16"
    dd.GenerationConfig(device=args.device, dtype=args.dtype)  # one-line error for a device this machine lacks
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - {"eager", "compiled"}:
        raise SystemExit(f"error: --modes must name eager and/or compiled, got {args.modes!r}")
    if args.model:
        lm = dd.load_model(args.model, dtype=args.dtype, device=args.device)
        model = lm.model
    else:
        model = build_model(args.small, args.device, dd.GenerationConfig(dtype=args.dtype).torch_dtype, args.family)
        lm = LoadedModel(model=model, tokenizer=None)
    known = presets_for(model)
    presets = [p.strip() for p in (args.presets or ",".join(known) if model.block_causal else args.presets or DEFAULT_PRESETS)
               .split(",") if p.strip()]
    unknown = [p for p in presets if p not in known]
    if unknown:
        raise SystemExit(f"error: unknown preset(s) {', '.join(unknown)} for {model.family}; known: {', '.join(known)}")
    if model.block_causal:
        args.block_length = model.block_size  # block-diffusion models decode in their trained blocks
    ids, _ = benchmark_prompt(model.vocab_size, args.prompt_len, "")
    name = args.model or f"random {args.family} at {'2x64 (fp32)' if args.small else 'its checkpoint sizes (bf16)'}"
    device_name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    print(f"{name} on {device_name}, prompt {args.prompt_len} random ids, gen {args.gen_length}, block {args.block_length},"
          f" steps = gen, torch {torch.__version__}")
    print(f"{'preset':<24}{'mode':<10}{'tok/s':>9}{'ms/step':>9}{'nfe':>6}{'speedup':>9}{'= eager':>9}")
    base: dict = {}
    for preset in presets:
        cache, unmask = known[preset]
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
