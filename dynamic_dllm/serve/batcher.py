"""The generation worker of ``dynamic-dllm serve``: one thread owns the model and decodes queued
jobs in batches.

Batching rule: the oldest pending job opens a batch; jobs with the same :attr:`Job.key` (same
policies, gen length, block length and steps; temperature 0; a policy pair whose padded batches
are exact — docs/architecture.md) join it, oldest first, up to ``max_batch``, waiting at most
``max_wait_ms`` after the opener arrived. Other jobs wait for a later batch. A job whose client went
away before its batch starts is dropped; one that leaves mid-batch is decoded and discarded.

Per job the worker calls its sink: ``block(text_so_far, finished)`` when a block is final (for
streaming), then ``done(text, finish_reason, usage, stats)`` or ``fail(message)``.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

import torch

from .protocol import Job, cut, left_pad, until_eos


class Sink(Protocol):
    def cancelled(self) -> bool: ...
    def block(self, text: str, finished: bool) -> None: ...
    def done(self, text: str, finish: str, usage: dict, stats: dict) -> None: ...
    def fail(self, message: str) -> None: ...


class Batcher:
    def __init__(self, lm, max_batch: int, max_wait_ms: float, metrics):
        self.lm, self.max_batch, self.max_wait = lm, max_batch, max_wait_ms / 1000.0
        self.metrics = metrics
        self.pending: list[tuple[Job, Sink]] = []
        self.cond = threading.Condition()
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, name="dynamic-dllm-generate", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        self.thread.join(timeout=30)

    def submit(self, job: Job, sink: Sink) -> None:
        with self.cond:
            self.pending.append((job, sink))
            self.metrics.queue_depth.set(len(self.pending))
            self.cond.notify_all()

    # --- worker ---------------------------------------------------------------------------

    def _take(self) -> list:
        """The next batch (oldest job first, compatible ones after it), or [] when stopping."""
        with self.cond:
            while not self.stopping:
                self.pending = [(j, s) for j, s in self.pending if not s.cancelled()]
                if self.pending:
                    opener = self.pending[0][0]
                    same = [(j, s) for j, s in self.pending if j.key == opener.key][:self.max_batch]
                    wait = opener.arrived + self.max_wait - time.perf_counter()
                    if len(same) >= self.max_batch or wait <= 0 or opener.key[0] == "alone":
                        taken = {id(j) for j, _ in same}
                        self.pending = [(j, s) for j, s in self.pending if id(j) not in taken]
                        self.metrics.queue_depth.set(len(self.pending))
                        return same
                    self.cond.wait(timeout=wait)
                else:
                    self.cond.wait()
            return []

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if not batch:
                return
            try:
                self._run(batch)
            except Exception as exc:  # noqa: BLE001 - a failed batch must not take the worker down
                message = " ".join(str(exc).split()) or type(exc).__name__
                for _, sink in batch:
                    sink.fail(message if isinstance(exc, ValueError) else f"internal error {type(exc).__name__}: {message}")

    def _text(self, tokens: list) -> tuple[str, bool]:
        """Decoded ``tokens`` up to the first EOS, and whether an EOS was found."""
        tokens, hit = until_eos(tokens, self.lm.model.eos_id)
        return self.lm.tokenizer.decode(tokens, skip_special_tokens=True), hit

    def _run(self, batch: list) -> None:
        from ..api import generate

        jobs = [j for j, _ in batch]
        first = jobs[0]
        ids, mask = left_pad(jobs, self.lm.model.pad_id if self.lm.model.pad_id is not None else self.lm.model.eos_id)
        self.metrics.batch_size.observe(len(jobs))
        sent = [False] * len(jobs)  # a row whose stream already ended (EOS, stop string or max_tokens)
        decoded: list[list[int]] = [[] for _ in jobs]

        def on_block(index: int, tokens: torch.Tensor) -> None:
            for row, (job, sink) in enumerate(batch):
                if sent[row]:
                    continue
                decoded[row].extend(tokens[row].tolist())
                text, eos = self._text(decoded[row][:job.max_tokens])
                text, stopped = cut(text, job.stop)
                finished = eos or stopped or len(decoded[row]) >= job.max_tokens
                if job.stream and not sink.cancelled():
                    sink.block(text, finished)
                sent[row] = finished

        out = generate(self.lm, ids, attention_mask=mask, cache=first.cache, unmask=first.unmask, chat=False,
                       on_block=on_block, gen_length=first.gen_length, block_length=first.block_length,
                       steps=first.steps, temperature=first.temperature, seed=first.seed, stop_at_eos=True)
        s = out.stats
        stats = {"nfe": s.nfe, "tokens_per_step": round(s.mean_tokens_per_step, 4),
                 "recompute_fraction": round(s.recompute_fraction, 4), "batch_size": len(jobs),
                 "cache": first.cache, "unmask": first.unmask, "gen_length": first.gen_length,
                 "block_length": first.block_length, "steps": first.steps}
        self.metrics.nfe.inc(s.nfe)
        self.metrics.tokens_per_step.observe(s.mean_tokens_per_step)
        for row, (job, sink) in enumerate(batch):
            body, eos = until_eos(out.tokens[row].tolist()[:job.max_tokens], self.lm.model.eos_id)
            text, stopped = cut(self.lm.tokenizer.decode(body, skip_special_tokens=True), job.stop)
            n_out = len(body)
            if stopped:  # the tokens of the text before the stop string
                n_out = min(n_out, len(self.lm.tokenizer(text, add_special_tokens=False)["input_ids"]))
            finish = "stop" if eos or stopped else "length"
            usage = {"prompt_tokens": len(job.prompt_ids), "completion_tokens": n_out,
                     "total_tokens": len(job.prompt_ids) + n_out}
            self.metrics.prompt_tokens.inc(len(job.prompt_ids))
            self.metrics.completion_tokens.inc(n_out)
            sink.done(text, finish, usage, stats)
