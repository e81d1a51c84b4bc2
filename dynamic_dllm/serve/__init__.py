"""``dynamic-dllm serve``: an OpenAI-compatible HTTP server (Starlette + uvicorn, the ``serve`` extra)
with per-request cache / unmask policies, block streaming and batched decoding."""
