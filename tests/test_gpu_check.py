"""benchmarks/gpu_check.py on the CPU with --small: the code path a GPU run takes, at tiny sizes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_small_cpu_run_prints_every_preset(capsys):
    gpu_check = _load()
    assert gpu_check.main(["--device", "cpu", "--small", "--prompt-len", "24", "--gen-length", "32",
                           "--block-length", "16", "--modes", "eager"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert set(rows) == {"baseline", "fast-dllm", "dynamic-dllm", "fast-dllm-parallel", "dynamic-dllm-parallel"}
    assert rows["baseline"][5] == "1.00x" and all(float(r[2]) > 0 for r in rows.values())


def test_bad_arguments_are_one_line_errors():
    gpu_check = _load()
    with pytest.raises(ValueError, match="CUDA is not available"):
        gpu_check.main(["--device", "cuda:7", "--small"])
    with pytest.raises(SystemExit, match="unknown preset"):
        gpu_check.main(["--device", "cpu", "--small", "--presets", "warp-speed"])


@pytest.mark.parametrize("family, presets", [
    ("llada-moe", {"baseline", "fast-dllm", "dynamic-dllm", "fast-dllm-parallel", "dynamic-dllm-parallel"}),
    ("sdar", {"baseline", "block-kv", "block-kv-parallel"}),
    ("fast-dllm-v2", {"baseline", "block-kv", "block-kv-parallel"}),
    ("llada2", {"baseline", "block-kv", "block-kv-parallel"}),
])
def test_every_family_runs_its_presets(capsys, family, presets):
    gpu_check = _load()
    assert gpu_check.main(["--device", "cpu", "--small", "--family", family, "--prompt-len", "12", "--gen-length", "16",
                           "--block-length", "8", "--modes", "eager"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert family in lines[0]
    assert {line.split()[0] for line in lines[2:]} == presets
