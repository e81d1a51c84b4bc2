"""``dynamic-dllm serve`` on the shipped tiny model, on loopback: the official ``openai`` client
against a server subprocess; outputs equal ``dd.generate`` alone; errors have their status codes;
a bounded concurrent load keeps every response exact and forms batches."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from dynamic_dllm.serve.load import drive, expected_text, start_server, workload  # noqa: E402

KEY = "test-key"


@pytest.fixture(scope="module")
def server():
    proc, base = start_server("--max-batch", "8", "--max-wait-ms", "50", "--api-key", KEY)
    yield base
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server, api_key=KEY, max_retries=0, timeout=60)


def _raw(server, path, body=None, key=KEY, method=None, data=None):
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    raw = data if data is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(server.removesuffix("/v1") + path, data=raw, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.mark.parametrize("kind", ["chat", "completion"])
@pytest.mark.parametrize("stream", [False, True])
def test_official_client_output_equals_generate(client, tiny_lm, kind, stream):
    req = {"kind": kind, "prompt": "swap case: JuLOTmu FqiAoF kWE MImwn fu xjWR UsUt qITfWV", "max_tokens": 48,
           "cache": "dual", "unmask": "apd", "stream": stream, "disconnect": False}
    extra = {"cache": "dual", "unmask": "apd"}
    if kind == "chat":
        args = dict(model="tiny", messages=[{"role": "user", "content": req["prompt"]}], max_tokens=48, extra_body=extra)
        if stream:
            chunks = list(client.chat.completions.create(stream=True, **args))
            text = "".join(c.choices[0].delta.content or "" for c in chunks)
            assert chunks[-1].choices[0].finish_reason in ("stop", "length")
        else:
            out = client.chat.completions.create(**args)
            text = out.choices[0].message.content
            assert out.usage.completion_tokens > 0 and out.model_extra["dynamic_dllm"]["nfe"] > 0
    else:
        args = dict(model="tiny", prompt=req["prompt"], max_tokens=48, extra_body=extra)
        if stream:
            text = "".join(c.choices[0].text for c in client.completions.create(stream=True, **args))
        else:
            text = client.completions.create(**args).choices[0].text
    assert text == expected_text(tiny_lm, req)


def test_stream_sends_one_chunk_per_final_block(server):
    body = {"messages": [{"role": "user", "content": "swap case: JuLOTmu FqiAoF kWE MImwn fu xjWR UsUt qITfWV"}],
            "max_tokens": 96, "stream": True, "block_length": 16}
    status, text = _raw(server, "/v1/chat/completions", body)
    events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    assert status == 200 and events[-1] == "[DONE]"
    pieces = [json.loads(e)["choices"][0]["delta"].get("content") for e in events[:-1]]
    assert len([p for p in pieces if p]) >= 2  # the answer spans several 16-token blocks, each sent when final


def test_stop_strings_and_max_tokens(client, tiny_lm):
    prompt = "swap case: JuLOTmu FqiAoF kWE MImwn fu xjWR UsUt qITfWV"
    full = expected_text(tiny_lm, {"kind": "chat", "prompt": prompt, "max_tokens": 64, "cache": "none",
                                   "unmask": "low-confidence"})
    messages = [{"role": "user", "content": prompt}]
    out = client.chat.completions.create(model="tiny", messages=messages, max_tokens=64, stop=[full[5:8]])
    assert out.choices[0].message.content == full[:full.index(full[5:8])] and out.choices[0].finish_reason == "stop"
    out = client.chat.completions.create(model="tiny", messages=messages, max_tokens=5)
    assert out.choices[0].message.content == full[:5] and out.choices[0].finish_reason == "length"


@pytest.mark.parametrize("path, body, status, message", [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "cache": "nope"}, 400, "unknown cache policy 'nope'"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "unmask": "apd:tau0=2"}, 400, "tau0 must be a finite number in [0, 1]"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 0}, 400, "max_tokens must be a positive integer, got 0"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 100000}, 400, "exceeds the model's maximum length"),
    ("/v1/completions", {"prompt": "x" * 600}, 400, "exceeds the model's maximum length"),
    ("/v1/completions", {"prompt": "hi", "logprobs": 3}, 400, "unsupported field(s) logprobs"),
    ("/v1/completions", {"prompt": "hi", "n": 2}, 400, "n must be 1"),
    ("/v1/completions", {"prompt": "hi", "model": "gpt-4"}, 404, "model 'gpt-4' is not served here"),
])
def test_errors_have_openai_shape(server, path, body, status, message):
    code, text = _raw(server, path, body)
    error = json.loads(text)["error"]
    assert code == status and message in error["message"] and "\n" not in error["message"]
    assert "Traceback" not in text


def test_malformed_json_auth_size_and_routes(server):
    code, text = _raw(server, "/v1/completions", data=b"{not json")
    assert code == 400 and "malformed JSON body" in json.loads(text)["error"]["message"]
    assert _raw(server, "/v1/completions", {"prompt": "hi"}, key=None)[0] == 401
    assert _raw(server, "/v1/completions", {"prompt": "hi"}, key="wrong")[0] == 401
    import http.client
    from urllib.parse import urlparse

    url = urlparse(server)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    conn.putrequest("POST", "/v1/completions")
    for name, value in (("Content-Type", "application/json"), ("Authorization", f"Bearer {KEY}"),
                        ("Content-Length", str(2 << 20))):
        conn.putheader(name, value)
    conn.endheaders()  # the server answers from the declared length, before any body byte
    resp = conn.getresponse()
    assert resp.status == 413 and "exceeds the limit" in json.loads(resp.read())["error"]["message"]
    conn.close()
    assert _raw(server, "/v1/nothing", method="GET")[0] == 404
    code, text = _raw(server, "/health", method="GET")
    assert code == 200 and json.loads(text)["status"] == "ok"
    models = json.loads(_raw(server, "/v1/models", method="GET")[1])["data"][0]
    assert models["id"] == "tiny" and "dcu-released" in models["policies"]["cache"]


def test_bounded_load_is_exact_and_batched(server, tiny_lm):
    """32 requests from 8 clients (mixed policies, lengths, streaming, 3 early disconnects)."""
    requests = workload(32, seed=1, disconnects=3)
    results, wall = drive(server, requests, concurrency=8, api_key=KEY)
    for req, res in zip(requests, results):
        if not req["disconnect"]:
            assert res["text"] == expected_text(tiny_lm, req), req
    metrics = _raw(server, "/metrics", method="GET")[1]
    count = float(re.search(r"^dynamic_dllm_batch_size_count (\S+)", metrics, re.M).group(1))
    singles = float(re.search(r'^dynamic_dllm_batch_size_bucket\{le="1.0"\} (\S+)', metrics, re.M).group(1))
    assert singles < count, "no batch of more than one request formed"
    assert _raw(server, "/health", method="GET")[0] == 200


def test_streamed_stop_string_split_between_blocks(client, tiny_lm):
    prompt = "swap case: JuLOTmu FqiAoF kWE MImwn fu xjWR UsUt qITfWV"
    full = expected_text(tiny_lm, {"kind": "chat", "prompt": prompt, "max_tokens": 64, "cache": "none",
                                   "unmask": "low-confidence"}, block_length=16)
    stop = full[14:18]  # byte tokens: characters 14-17 straddle the 16-token block boundary
    args = dict(model="tiny", messages=[{"role": "user", "content": prompt}], max_tokens=64, stop=[stop],
                extra_body={"block_length": 16})
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(stream=True, **args))
    assert streamed == client.chat.completions.create(**args).choices[0].message.content == full[:full.index(stop)]


def test_policies_that_are_not_batch_exact_are_not_batched():
    from dynamic_dllm.serve.protocol import parse_request

    import dynamic_dllm as dd

    lm = dd.load_model("tiny")
    defaults = {"cache": "none", "unmask": "low-confidence", "block_length": 32, "max_tokens": 32}
    body = lambda unmask: {"prompt": "hi", "unmask": unmask}  # noqa: E731
    assert parse_request(body("apd"), "completion", lm, "tiny", defaults).batchable
    for unmask in ("apd-released", "random", "origin", "entropy:alg_temp=0.5"):
        assert not parse_request(body(unmask), "completion", lm, "tiny", defaults).batchable, unmask
    with pytest.raises(ValueError, match="stream=true needs blocks that are final"):
        parse_request({"prompt": "hi", "stream": True, "unmask": "low-confidence:commit_mask=true"}, "completion", lm,
                      "tiny", defaults)
