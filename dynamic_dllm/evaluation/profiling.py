"""Counting what a GPU would pay for per denoising step: top-level ops and device→host syncs.

* **ops** — profiler events named ``aten::*`` whose parent is not an aten op (at batch 1 on a GPU,
  roughly one kernel launch each);
* **syncs** — profiler count of ``aten::_local_scalar_dense`` (``.item()``, ``bool(t)``,
  ``int(t)``) plus calls of ``Tensor.tolist()`` (a sync the CPU profiler does not show).

:func:`per_step` takes both as ``(count at gen 2G − count at gen G) / (NFE difference)``, so
per-generation constants (encoding, allocation, final stats) cancel, after a warm-up generation.
Used by ``benchmarks/engine_profile.py`` and pinned by ``tests/test_engine_counts.py``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Optional

import torch
from torch.profiler import ProfilerActivity, profile


@contextmanager
def count_tolist():
    """Counts calls of ``Tensor.tolist`` while active (yields a one-element list)."""
    calls = [0]
    original = torch.Tensor.tolist

    def counted(self, *a, **k):
        calls[0] += 1
        return original(self, *a, **k)

    torch.Tensor.tolist = counted
    try:
        yield calls
    finally:
        torch.Tensor.tolist = original


def counts(run: Callable) -> tuple[int, int, int]:
    """(top-level aten ops, host syncs, NFE) of one call of ``run()`` (which returns a GenerationResult)."""
    with count_tolist() as tolist, profile(activities=[ProfilerActivity.CPU]) as prof:
        nfe = run().stats.nfe
    ops = syncs = 0
    for name, parent in _with_parents(prof):
        syncs += name == "aten::_local_scalar_dense"
        ops += name.startswith("aten::") and (parent is None or not parent.startswith("aten::"))
    return ops, syncs + tolist[0], nfe


def _with_parents(prof):
    """``(name, enclosing event's name or None)`` for every profiled CPU event. Reads the raw
    Kineto events and nests them by time per thread (the same tree ``prof.events()`` builds, in a
    fraction of its time); falls back to ``prof.events()`` where the raw results are unavailable."""
    raw = getattr(getattr(prof, "profiler", None), "kineto_results", None)
    if raw is None:
        return [(e.name, e.cpu_parent.name if e.cpu_parent is not None else None) for e in prof.events()]
    spans = sorted(((e.start_thread_id(), e.start_ns(), -(e.start_ns() + e.duration_ns()), e.name()) for e in raw.events()))
    out, stack = [], []  # stack of (thread, end, name)
    for thread, start, neg_end, name in spans:
        while stack and (stack[-1][0] != thread or stack[-1][1] <= start):
            stack.pop()
        out.append((name, stack[-1][2] if stack else None))
        stack.append((thread, -neg_end, name))
    return out


def benchmark_prompt(vocab_size: int, prompt_len: Optional[int], text: str) -> tuple:
    """``(prompt, chat)`` for the benchmarks: ``prompt_len`` random ids below ``min(vocab, 256)``
    (seed 0; the paper's long-prompt geometry without a dataset, no chat template), or ``text``
    through the chat template when ``prompt_len`` is None."""
    if prompt_len:
        ids = torch.randint(0, min(vocab_size, 256), (1, prompt_len), generator=torch.Generator().manual_seed(0))
        return ids, False
    return text, True


def per_step(run_at: Callable[[int], Callable], gen_length: int) -> tuple[float, float]:
    """(ops/step, syncs/step) from ``run_at(G)`` and ``run_at(2G)`` (each returns a ``run()``)."""
    short, long_ = run_at(gen_length), run_at(2 * gen_length)
    short()  # warm-up
    (o1, s1, n1), (o2, s2, n2) = counts(short), counts(long_)
    dn = max(n2 - n1, 1)
    return (o2 - o1) / dn, (s2 - s1) / dn
