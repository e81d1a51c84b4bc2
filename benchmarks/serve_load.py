"""Bounded load on ``dynamic-dllm serve``: batched vs one request at a time.

    python benchmarks/serve_load.py [--requests 32] [--clients 8] [--threads 1]

Starts the server twice on loopback with the shipped ``tiny`` model — ``--max-batch 8`` and
``--max-batch 1`` — and sends the same mixed workload (:func:`dynamic_dllm.serve.load.workload`:
chat and completion, five policy pairs, 16/32/48 tokens, ~40 % streaming, 3 early disconnects) from
``--clients`` threads with the official ``openai`` client. Prints requests/s and p50/p95 latency of
the completed requests, and the mean batch size from ``/metrics``. ``--uniform`` gives every request
the same policies and length, so all of them may share batches.
"""

from __future__ import annotations

import argparse
import re
import urllib.request

from dynamic_dllm.serve.load import drive, percentile, start_server, workload


def run(max_batch: int, requests: list, clients: int, threads: int) -> dict:
    proc, base = start_server("--max-batch", str(max_batch), "--max-wait-ms", "30", "--threads", str(threads))
    try:
        drive(base, requests[:4], concurrency=2)  # warm-up
        results, wall = drive(base, requests, concurrency=clients)
        metrics = urllib.request.urlopen(base.removesuffix("/v1") + "/metrics").read().decode()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    lat = [r["latency"] for r, q in zip(results, requests) if not q["disconnect"]]
    total = float(re.search(r"^dynamic_dllm_batch_size_sum (\S+)", metrics, re.M).group(1))
    count = float(re.search(r"^dynamic_dllm_batch_size_count (\S+)", metrics, re.M).group(1))
    return {"rps": len(requests) / wall, "p50": percentile(lat, 0.5), "p95": percentile(lat, 0.95),
            "batch": total / count, "wall": wall}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--uniform", action="store_true", help="every request dual + low-confidence, 32 tokens (all batchable together)")
    args = ap.parse_args()
    requests = workload(args.requests, seed=1)
    if args.uniform:
        for r in requests:
            r.update(cache="dual", unmask="low-confidence", max_tokens=32)
    print(f"tiny, {args.requests} {'uniform' if args.uniform else 'mixed'} requests from {args.clients} clients, "
          f"server torch threads {args.threads}")
    print(f"{'server':<14} {'req/s':>7} {'p50 s':>7} {'p95 s':>7} {'mean batch':>10} {'wall s':>7}")
    for label, max_batch in (("--max-batch 8", 8), ("--max-batch 1", 1)):
        r = run(max_batch, requests, args.clients, args.threads)
        print(f"{label:<14} {r['rps']:>7.2f} {r['p50']:>7.3f} {r['p95']:>7.3f} {r['batch']:>10.2f} {r['wall']:>7.2f}", flush=True)


if __name__ == "__main__":
    main()
