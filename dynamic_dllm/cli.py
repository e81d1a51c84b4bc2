"""``dynamic-dllm`` command line: generate, policies, plugins (+ commands other modules add).

Each command module exposes ``add_parser(subparsers)`` that registers its sub-parser and sets
``func(args) -> int``. Errors (``ValueError`` from validation, missing files) print one line
``error: …`` and exit with status 2 — never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

#: Modules contributing sub-commands (each has ``add_parser(subparsers)``).
COMMAND_MODULES = ("dynamic_dllm.cli", "dynamic_dllm.tasks.cli", "dynamic_dllm.evaluation.cli", "dynamic_dllm.serve.cli")


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1 (``--threads 0`` is exit 2 with one line)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """``--threads N``: torch CPU threads for the command, default 1 (GPU runs need no more; on a shared
    2-core machine two threads run many times slower than one)."""
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="torch CPU threads (default: %(default)s; raise it on an idle many-core CPU)")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--dtype``, ``--device``: which checkpoint a command loads, and how."""
    from .core.types import DTYPE_NAMES

    parser.add_argument("--model", default=None, help="checkpoint folder or registered name (default: the embedded tiny model)")
    parser.add_argument("--dtype", default="float32", choices=DTYPE_NAMES, help="weights and compute dtype")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=None if not sys.stdout.isatty() else 2))


def cmd_generate(args) -> int:
    from .api import checked_fields, config_for, generate, load_model

    fields = dict(gen_length=args.gen_length, steps=args.steps, temperature=args.temperature, seed=args.seed,
                  cfg_scale=args.cfg_scale, stop_at_eos=args.stop_at_eos, dtype=args.dtype, device=args.device,
                  compile=args.compile, **({} if args.block_length is None else {"block_length": args.block_length}))
    config = checked_fields(fields)  # every field checked now; a missing block length once the model is known
    from .core.registry import get_registry

    registry = get_registry()  # resolve the policy specs before loading anything heavy
    cache = args.cache if args.cache == "auto" else registry.make_cache_policies(args.cache)  # auto: after loading
    unmask = registry.make_unmask_policy(args.unmask)
    prompt = args.prompt
    if prompt == "-":
        prompt = sys.stdin.read().rstrip("\n")
        if not prompt.strip():
            raise ValueError("the prompt read from stdin is empty")
    lm = load_model(args.model, dtype=config.dtype, device=config.device)
    config = config_for(lm.model, fields)
    if args.progress:
        from tqdm import tqdm

        with tqdm(total=config.gen_length, unit="tok", file=sys.stderr) as bar:
            result = generate(lm, prompt, cache=cache, unmask=unmask, config=config, chat=not args.no_chat,
                              progress=bar.update)
    else:
        result = generate(lm, prompt, cache=cache, unmask=unmask, config=config, chat=not args.no_chat)
    s = result.stats
    if args.json:
        _print_json({
            "text": result.text, "tokens": result.tokens[0].tolist(),
            "stats": {**s.to_dict(), "tokens_per_step": list(s.tokens_per_step)},
        })
    else:
        print(result.text)
        edited = f" | {s.edited_tokens} edited" if s.edited_tokens else ""
        print(f"[nfe {s.nfe} | {s.tokens_per_second:.1f} tok/s | {s.mean_tokens_per_step:.2f} tok/step{edited} |"
              f" recompute {s.recompute_fraction:.3f} | {s.wall_time:.2f} s]", file=sys.stderr)
    return 0


def cmd_policies(args) -> int:
    from .core.registry import get_registry

    rows = [{"name": e.name, "kind": e.kind, "plugin": e.plugin, "summary": e.summary} for e in get_registry().policies()]
    if args.json:
        _print_json(rows)
    else:
        width = max(len(r["name"]) for r in rows)
        for r in rows:
            print(f"{r['name']:<{width}}  {r['kind']:<6}  {r['summary']}  [{r['plugin']}]")
    return 0


