"""Prometheus metrics of the server (``GET /metrics``), in a registry of their own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("dynamic_dllm_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.prompt_tokens = Counter("dynamic_dllm_prompt_tokens", "prompt tokens of finished requests", registry=r)
        self.completion_tokens = Counter("dynamic_dllm_completion_tokens", "generated tokens returned", registry=r)
        self.nfe = Counter("dynamic_dllm_nfe", "model forward calls (per batch)", registry=r)
        self.queue_depth = Gauge("dynamic_dllm_queue_depth", "requests waiting for a batch", registry=r)
        self.batch_size = Histogram("dynamic_dllm_batch_size", "requests decoded together", registry=r,
                                    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64))
        self.tokens_per_step = Histogram("dynamic_dllm_tokens_per_step", "committed tokens per step and sequence",
                                         registry=r, buckets=(1, 1.5, 2, 3, 4, 6, 8, 16))
        self.latency = Histogram("dynamic_dllm_request_latency_seconds", "request latency (arrival to last byte)",
                                 ["route"], registry=r,
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))

    def text(self) -> bytes:
        return generate_latest(self.registry)
