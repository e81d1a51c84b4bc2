"""The lm-eval adapter, driven through lm-eval's own Python API on local task files (no hub)."""

from __future__ import annotations

import json
import math

import pytest
import torch

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval not installed (pip install 'dynamic-dllm[eval]')")

from dynamic_dllm.evaluation.lm_eval_adapter import DynamicDllmLM, mc_loglikelihood  # noqa: E402

DOCS = [
    {"question": "2+2", "answer": "4", "choices": ["4", "five", "x"], "label": 0},
    {"question": "capital of France", "answer": "Paris", "choices": ["Paris", "Rome", "abc"], "label": 0},
    {"question": "abc", "answer": "d", "choices": [" d", "zz", "q"], "label": 1},
]

GEN_YAML = """task: ddllm_local_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "Q: {{{{question}}}}\\nA:"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n", "Q:"]
  max_gen_toks: 12
metric_list:
  - metric: exact_match
"""

MC_YAML = """task: ddllm_local_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Q: {{{{question}}}}\\nA:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
"""


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("lm_eval_tasks")
    data = d / "docs.jsonl"
    data.write_text("".join(json.dumps(x) + "\n" for x in DOCS))
    (d / "gen.yaml").write_text(GEN_YAML.format(data=data))
    (d / "mc.yaml").write_text(MC_YAML.format(data=data))
    return d


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _evaluate(lm, task_dir, task):
    from lm_eval.tasks import TaskManager

    return lm_eval.simple_evaluate(model=lm, tasks=[task], log_samples=True, verbosity="ERROR", bootstrap_iters=0,
                                   task_manager=TaskManager(include_path=str(task_dir), include_defaults=False))


def test_generate_until_through_simple_evaluate_matches_the_engine(llada, llada_dir, task_dir):
    from lm_eval.tasks import TaskManager

    from dynamic_dllm.api import generate

    # by name, with string model args as on lm-eval's command line (batch_size comes from lm-eval)
    out = lm_eval.simple_evaluate(
        model="dynamic-dllm", model_args=f"pretrained={llada_dir},cache=dual,unmask=low-confidence,gen_length=32,block_length=8",
        batch_size=2, tasks=["ddllm_local_gen"], log_samples=True, verbosity="ERROR", bootstrap_iters=0,
        task_manager=TaskManager(include_path=str(task_dir), include_defaults=False))
    samples = out["samples"]["ddllm_local_gen"]
    assert len(samples) == len(DOCS)
    assert "exact_match,none" in out["results"]["ddllm_local_gen"]
    for s in samples:
        prompt = f"Q: {s['doc']['question']}\nA:"
        # max_gen_toks 12 with block_length 8 → 2 blocks of 8 (steps 16), the last 4 tokens dropped
        ref = generate(llada, prompt, cache="dual", unmask="low-confidence", chat=False, gen_length=16,
                       block_length=8, steps=16)
        text = llada.tokenizer.decode(ref.tokens[0, :12].tolist(), skip_special_tokens=True)
        text = text.split("\n")[0].split("Q:")[0]
        assert s["resps"][0][0] == text


def test_loglikelihood_through_simple_evaluate(llada_dir, task_dir):
    lm = DynamicDllmLM(pretrained=str(llada_dir), mc_num=8, mc_batch_size=4)
    out = _evaluate(lm, task_dir, "ddllm_local_mc")
    samples = out["samples"]["ddllm_local_mc"]
    assert len(samples) == len(DOCS)
    for s in samples:
        lls = [r[0][0] for r in s["resps"]]
        assert len(lls) == 3 and all(math.isfinite(x) and x < 0 for x in lls)
    assert 0.0 <= out["results"]["ddllm_local_mc"]["acc,none"] <= 1.0
    # seeded per request: a second run (other order, other instance) gives the same numbers
    again = DynamicDllmLM(pretrained=str(llada_dir), mc_num=8, mc_batch_size=4)
    reqs = [type("R", (), {"args": ("Q: abc\nA:", c)})() for c in (" d", "zz")]
    assert again.loglikelihood(reqs[::-1])[::-1] == lm.loglikelihood(reqs)