def cmd_plugins(args) -> int:
    from .core.registry import get_registry, plugin_manager

    pm = plugin_manager()
    dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    registry = get_registry()
    provided = {}
    for group in (registry.cache_policies(), registry.unmask_policies(), registry.model_adapters(), registry.checkpoints()):
        for e in group.values():
            provided.setdefault(e.plugin, []).append(f"{e.kind}:{e.name}")
    rows = []
    for name, plugin in pm.list_name_plugin():
        dist = dists.get(id(plugin))
        rows.append({"name": name, "version": getattr(dist, "version", None), "provides": provided.get(name, [])})
    if args.json:
        _print_json(rows)
    else:
        for r in rows:
            version = f" {r['version']}" if r["version"] else ""
            print(f"{r['name']}{version}: {', '.join(r['provides']) or '-'}")
    return 0


def cmd_models(args) -> int:
    from .core.registry import get_registry

    registry = get_registry()
    rows = [{"model_type": name, "architectures": list(getattr(e.obj, "architectures", ())), "plugin": e.plugin,
             "summary": e.summary} for name, e in sorted(registry.model_adapters().items())]
    names = sorted(registry.checkpoints())
    if args.json:
        _print_json({"adapters": rows, "checkpoints": names})
    else:
        for r in rows:
            print(f"{', '.join(r['architectures']) or '-':<24} model_type={r['model_type']:<10} {r['summary']}  [{r['plugin']}]")
        print(f"named checkpoints: {', '.join(names)}")
    return 0


def add_parser(sub) -> None:
    g = sub.add_parser("generate", help="generate text for one prompt",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Decode one prompt with a cache policy and an unmask policy; the text goes to stdout, "
                                   "a stats line to stderr. `dynamic-dllm policies` lists the policy names.")
    g.add_argument("prompt", help="the prompt text; '-' reads it from stdin")
    add_model_options(g)
    g.add_argument("--cache", default="auto", help="cache spec, e.g. dual or dcu:budget=32+window:size=32; auto: the "
                   "model's exact default (none; block-kv for block-diffusion models such as SDAR)")
    g.add_argument("--unmask", default="low-confidence", help="unmask spec, e.g. apd or threshold:threshold=0.9")
    g.add_argument("--gen-length", type=int, default=128, help="tokens to generate")
    g.add_argument("--block-length", type=int, default=None, help="tokens per semi-autoregressive block (default: 32;"
                   " a block-diffusion model's trained block size)")
    g.add_argument("--steps", type=int, default=None, help="denoising steps in all (default: --gen-length, one token per step)")
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    g.add_argument("--cfg-scale", type=float, default=0.0, help="classifier-free guidance scale (0 = off)")
    g.add_argument("--seed", type=int, default=0, help="sampling seed, in [0, 2^63)")
    g.add_argument("--stop-at-eos", action="store_true", help="stop after the block in which every row produced EOS")
    g.add_argument("--progress", action="store_true", help="show a progress bar over the generated tokens on stderr")
    g.add_argument("--no-chat", action="store_true", help="do not wrap the prompt in the chat template")
    g.add_argument("--compile", action="store_true",
                   help="compile the per-layer compute with torch.compile (the first generation pays for compiling)")
    g.add_argument("--json", action="store_true", help="print one JSON object with text, tokens and stats")
    add_threads_option(g)
    g.set_defaults(func=cmd_generate)
    p = sub.add_parser("policies", help="list registered cache and unmask policies")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_policies)
    m = sub.add_parser("models", help="list the supported architectures (HF 'architectures' / model_type) and named checkpoints")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_models)
    q = sub.add_parser("plugins", help="list loaded plugins and what each provides")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_plugins)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dynamic-dllm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "threads", None) is not None:
            import torch

            torch.set_num_threads(args.threads)
        return args.func(args)
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not a user error: still one line, the traceback on request
        if os.environ.get("DYNAMIC_DLLM_DEBUG"):
            raise
        print(f"error: internal error {type(exc).__name__}: {_one_line(exc)} (set DYNAMIC_DLLM_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
