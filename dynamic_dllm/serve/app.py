"""The Starlette application of ``dynamic-dllm serve``.

Routes: ``POST /v1/chat/completions``, ``POST /v1/completions`` (OpenAI shapes; ``stream: true``
sends Server-Sent Events, one chunk per final block, then ``data: [DONE]``), ``GET /v1/models``,
``GET /health``, ``GET /metrics`` (Prometheus text). Client errors are HTTP 400 / 401 / 404 / 413 with
OpenAI's error body and one line; an unexpected failure is a 500 whose body names the exception in
one line — never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Optional

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .batcher import Batcher
from .metrics import Metrics
from .protocol import RequestError, chunk_body, completion_body, error_body, parse_request

#: request bodies larger than this are refused with 413
MAX_BODY_BYTES = 1 << 20


class _Sink:
    """Carries one job's events from the worker thread to its request's event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop, self.queue, self.gone = loop, asyncio.Queue(), False

    def cancelled(self) -> bool:
        return self.gone

    def _put(self, item) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the event loop closed (shutdown): nobody is listening any more
            self.gone = True

    def block(self, text: str, finished: bool) -> None:
        self._put(("block", text, finished))

    def done(self, text, finish, usage, stats) -> None:
        self._put(("done", text, finish, usage, stats))

    def fail(self, message: str) -> None:
        self._put(("fail", message))


def _holdback(text: str, stop: tuple) -> str:
    """``text`` without a tail that could be the start of a stop string (sent once the next block
    shows whether the stop string follows)."""
    keep = len(text)
    for s in stop:
        for n in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:n]):
                keep = min(keep, len(text) - n)
                break
    return text[:keep]


def _error(message: str, status: int = 400, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse(error_body(" ".join(str(message).split()), kind), status_code=status)


def create_app(lm, model_name: str, defaults: dict, max_batch: int = 8, max_wait_ms: float = 20.0,
               api_key: Optional[str] = None) -> Starlette:
    metrics = Metrics()
    batcher = Batcher(lm, max_batch=max_batch, max_wait_ms=max_wait_ms, metrics=metrics)

    def authorized(request: Request) -> bool:
        return api_key is None or request.headers.get("authorization", "") == f"Bearer {api_key}"

    async def read_json(request: Request):
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
            raise RequestError(f"request body of {length} bytes exceeds the limit of {MAX_BODY_BYTES}", status=413)
        body = b""
        async for part in request.stream():
            body += part
            if len(body) > MAX_BODY_BYTES:
                raise RequestError(f"request body exceeds the limit of {MAX_BODY_BYTES} bytes", status=413)
        try:
            return json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RequestError(f"malformed JSON body: {exc}") from None

    def completion_route(kind: str, route: str):
        async def handler(request: Request):
            t0 = time.perf_counter()
            if not authorized(request):
                metrics.requests.labels(route, "401").inc()
                return _error("missing or wrong API key (send Authorization: Bearer KEY)", 401, "authentication_error")
            try:
                job = parse_request(await read_json(request), kind, lm, model_name, defaults)
            except RequestError as exc:
                metrics.requests.labels(route, str(exc.status)).inc()
                return _error(str(exc), exc.status, exc.kind)
            sink = _Sink(asyncio.get_running_loop())
            batcher.submit(job, sink)
            if job.stream:
                return StreamingResponse(_stream(request, job, sink, route, t0), media_type="text/event-stream")
            try:
                event = await sink.queue.get()
                while event[0] == "block":
                    event = await sink.queue.get()
            except asyncio.CancelledError:
                sink.gone = True
                raise
            if event[0] == "fail":
                status = 500 if event[1].startswith("internal error") else 400
                metrics.requests.labels(route, str(status)).inc()
                return _error(event[1], status, "internal_error" if status == 500 else "invalid_request_error")
            _, text, finish, usage, stats = event
            metrics.requests.labels(route, "200").inc()
            metrics.latency.labels(route).observe(time.perf_counter() - t0)
            return JSONResponse(completion_body(job, text, finish, usage, stats))
        return handler

    async def _stream(request: Request, job, sink: _Sink, route: str, t0: float):
        def sse(obj) -> str:
            return f"data: {json.dumps(obj)}\n\n"

        sent, finish = "", None
        try:
            if job.kind == "chat":
                yield sse(chunk_body(job, None, None, first=True))
            while True:
                event = await sink.queue.get()
                if event[0] == "fail":
                    yield sse(error_body(event[1]))
                    metrics.requests.labels(route, "500" if event[1].startswith("internal error") else "400").inc()
                    yield "data: [DONE]\n\n"
                    return
                text = event[1]
                if event[0] == "block":
                    safe = _holdback(text.rstrip("\ufffd"), job.stop)  # a character cut between blocks, a stop-string prefix
                    if len(safe) > len(sent) and safe.startswith(sent):
                        yield sse(chunk_body(job, safe[len(sent):], None))
                        sent = safe
                    continue
                _, text, finish, usage, stats = event
                if len(text) > len(sent) and text.startswith(sent):
                    yield sse(chunk_body(job, text[len(sent):], None))
                final = chunk_body(job, None, finish)
                final["usage"], final["dynamic_dllm"] = usage, stats
                yield sse(final)
                break
            yield "data: [DONE]\n\n"
            metrics.requests.labels(route, "200").inc()
            metrics.latency.labels(route).observe(time.perf_counter() - t0)
        except asyncio.CancelledError:  # the client went away
            sink.gone = True
            metrics.requests.labels(route, "499").inc()
            raise
        finally:
            sink.gone = True

    async def models(request: Request):
        if not authorized(request):
            return _error("missing or wrong API key (send Authorization: Bearer KEY)", 401, "authentication_error")
        from ..core.registry import get_registry

        registry = get_registry()
        return JSONResponse({"object": "list", "data": [{
            "id": model_name, "object": "model", "created": 0, "owned_by": "dynamic-dllm",
            "max_length": lm.model.max_length, "defaults": defaults,
            "policies": {"cache": sorted(registry.cache_policies()), "unmask": sorted(registry.unmask_policies())}}]})

    async def health(request: Request):
        return JSONResponse({"status": "ok", "model": model_name, "queue": len(batcher.pending)})

    async def metrics_route(request: Request):
        return Response(metrics.text(), media_type="text/plain; version=0.0.4")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        batcher.stop()

    async def internal_error(request: Request, exc: Exception):
        message = " ".join(str(exc).split()) or type(exc).__name__
        return _error(f"internal error {type(exc).__name__}: {message}", 500, "internal_error")

    async def not_found(request: Request, exc):
        return _error(f"no route {request.method} {request.url.path}", getattr(exc, "status_code", 404), "not_found")

    app = Starlette(routes=[
        Route("/v1/chat/completions", completion_route("chat", "chat"), methods=["POST"]),
        Route("/v1/completions", completion_route("completion", "completion"), methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics_route, methods=["GET"]),
    ], exception_handlers={Exception: internal_error, 404: not_found, 405: not_found}, lifespan=lifespan)
    app.state.batcher, app.state.metrics = batcher, metrics
    return app