@pytest.mark.parametrize("model_name", ["llada", "dream"])
def test_mc_estimate_is_exact_for_one_token(model_name, request):
    """With a one-token continuation every Monte-Carlo copy masks exactly that token with
    p_mask = 1, so the estimate equals the exact log-probability."""
    lm = request.getfixturevalue(model_name)
    model = lm.model
    prompt = torch.tensor([5, 17, 99, 3])
    target = torch.tensor([42])
    est = mc_loglikelihood(model, prompt, target, mc_num=4, mc_batch_size=2, generator=torch.Generator().manual_seed(0))
    x = torch.cat([prompt, torch.tensor([model.mask_id])])[None]
    with torch.no_grad():
        logits = model(x)[0]
    pos = len(prompt) - model.logit_shift
    exact = float(logits[pos].float().log_softmax(-1)[42])
    assert est == pytest.approx(exact, rel=1e-5, abs=1e-5)


def test_mc_estimate_is_an_unbiased_average_over_mask_counts(llada):
    """Two-token continuation: the per-copy weighted losses average to the same value as the
    exhaustive expectation over the masking (k uniform in {1, 2}, positions uniform)."""
    model = llada.model
    prompt, target = torch.tensor([7, 8, 9]), torch.tensor([40, 41])
    seq = torch.cat([prompt, target])

    def loss(mask_positions):
        x = seq.clone()
        for p in mask_positions:
            x[3 + p] = model.mask_id
        with torch.no_grad():
            lp = model(x[None])[0].float().log_softmax(-1)
        return -sum(float(lp[3 + p, seq[3 + p]]) for p in mask_positions)

    # n=1 (p_mask 1/2): each single position equally likely; n=2 (p_mask 1): both masked
    exhaustive = -0.5 * (0.5 * (loss([0]) + loss([1])) * 2 + loss([0, 1]))
    est = mc_loglikelihood(model, prompt, target, mc_num=1024, mc_batch_size=128, generator=torch.Generator().manual_seed(1))
    assert est == pytest.approx(exhaustive, rel=0.02)


def test_bad_model_args_are_one_line_errors(llada_dir):
    with pytest.raises(ValueError, match="unknown cache policy"):
        DynamicDllmLM(pretrained=str(llada_dir), cache="nope")
    with pytest.raises(ValueError, match="unknown model args"):
        DynamicDllmLM(pretrained=str(llada_dir), bogus=1)
    with pytest.raises(ValueError, match="mc_num"):
        DynamicDllmLM(pretrained=str(llada_dir), mc_num=10, mc_batch_size=4)


@pytest.mark.parametrize("args, message", [
    (dict(stop_at_eos="maybe"), "stop_at_eos must be true or false"), (dict(seed=1.5), "seed must be an integer >= 0, got 1.5"),
    (dict(steps=0), "steps must be an integer >= 1, got 0"), (dict(steps=-4), "steps must be an integer >= 1"),
    (dict(gen_length="x"), "gen_length must be an integer >= 1"),
])
def test_model_args_are_parsed_strictly(llada_dir, args, message):
    with pytest.raises(ValueError, match=message):
        DynamicDllmLM(pretrained=str(llada_dir), **args)


@pytest.mark.parametrize("text, value", [("no", False), ("off", False), ("False", False), ("0", False), ("yes", True),
                                         ("on", True), (True, True)])
def test_boolean_model_args(llada_dir, text, value):
    assert DynamicDllmLM(pretrained=str(llada_dir), stop_at_eos=text, mc_num=4, mc_batch_size=4).stop_at_eos is value


def test_unknown_model_arg_from_the_lm_eval_cli_is_one_line(llada_dir, monkeypatch):
    monkeypatch.setattr("sys.argv", ["/venv/bin/lm_eval", "--model", "dynamic-dllm"])
    with pytest.raises(SystemExit, match="^error: dynamic-dllm model args: unknown model args \\['bogus'\\]"):
        DynamicDllmLM(pretrained=str(llada_dir), bogus=1)


def test_contexts_with_the_mask_token_are_refused(llada, llada_dir):
    lm = DynamicDllmLM(pretrained=str(llada_dir), mc_num=4, mc_batch_size=4)
    with pytest.raises(ValueError, match="contains the mask token"):
        lm._score([1, 2, llada.model.mask_id], [3, 4], ("ll", "a", "b"))


def test_model_is_registered_and_never_sets_device(llada_dir):
    from lm_eval.api.registry import get_model

    assert get_model("dynamic-dllm") is DynamicDllmLM
    lm = DynamicDllmLM(pretrained=str(llada_dir), preset="fast-dllm-parallel")
    assert (lm.cache, lm.unmask) == ("dual", "threshold:threshold=0.9")
    assert lm.rank == 0 and lm.world_size == 1 and str(lm.device) == "cpu"


