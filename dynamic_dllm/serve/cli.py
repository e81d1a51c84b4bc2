"""``dynamic-dllm serve``: the OpenAI-compatible server on uvicorn."""

from __future__ import annotations

import sys


def cmd_serve(args) -> int:
    try:
        import uvicorn

        from .app import create_app
    except ImportError as exc:
        raise ValueError(f"serving needs the serve extra: pip install -e \".[serve]\" ({exc.name} is missing)") from None
    from ..api import DEFAULT_MODEL, load_model
    from ..core.registry import get_registry

    registry = get_registry()  # the default specs must resolve before the model loads
    registry.make_cache_policies(args.cache)
    registry.make_unmask_policy(args.unmask)
    lm = load_model(args.model, dtype=args.dtype, device=args.device)
    name = args.model or DEFAULT_MODEL
    defaults = {"cache": args.cache, "unmask": args.unmask, "block_length": args.block_length,
                "max_tokens": args.max_tokens}
    app = create_app(lm, name, defaults, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, api_key=args.api_key)
    print(f"serving {name} on http://{args.host}:{args.port}/v1 (cache {args.cache}, unmask {args.unmask}, "
          f"batches of up to {args.max_batch}, wait {args.max_wait_ms} ms)", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def add_parser(sub) -> None:
    import argparse

    from ..cli import add_threads_option, positive_int

    s = sub.add_parser("serve", help="OpenAI-compatible HTTP server (chat, completions, streaming, batching)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Serve one model behind /v1/chat/completions and /v1/completions; each request "
                                   "may choose its cache and unmask policy (fields 'cache', 'unmask').")
    s.add_argument("--model", default=None, help="checkpoint folder or registered name (default: the embedded tiny model)")
    s.add_argument("--host", default="127.0.0.1", help="interface to listen on (loopback by default)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--cache", default="none", help="default cache spec of requests that name none")
    s.add_argument("--unmask", default="low-confidence", help="default unmask spec")
    s.add_argument("--block-length", type=positive_int, default=32, help="default block length")
    s.add_argument("--max-tokens", type=positive_int, default=128, help="default max_tokens")
    s.add_argument("--max-batch", type=positive_int, default=8, help="requests decoded together at most")
    s.add_argument("--max-wait-ms", type=float, default=20.0, help="how long a request waits for batch mates")
    s.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY'")
    s.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    s.add_argument("--device", default="cpu")
    add_threads_option(s)
    s.set_defaults(func=cmd_serve)
