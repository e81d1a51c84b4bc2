"""A bounded load driver for ``dynamic-dllm serve`` (used by ``benchmarks/serve_load.py`` and the tests).

:func:`workload` builds a mixed request list (chat and completion, several policy pairs and
lengths, some streaming, a few that disconnect after the first chunk); :func:`drive` sends it from
``concurrency`` client threads with the official ``openai`` client (raw HTTP for the disconnecting
ones) and returns each request's output text and latency; :func:`expected_text` is what
``dd.generate`` gives for the same request alone.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import random
import time
from urllib.parse import urlparse

PROMPTS = ["swap case: JuLOTmu FqiAoF kWE MImwn fu xjWR UsUt qITfWV", "fill blanks: 4_6____0__2___2_____01___4__5",
           "caesar shift 2: xvkpt fz xykid fm xc dwg ath jnlh rvd veothr", "swap case: ab CD ef", "hi"]
POLICIES = [("none", "low-confidence"), ("dual", "low-confidence"), ("dual", "apd"), ("dcu+window", "low-confidence"),
            ("prefix", "threshold")]


def start_server(*args: str, timeout: float = 60.0):
    """``dynamic-dllm serve`` as a subprocess on a free loopback port: ``(process, base_url)`` once
    ``/health`` answers."""
    import socket
    import subprocess
    import sys
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "dynamic_dllm", "serve", "--port", str(port), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited: {proc.stderr.read().strip()}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
            return proc, f"http://127.0.0.1:{port}/v1"
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not answer /health in time")


def workload(n: int = 32, seed: int = 0, disconnects: int = 3) -> list[dict]:
    """``n`` requests: kind, prompt, max_tokens, cache, unmask, stream, disconnect."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        cache, unmask = POLICIES[i % len(POLICIES)]
        out.append({"kind": rng.choice(["chat", "completion"]), "prompt": rng.choice(PROMPTS),
                    "max_tokens": rng.choice([16, 32, 48]), "cache": cache, "unmask": unmask,
                    "stream": rng.random() < 0.4, "disconnect": i < disconnects})
    return out


def _send(base_url: str, api_key: str, req: dict) -> dict:
    from openai import OpenAI

    t0 = time.perf_counter()
    if req["disconnect"]:  # read the first streamed chunk, then hang up
        url = urlparse(base_url)
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        body = {"max_tokens": req["max_tokens"], "stream": True, "cache": req["cache"], "unmask": req["unmask"],
                "messages": [{"role": "user", "content": req["prompt"]}]}
        conn.request("POST", "/v1/chat/completions", json.dumps(body),
                     {"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"})
        resp = conn.getresponse()
        resp.readline()
        conn.close()
        return {"text": None, "latency": time.perf_counter() - t0}
    client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=120)
    extra = {"cache": req["cache"], "unmask": req["unmask"]}
    if req["kind"] == "chat":
        args = dict(model="tiny", messages=[{"role": "user", "content": req["prompt"]}], max_tokens=req["max_tokens"],
                    temperature=0, extra_body=extra)
        if req["stream"]:
            text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(stream=True, **args))
        else:
            text = client.chat.completions.create(**args).choices[0].message.content
    else:
        args = dict(model="tiny", prompt=req["prompt"], max_tokens=req["max_tokens"], temperature=0, extra_body=extra)
        if req["stream"]:
            text = "".join(c.choices[0].text for c in client.completions.create(stream=True, **args))
        else:
            text = client.completions.create(**args).choices[0].text
    return {"text": text, "latency": time.perf_counter() - t0}


def drive(base_url: str, requests: list[dict], concurrency: int = 8, api_key: str = "none") -> tuple[list[dict], float]:
    """Results in request order and the wall time of the whole run."""
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda r: _send(base_url, api_key, r), requests))
    return results, time.perf_counter() - t0


def expected_text(lm, req: dict, block_length: int = 32) -> str:
    """``dd.generate`` for the request alone: tokens up to ``max_tokens`` and the first EOS, decoded."""
    import dynamic_dllm as dd

    from .protocol import until_eos

    G = -(-req["max_tokens"] // block_length) * block_length
    out = dd.generate(lm, [req["prompt"]], chat=req["kind"] == "chat", cache=req["cache"], unmask=req["unmask"],
                      gen_length=G, block_length=block_length, steps=G)
    tokens, _ = until_eos(out.tokens[0].tolist()[:req["max_tokens"]], lm.model.eos_id)
    return lm.tokenizer.decode(tokens, skip_special_tokens=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]