DP_SCRIPT = """
import json, sys
import lm_eval
import dynamic_dllm.evaluation.lm_eval_adapter  # registers the model name 'dynamic-dllm'
from lm_eval.tasks import TaskManager
out = lm_eval.simple_evaluate(
    model="dynamic-dllm", model_args="pretrained=tiny,cache=dcu+window,unmask=low-confidence,block_length=32",
    tasks=["ddllm_tiny_suite"], apply_chat_template=True, log_samples=True, verbosity="ERROR", bootstrap_iters=0,
    task_manager=TaskManager(include_path=sys.argv[1], include_defaults=False))
if out is not None:  # rank 0 only
    samples = sorted(out["samples"]["ddllm_tiny_suite"], key=lambda s: s["doc_id"])
    with open(sys.argv[2], "w") as f:
        json.dump({"resps": [s["resps"][0][0] for s in samples],
                   "exact_match": out["results"]["ddllm_tiny_suite"]["exact_match,none"]}, f)
# Leave without the interpreter's teardown: under torchrun a rank sometimes aborts there
# ("terminate called without an active exception", SIGABRT) after a complete run (seen on CI runs of
# main; not reproduced locally, destroying the process group at exit did not stop it). The results
# are written above; this test is about them, not about the teardown.
import os
sys.stdout.flush(); sys.stderr.flush()
os._exit(0)
"""

TINY_YAML = """task: ddllm_tiny_suite
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["<|endoftext|>"]
  max_gen_toks: 64
metric_list:
  - metric: exact_match
"""


def test_data_parallel_lm_eval_run_equals_one_process_on_the_tiny_model(tmp_path):
    """torchrun with 2 gloo CPU processes: lm-eval gathers each rank's request count (a 0-d tensor)
    and the samples; the merged answers equal a one-process run, and the shipped model gets them right."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from dynamic_dllm.tasks.tiny_suite import heldout_items

    data = tmp_path / "tiny.jsonl"
    data.write_text("".join(json.dumps({"prompt": it.prompt, "answer": it.answer}) + "\n" for it in heldout_items(6)))
    (tmp_path / "tiny.yaml").write_text(TINY_YAML.format(data=data))
    script = tmp_path / "run.py"
    script.write_text(DP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    runs = {"dp": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"],
            "single": [sys.executable]}
    results = {}
    for name, launcher in runs.items():
        proc = subprocess.run([*launcher, str(script), str(tmp_path), str(tmp_path / f"{name}.json")], env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert results["dp"] == results["single"]
    assert len(results["single"]["resps"]) == 6 and results["single"]["exact_match"] >= 5 / 6


def test_block_diffusion_model_decodes_in_its_block_size(tmp_path, llada_dir):
    """block_length left out: 32 for LLaDA, the trained block size for a block-diffusion model, kept
    even when a request asks for fewer tokens than a block."""
    from dynamic_dllm.models.random_checkpoint import build_random_checkpoint

    assert DynamicDllmLM(pretrained=str(llada_dir)).block_length == 32
    folder = build_random_checkpoint("sdar", tmp_path / "sdar", n_layers=1, d_model=32, n_heads=2, block_size=8)
    lm = DynamicDllmLM(pretrained=str(folder))
    assert lm.block_length == 8 and lm._config(max_gen_toks=5, temperature=0.0).block_length == 8


def test_block_diffusion_batches_hold_one_prompt_length(tmp_path):
    """Requests of different lengths for a block-diffusion model (which refuses left padding) are
    batched by length, and each equals its single run."""
    from types import SimpleNamespace

    import dynamic_dllm as dd
    from dynamic_dllm.models.random_checkpoint import build_random_checkpoint

    folder = build_random_checkpoint("sdar", tmp_path / "sdar", n_layers=1, d_model=32, n_heads=2, block_size=4)
    lm = DynamicDllmLM(pretrained=str(folder), cache="block-kv", batch_size=4)
    contexts = ["ab", "abcdef", "xy", "hello"]
    requests = [SimpleNamespace(args=(c, {"until": [], "max_gen_toks": 8})) for c in contexts]
    got = lm.generate_until(requests, disable_tqdm=True)
    for context, text in zip(contexts, got):
        ids = torch.tensor([lm.tokenizer(context, add_special_tokens=False)["input_ids"]])
        single = dd.generate(lm.lm, ids, cache="block-kv", gen_length=8)
        assert text == lm.tokenizer.decode(single.tokens[0, :8].tolist(), skip_special_tokens=True)
