"""Plugin registry (in-process and entry-point plugins) and the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import attrs
import pytest
import torch

import dynamic_dllm as dd
from dynamic_dllm.cli import main

BASELINE_POLICIES = {"none", "low-confidence", "random", "entropy", "margin", "maskgit-plus", "origin"}


@attrs.define
class EveryOtherRow(dd.CachePolicy):
    """Recompute the even positions only (a throw-away policy for the test)."""

    def layer_rows(self, state, layer, context):
        return dd.RowSet.indexed(torch.arange(0, state.length, 2).expand(state.batch_size, -1))


class ThrowawayPlugin:
    @dd.hookimpl
    def register_cache_policies(self, register):
        register("every-other-row", EveryOtherRow)


def test_in_process_plugin_is_swapped_in_by_name_and_removed(llada):
    pm = dd.plugin_manager()
    pm.register(ThrowawayPlugin(), name="throwaway")
    try:
        entry = dd.get_registry().cache_policies()["every-other-row"]
        assert entry.plugin == "throwaway" and entry.summary.startswith("Recompute the even positions")
        out = dd.generate(llada, torch.tensor([[72, 105]]), cache="every-other-row", gen_length=16, block_length=8, steps=16)
        n_layers, L = llada.model.n_layers, 18
        full_steps_rows = n_layers * L  # the first step is full (empty cache)
        assert sum(out.stats.recomputed_rows) == full_steps_rows + 15 * n_layers * (L // 2)
    finally:
        pm.unregister(name="throwaway")
    assert "every-other-row" not in dd.get_registry().cache_policies()
    with pytest.raises(ValueError, match="unknown cache policy 'every-other-row'; known cache policies: .*none"):
        dd.get_registry().make_cache_policies("every-other-row")


def test_entry_point_plugin_is_discovered_without_import(llada):
    """The example package (examples/dynamic-dllm-example-plugin, installed by the set-up command)."""
    entry = dd.get_registry().unmask_policies().get("left-to-right")
    assert entry is not None and entry.plugin == "example", "install ./examples/dynamic-dllm-example-plugin"
    out = dd.generate(llada, torch.tensor([[72, 105]]), unmask="left-to-right", gen_length=16, block_length=8, steps=16)
    assert out.stats.nfe == 16 and not bool((out.tokens == llada.model.mask_id).any())


def _policies_in_subprocess(env_value):
    env = {**os.environ}
    if env_value is None:
        env.pop("DYNAMIC_DLLM_PLUGINS", None)
    else:
        env["DYNAMIC_DLLM_PLUGINS"] = env_value
    out = subprocess.run([sys.executable, "-m", "dynamic_dllm", "policies", "--json"], env=env, capture_output=True,
                         text=True, check=True)
    return {row["name"]: row for row in json.loads(out.stdout)}


def test_environment_variable_restricts_entry_point_plugins():
    assert "left-to-right" in _policies_in_subprocess(None)
    assert "left-to-right" in _policies_in_subprocess("example")
    restricted = _policies_in_subprocess("")
    assert "left-to-right" not in restricted and BASELINE_POLICIES <= set(restricted)


def test_cli_policies_json_lists_the_baselines(capsys):
    assert main(["policies", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {r["name"]: r for r in rows}
    assert BASELINE_POLICIES <= set(by_name)
    assert by_name["none"]["kind"] == "cache" and by_name["entropy"]["kind"] == "unmask"
    assert all(r["summary"] and r["plugin"] for r in rows)


def test_cli_generate_json(capsys, llada_dir):
    assert main(["generate", "2+2=", "--model", str(llada_dir), "--gen-length", "16", "--block-length", "8",
                 "--steps", "16", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"text", "tokens", "stats"} and len(out["tokens"]) == 16
    assert out["stats"]["nfe"] == 16 and out["stats"]["recompute_fraction"] == 1.0
    assert {"tokens_per_second", "tokens_per_step"} <= set(out["stats"])


@pytest.mark.parametrize("argv, message", [
    (["generate", "x", "--gen-length", "30"], "error: gen_length=30 is not a multiple of block_length=32"),
    (["generate", "x", "--cache", "nope"], "error: unknown cache policy 'nope'; known cache policies:"),
    (["generate", "x", "--unmask", "entropy:eps=0"], "error: unmask policy 'entropy': eps must be a finite number in (0, 1), got 0"),
    (["generate", "x", "--model", "/no/such/folder"], "error: unknown model '/no/such/folder'"),
    (["generate", "x", "--unmask", "a+b"], "error: unmask spec 'a+b' names 2 policies"),
])
def test_cli_errors_are_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("damage, message", [
    ("truncate-weights", "cannot read .*model.safetensors: "),
    ("drop-tokenizer", ".*: no tokenizer — none of tokenizer.json"),
    ("bad-config", "cannot read .*config.json: "),
])
def test_damaged_checkpoint_is_a_one_line_cli_error(capsys, llada_dir, tmp_path, damage, message):
    import re
    import shutil

    folder = tmp_path / "ckpt"
    shutil.copytree(llada_dir, folder)
    if damage == "truncate-weights":
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[:100])
    elif damage == "drop-tokenizer":
        for f in folder.glob("tokenizer*"):
            f.unlink()
    else:
        (folder / "config.json").write_text("{not json")
    assert main(["generate", "x", "--model", str(folder)]) == 2
    err = capsys.readouterr().err
    assert re.match("error: " + message, err) and err.count("\n") == 1 and "Traceback" not in err


def test_unexpected_exception_is_one_line_unless_debugging(capsys, monkeypatch):
    import dynamic_dllm.cli as cli

    def broken(args):
        raise KeyError("boom")

    monkeypatch.delenv("DYNAMIC_DLLM_DEBUG", raising=False)
    argv = ["policies"]
    parser_default = cli.build_parser
    monkeypatch.setattr(cli, "build_parser", lambda: _with_func(parser_default(), broken))
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: internal error KeyError: 'boom'") and err.count("\n") == 1
    monkeypatch.setenv("DYNAMIC_DLLM_DEBUG", "1")
    with pytest.raises(KeyError):
        cli.main(argv)


def _with_func(parser, func):
    for action in parser._subparsers._group_actions:
        action.choices["policies"].set_defaults(func=func)
    return parser


# --- strict registration, presets, the v1 hook names ---------------------------------------------


class Usurper:
    @dd.hookimpl
    def register_cache_policies(self, register):
        register("none", EveryOtherRow)


class Typo:
    @dd.hookimpl
    def register_cache_policy(self, register):  # singular: not a hook
        register("typo", EveryOtherRow)


@pytest.mark.parametrize("plugin, message", [
    (Usurper(), "cache 'none' is registered twice: by plugin 'dynamic_dllm.policies.builtin' and by plugin 'intruder'"),
    (Typo(), "plugin 'intruder' implements 'register_cache_policy', which is not a dynamic-dllm hook"),
])
def test_registration_is_strict(plugin, message):
    pm = dd.plugin_manager()
    pm.register(plugin, name="intruder")
    try:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            dd.get_registry().make_cache_policies("none")
    finally:
        pm.unregister(name="intruder")
    assert type(dd.get_registry().make_cache_policies("none")[0]).__name__ == "NoCache"


def test_preset_is_an_alias_with_mapped_parameters():
    from dynamic_dllm.policies.dcu import DynamicCacheUpdating, UpdateWindow

    dcu, win = dd.get_registry().make_cache_policies("dynamic-dllm-cache:budget=3,window=5,score=value")
    assert isinstance(dcu, DynamicCacheUpdating) and (dcu.budget, dcu.score) == (3, "value")
    assert isinstance(win, UpdateWindow) and win.size == 5
    with pytest.raises(ValueError, match="cache policy 'dynamic-dllm-cache' has no parameter 'size'; its parameters: budget"):
        dd.get_registry().make_cache_policies("dynamic-dllm-cache:size=5")
    with pytest.raises(ValueError, match="cache preset 'dynamic-dllm-cache' .*budget must be an integer >= 0"):
        dd.get_registry().make_cache_policies("dynamic-dllm-cache:budget=-1")


def test_a_policy_written_for_the_v1_hooks_is_a_clear_error(llada):
    class OldStyle(dd.CachePolicy):
        def cache_rows(self, state, layer, context):
            return None

    class NotAPolicy:
        pass

    with pytest.raises(ValueError, match=r"cache policy OldStyle implements the pluggy step hooks of engine v1 \(cache_rows → layer_rows\)"):
        dd.generate(llada, torch.tensor([[72, 105]]), cache=[OldStyle()], gen_length=8, block_length=8, steps=8)
    with pytest.raises(ValueError, match="NotAPolicy is not an unmask policy: it lacks start, commit"):
        dd.generate(llada, torch.tensor([[72, 105]]), unmask=NotAPolicy(), gen_length=8, block_length=8, steps=8)
