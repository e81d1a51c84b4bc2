"""Bad and edge inputs: one clear ValueError (CLI: exit 2 and one ``error:`` line) naming the value
and the rule, before any compute — or a run that terminates with valid output. Never another
exception."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import dynamic_dllm as dd
from dynamic_dllm.cli import main
from dynamic_dllm.core.spec import parse_spec

SMALL = dict(gen_length=8, block_length=4, steps=8)


@pytest.fixture(scope="module")
def tiny():
    return dd.load_model("tiny")


@pytest.mark.parametrize("spec, message", [
    ("dcu:budget=4,budget=8", "parameter 'budget' given twice"),
    ("none+none", "policy 'none' appears twice"),
    ("dcu:budget=", "empty value for budget"),
    ("apd:tau0=1e-400", "tau0=1e-400 underflows"),
    ("apd:tau0=1e400", "tau0=1e400 overflows"),
])
def test_spec_parser_rejects(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_spec(spec)


@pytest.mark.parametrize("spec", ["dcu:budget=４", "dcu:budget=1_0", "maskgit-plus:top_k=abc", "maskgit-plus:top_k=0",
                                  "maskgit-plus:top_k=1.5", "entropy:top_p=nan", "entropy:top_p=0"])
def test_non_numbers_reach_the_validator_named(spec):
    kind = "cache" if spec.startswith("dcu") else "unmask"
    registry = dd.get_registry()
    with pytest.raises(ValueError) as info:
        registry.make_cache_policies(spec) if kind == "cache" else registry.make_unmask_policy(spec)
    value = spec.split("=", 1)[1]
    assert value in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("cache", [None, 5, [], ["dcu", "window"], torch.ones(2, 3)])
def test_cache_must_be_a_spec_or_policies(tiny, cache):
    with pytest.raises(ValueError, match="cache"):
        dd.generate(tiny, "hi", cache=cache, **SMALL)


def test_unmask_none_is_rejected(tiny):
    with pytest.raises(ValueError, match="unmask must be a policy, got NoneType"):
        dd.generate(tiny, "hi", unmask=None, **SMALL)


def test_positional_arguments_after_prompts_are_refused(tiny):
    ids, mask = dd.encode_prompts(tiny.tokenizer, ["hi", "there"])
    with pytest.raises(TypeError):
        dd.generate(tiny, ids, mask)  # the mask used to become the cache policy


@pytest.mark.parametrize("prompts, message", [
    (5, "prompts must be a string"), (np.array([[1, 2]]), "convert with torch.as_tensor"),
    ((p for p in ["a"]), "prompts must be a string"), ([], "non-empty strings"), (["ok", ""], "non-empty strings"),
    (torch.ones(3), "must be \\[B, P\\] of integer ids"), (torch.ones(1, 3), "must be \\[B, P\\] of integer ids"),
])
def test_prompt_types(tiny, prompts, message):
    with pytest.raises(ValueError, match=message):
        dd.generate(tiny, prompts, **SMALL)


def test_config_dict_lm_number_and_hub_id(tiny):
    with pytest.raises(ValueError, match="config must be a GenerationConfig, got dict"):
        dd.generate(tiny, "hi", config={"gen_length": 8})
    with pytest.raises(ValueError, match="model must be a folder path or a registered name, got int"):
        dd.generate(5, "hi", **SMALL)
    with pytest.raises(ValueError, match="huggingface-cli download GSAI-ML/LLaDA-8B-Instruct"):
        dd.load_model("GSAI-ML/LLaDA-8B-Instruct")


@pytest.mark.parametrize("fields, message", [
    (dict(seed=-1), "seed must be an integer in \\[0, 9223372036854775807\\], got -1"),
    (dict(seed=2 ** 64), "seed must be an integer in"),
    (dict(gen_length=8, block_length=4, steps=10 ** 9), "steps=1000000000 exceeds gen_length=8"),
])
def test_config_bounds(fields, message):
    with pytest.raises(ValueError, match=message):
        dd.GenerationConfig(**fields)


def test_steps_default_to_gen_length():
    assert dd.GenerationConfig(gen_length=32, block_length=8).steps == 32


@pytest.mark.parametrize("argv", [["generate", "hi", "--threads", "0"], ["bench", "--threads", "-2"],
                                  ["eval-tiny", "--threads", "x"]])
def test_threads_must_be_positive(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "--threads: must be a positive integer" in capsys.readouterr().err


# --- property: random specs and config values --------------------------------------------------

NAMES = ["none", "dual", "prefix", "dcu", "window", "dllm-cache", "dkv-cache", "sparse-dllm", "nope"]
UNMASKS = ["low-confidence", "threshold", "factor", "apd", "entropy", "maskgit-plus", "eb-sampler", "nada"]
KEYS = ["budget", "size", "score", "threshold", "factor", "tau0", "top_k", "eps", "ratio", "bogus"]
VALUES = ["0", "1", "-1", "2", "0.5", "1e-400", "nan", "inf", "abc", "true", "none", "４", "1_0", "", "3.0"]


@st.composite
def specs(draw, names):
    parts = []
    for name in draw(st.lists(st.sampled_from(names), min_size=1, max_size=2)):
        params = draw(st.lists(st.tuples(st.sampled_from(KEYS), st.sampled_from(VALUES)), max_size=2))
        parts.append(name + (":" + ",".join(f"{k}={v}" for k, v in params) if params else ""))
    return "+".join(parts)


@settings(max_examples=40, deadline=None)
@given(cache=specs(NAMES), unmask=specs(UNMASKS),
       gen_length=st.sampled_from([0, 4, 8, -8]), block_length=st.sampled_from([0, 4, 3]),
       steps=st.sampled_from([None, 0, 2, 4, 8, 9]), seed=st.sampled_from([0, -1, 3]))
def test_random_specs_and_configs_fail_cleanly_or_run(tiny, cache, unmask, gen_length, block_length, steps, seed):
    try:
        out = dd.generate(tiny, "hi", cache=cache, unmask=unmask, gen_length=gen_length, block_length=block_length,
                          steps=steps, seed=seed)
    except ValueError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert out.tokens.shape == (1, gen_length)
    assert not bool((out.tokens == tiny.model.mask_id).any())


# --- damaged checkpoints: the file and the field named at load -----------------------------------


def _damaged(tmp_path, base, edit):
    import shutil

    folder = tmp_path / "damaged"
    shutil.copytree(base, folder)
    edit(folder)
    return folder


def _config(change):
    import json

    def edit(folder):
        (folder / "config.json").write_text(json.dumps(change(json.loads((folder / "config.json").read_text()))))
    return edit


def _weights(change):
    from safetensors.torch import load_file, save_file

    def edit(folder):
        f = next(folder.glob("*.safetensors"))
        state = load_file(str(f))
        change(state)
        save_file(state, str(f))
    return edit


@pytest.mark.parametrize("edit, message", [
    (_config(lambda c: [c]), "config.json must hold a JSON object, got a list"),
    (_config(lambda c: {**c, "d_model": "64"}), "config.json: d_model must be a positive integer, got '64'"),
    (_config(lambda c: {**c, "n_heads": 0}), "config.json: n_heads must be a positive integer, got 0"),
    (_config(lambda c: {**c, "mask_token_id": -1}), "config.json: mask_token_id must be a token id in"),
    (lambda f: (f / "tokenizer.json").unlink(), "no tokenizer — none of tokenizer.json"),
    (_weights(lambda s: s.__setitem__("model.transformer.ln_f.weight", torch.zeros(3))),
     "weight model.transformer.ln_f.weight has shape \\(3,\\), config.json implies \\(64,\\)"),
    (_weights(lambda s: s["model.transformer.ln_f.weight"].fill_(float("nan"))),
     "weight model.transformer.ln_f.weight holds NaN"),
])
def test_damaged_checkpoint_fails_at_load(tmp_path, llada_dir, edit, message):
    with pytest.raises(ValueError, match=message) as info:
        dd.load_model(str(_damaged(tmp_path, llada_dir, edit)))
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)


# --- bench / eval-tiny / train-tiny options ------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["bench", "--gen-length", "0"], "argument --gen-length: must be a positive integer, got '0'"),
    (["bench", "--steps", "0"], "argument --steps: must be a positive integer, got '0'"),
    (["bench", "--limit", "-1"], "argument --limit: must be a positive integer"),
])
def test_bench_zero_lengths_are_refused_not_defaulted(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_bench_duplicate_tasks_and_unwritable_out_fail_before_running(tmp_path, capsys):
    assert main(["bench", "--tasks", "tiny-suite,tiny-suite", "--out", str(tmp_path / "o")]) == 2
    assert "error: --tasks names tiny-suite more than once" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["bench", "--out", str(blocker / "sub"), "--limit", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot write to {blocker / 'sub'}") and err.count("\n") == 1


def test_eval_tiny_empty_tasks_is_an_error(capsys):
    assert main(["eval-tiny", "--tasks", " , ", "--n", "1"]) == 2
    assert "error: --tasks names no task" in capsys.readouterr().err


def test_train_tiny_stops_on_a_diverged_loss(tmp_path, capsys):
    code = main(["train-tiny", "--out", str(tmp_path / "t"), "--steps", "3", "--batch-size", "2", "--lr", "1e30",
                 "--warmup", "1", "--eval-every", "100", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "error: training diverged at step" in err, err
    assert not (tmp_path / "t" / "config.json").exists()


def test_invalid_utf8_prompt_is_named(capsys):
    assert main(["generate", "ok \udcff\udcfe", "--gen-length", "8", "--block-length", "8"]) == 2
    assert "error: prompt 0 is not valid UTF-8 text (byte 0xff at character 3)" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--eval-gen-length", "20"], "eval_gen_length: gen_length=20 is not a multiple of block_length=32"),
    (["--eval-items", "0"], "eval_items must be a positive integer, got 0"),
    (["--lr", "nan"], "lr must be a finite number > 0, got nan"),
    (["--eps", "1.5"], "eps must be a finite number in (0, 1), got 1.5"),
])
def test_train_tiny_options_fail_before_training(tmp_path, capsys, extra, message):
    assert main(["train-tiny", "--out", str(tmp_path / "t"), "--steps", "2", "--no-progress", *extra]) == 2
    assert message in capsys.readouterr().err


@settings(max_examples=30, deadline=None)
@given(cache=specs(NAMES), unmask=specs(UNMASKS), gen_length=st.sampled_from(["0", "8", "-8", "x", "16"]),
       steps=st.sampled_from(["0", "4", "8", "1e3", "99"]), seed=st.sampled_from(["0", "-1", "3", "2.5"]))
def test_cli_random_options_exit_cleanly(cache, unmask, gen_length, steps, seed):
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(["generate", "hi", "--cache", cache, "--unmask", unmask, "--gen-length", gen_length,
                         "--block-length", "8", "--steps", steps, "--seed", seed])
        except SystemExit as exc:  # argparse: exit 2 with a usage line and one error line
            code = exc.code
    lines = [line for line in err.getvalue().splitlines() if line.startswith("error:") or ": error:" in line]
    assert code in (0, 2), err.getvalue()
    if code == 2:
        assert len(lines) == 1, err.getvalue()


def test_loader_dispatches_on_architectures_first(tmp_path, llada_dir, capsys):
    """The architecture decides, not model_type: LLaDA-MoE's config says model_type 'llada' but is
    another layout — an unknown architecture is refused with the supported list, the MoE one goes to
    the MoE adapter (which refuses dense weights); a config without architectures falls back to
    model_type."""
    import json

    unknown = _damaged(tmp_path / "unknown", llada_dir, _config(lambda c: {**c, "architectures": ["BailingMoeV2ForCausalLM"]}))
    with pytest.raises(ValueError, match="architecture BailingMoeV2ForCausalLM is not supported \\(model_type 'llada'\\); "
                                         "supported architectures: DreamModel \\(Dream\\), Fast_dLLM_QwenForCausalLM \\(Fast_dLLM_Qwen\\), "
                                         "LLaDA2MoeModelLM \\(llada2_moe\\), LLaDAMoEModelLM \\(llada-moe\\), "
                                         "LLaDAModelLM \\(llada\\), SDARForCausalLM \\(sdar\\)"):
        dd.load_model(str(unknown))
    moe = _damaged(tmp_path / "moe", llada_dir, _config(lambda c: {**c, "architectures": ["LLaDAMoEModelLM"]}))
    with pytest.raises(ValueError, match="weights do not match the llada-moe layout"):
        dd.load_model(str(moe))
    plain = _damaged(tmp_path / "plain", llada_dir, _config(lambda c: {k: v for k, v in c.items() if k != "architectures"}))
    assert dd.load_model(str(plain)).model.family == "llada"
    assert main(["models", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {"LLaDAModelLM", "LLaDAMoEModelLM", "DreamModel", "SDARForCausalLM"} <= {a for r in listed["adapters"] for a in r["architectures"]}
