"""``dynamic-dllm serve`` (the OpenAI-compatible server on uvicorn) and ``dynamic-dllm chat`` (the terminal)."""

from __future__ import annotations

import sys


def cmd_serve(args) -> int:
    try:
        import uvicorn

        from .app import create_app
    except ImportError as exc:
        raise ValueError(f"serving needs the serve extra: pip install -e \".[serve]\" ({exc.name} is missing)") from None
    from ..api import DEFAULT_MODEL, default_block_length, load_model
    from ..core.registry import get_registry

    registry = get_registry()  # the default specs must resolve before the model loads ('auto': the model's own)
    if args.cache != "auto":
        registry.make_cache_policies(args.cache)
    registry.make_unmask_policy(args.unmask)
    lm = load_model(args.model, dtype=args.dtype, device=args.device)
    name = args.model or DEFAULT_MODEL
    block_length = args.block_length or default_block_length(lm.model)
    defaults = {"cache": args.cache, "unmask": args.unmask, "block_length": block_length,
                "max_tokens": args.max_tokens}
    app = create_app(lm, name, defaults, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, api_key=args.api_key)
    cache = lm.model.default_cache if args.cache == "auto" else args.cache
    print(f"serving {name} on http://{args.host}:{args.port}/v1 (cache {cache}, unmask {args.unmask}, "
          f"batches of up to {args.max_batch}, wait {args.max_wait_ms} ms)", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def cmd_chat(args) -> int:
    """Multi-turn chat in the terminal: the model's chat template over the whole conversation, each
    block printed when it is final. An empty line or EOF ends it."""
    import torch

    from ..api import generate, load_model
    from ..core.registry import get_registry
    from .protocol import until_eos

    registry = get_registry()
    cache, unmask = registry.make_cache_policies(args.cache), registry.make_unmask_policy(args.unmask)
    lm = load_model(args.model, dtype=args.dtype, device=args.device)
    tok, eos = lm.tokenizer, lm.model.eos_id
    messages: list[dict] = []
    while True:
        try:
            line = input("> ")
        except EOFError:
            break
        if not line.strip():
            break
        messages.append({"role": "user", "content": line})
        text = (tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
                if getattr(tok, "chat_template", None) else "\n".join(m["content"] for m in messages))
        ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
        if ids.shape[1] + args.gen_length > lm.model.max_length:
            raise ValueError(f"the conversation ({ids.shape[1]} tokens) + gen_length {args.gen_length} exceeds the "
                             f"model's maximum length {lm.model.max_length}; start a new chat")
        decoded: list[int] = []
        shown = [""]

        def on_block(index, tokens, _decoded=decoded, _shown=shown):
            if eos in _decoded:
                return
            _decoded.extend(tokens[0].tolist())
            now = tok.decode(until_eos(_decoded, eos)[0], skip_special_tokens=True).rstrip("\ufffd")
            print(now[len(_shown[0]):], end="", flush=True)
            _shown[0] = now

        generate(lm, ids, cache=cache, unmask=unmask, chat=False, on_block=on_block, gen_length=args.gen_length,
                 steps=args.gen_length, stop_at_eos=True, **({} if args.block_length is None else {"block_length": args.block_length}))
        print()
        messages.append({"role": "assistant", "content": shown[0]})
    return 0


def add_parser(sub) -> None:
    import argparse

    from ..cli import add_model_options, add_threads_option, positive_int

    s = sub.add_parser("serve", help="OpenAI-compatible HTTP server (chat, completions, streaming, batching)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Serve one model behind /v1/chat/completions and /v1/completions; each request "
                                   "may choose its cache and unmask policy (fields 'cache', 'unmask').")
    add_model_options(s)
    s.add_argument("--host", default="127.0.0.1", help="interface to listen on (loopback by default)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--cache", default="auto", help="default cache spec of requests that name none ('auto': the "
                                                 "model's exact one — block-kv for block-diffusion models, else none)")
    s.add_argument("--unmask", default="low-confidence", help="default unmask spec")
    s.add_argument("--block-length", type=positive_int, default=None, help="default block length (32; a block-diffusion"
                                                                            " model's trained block size)")
    s.add_argument("--max-tokens", type=positive_int, default=128, help="default max_tokens")
    s.add_argument("--max-batch", type=positive_int, default=8, help="requests decoded together at most")
    s.add_argument("--max-wait-ms", type=float, default=20.0, help="how long a request waits for batch mates")
    s.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY'")
    add_threads_option(s)
    s.set_defaults(func=cmd_serve)
    c = sub.add_parser("chat", help="multi-turn chat in the terminal, each block printed when final",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_model_options(c)
    c.add_argument("--cache", default="dual", help="cache spec")
    c.add_argument("--unmask", default="low-confidence", help="unmask spec")
    c.add_argument("--gen-length", type=positive_int, default=128, help="tokens per answer at most")
    c.add_argument("--block-length", type=positive_int, default=None, help="32; a block-diffusion model's trained block size")
    add_threads_option(c)
    c.set_defaults(func=cmd_chat)
