"""dynamic-dllm bench: records, summary, batching, the CLI, plots and the recompute observer."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dynamic_dllm.cli import main
from dynamic_dllm.core.registry import get_registry
from dynamic_dllm.evaluation.bench import (
    OPT_IN, PRESETS, Row, available_presets, resolve_row, run_task, summarize, task_config,
)
from dynamic_dllm.evaluation.tasks import TinySuite

#: Fields that describe the outputs (identical across batch sizes and processes) vs timing.
OUTPUT_FIELDS = ("task", "preset", "cache", "unmask", "index", "id", "target", "answer", "correct", "output",
                 "output_sha256", "generated_tokens")
SMALL = dict(gen_length=32, block_length=16, steps=32)


def _outputs(records):
    return [{k: r.get(k) for k in OUTPUT_FIELDS} for r in records]


def test_presets_resolve_lazily_through_the_registry():
    assert set(PRESETS) == {"baseline", "dllm-cache", "dkv-cache", "fast-dllm", "fast-dllm-parallel", "dynamic-dllm",
                            "dynamic-dllm-parallel", "dynamic-dllm-released", "dynamic-dllm-released-parallel"}
    known_cache, known_unmask = get_registry().cache_policies(), get_registry().unmask_policies()
    for name, (cache, unmask) in PRESETS.items():
        registered = all(part.split(":")[0] in known_cache for part in cache.split("+")) and unmask.split(":")[0] in known_unmask
        assert (name in available_presets(opt_in=True)) == registered
        assert (name in available_presets()) == (registered and name not in OPT_IN)
    assert resolve_row("fast-dllm-parallel") == Row("fast-dllm-parallel", "dual", "threshold:threshold=0.9")
    assert resolve_row("none/random") == Row("none/random", "none", "random")
    with pytest.raises(ValueError, match="unknown preset 'nope'; known presets: baseline"):
        resolve_row("nope")
    with pytest.raises(ValueError, match="unknown cache policy 'nocache'; known cache policies"):
        resolve_row("nocache/low-confidence")
    with pytest.raises(ValueError, match="CACHE/UNMASK"):
        resolve_row("/low-confidence")


def _rows():
    names = [n for n in PRESETS if n in available_presets()]
    assert "baseline" in names
    return [resolve_row(n) for n in names] + [resolve_row("none/apd")]


def test_batched_records_equal_batch_one(dream):
    """Left-padded batches give the same generations as one example at a time (T = 0). The random
    Dream fixture is used because it answers differently per prompt (the LLaDA one does not)."""
    lm = dream
    task, rows = TinySuite(), _rows()
    examples = task.load(5)
    config = task_config(task, **SMALL)
    one, _ = run_task(lm, task, examples, rows, config, batch_size=1, warmup=False)
    three, _ = run_task(lm, task, examples, rows, config, batch_size=3, warmup=False)
    assert len(one) == len(rows) * 5
    assert _outputs(one) == _outputs(three)
    assert {r["batch_size"] for r in three} == {3, 2} and {r["batch_size"] for r in one} == {1}
    assert len({r["output_sha256"] for r in one if r["preset"] == "baseline"}) == 5


def test_repeats_time_every_round_and_check_reproducibility(llada):
    task, rows = TinySuite(), _rows()[:2]
    records, timings = run_task(llada, task, task.load(2), rows, task_config(task, **SMALL), repeats=2, warmup=True)
    assert len(records) == 4 and all(r["reproducible"] for r in records)
    for row in rows:
        assert len(timings[row.name]) == 2
        assert all(tokens >= 0 and seconds > 0 for tokens, seconds in timings[row.name])


def test_summary_accuracy_speedup_and_agreement():
    def rec(preset, index, answer, correct):
        return {"task": "t", "preset": preset, "index": index, "answer": answer, "correct": correct, "batch_nfe": 10,
                "batch_tokens_per_step": 1.0, "batch_recompute_fraction": 0.5, "batch_wall_time": 1.0 + index,
                "batch_policy_time": 0.1, "reproducible": True}

    rows = [Row("baseline", "none", "low-confidence"), Row("fast", "dual", "low-confidence")]
    records = [rec("baseline", 0, "1", True), rec("baseline", 1, "2", False), rec("baseline", 2, None, False),
               rec("baseline", 3, "4", True), rec("fast", 0, "1", True), rec("fast", 1, "3", True),
               rec("fast", 2, None, False), rec("fast", 3, "5", False)]
    # two rounds; two ranks per round: throughput = all tokens / slowest rank
    timings = {"baseline": [[(100, 2.0), (100, 4.0)], [(100, 2.0), (100, 5.0)]],
               "fast": [[(100, 1.0), (100, 1.0)], [(100, 1.0), (100, 2.0)]]}
    s = {x["preset"]: x for x in summarize(records, timings, rows, "t", "baseline")}
    assert s["baseline"]["accuracy"] == 0.5 and s["fast"]["accuracy"] == 0.5
    assert s["baseline"]["agreement"] == 1.0 and s["fast"]["agreement"] == 0.5  # items 0 and 2 (both None) agree
    assert s["baseline"]["tps_rounds"] == [50.0, 40.0] and s["baseline"]["tokens_per_second"] == 45.0
    assert s["fast"]["tokens_per_second"] == 150.0 and s["fast"]["speedup"] == pytest.approx(150 / 45)
    assert (s["fast"]["tps_min"], s["fast"]["tps_max"]) == (100.0, 200.0)
    assert s["fast"]["policy_time_fraction"] == pytest.approx(0.4 / 10.0)


def test_rows_per_step_sum_to_the_per_layer_counts(llada):
    from dynamic_dllm.api import generate
    from dynamic_dllm.evaluation.observe import recompute_fractions

    for spec in ("none", "dcu+window", "dual"):
        prompts = ["hello there", "a much longer prompt here"]
        out = generate(llada, prompts, cache=spec, **SMALL)
        steps = out.stats.rows_per_step
        assert len(steps) == out.stats.nfe
        per_layer = tuple(sum(step[layer] for step in steps) for layer in range(llada.model.n_layers))
        assert per_layer == out.stats.recomputed_rows
        frac = recompute_fractions(out.stats)
        assert frac.shape == (llada.model.n_layers, out.stats.nfe) and float(frac.max()) <= 1.0
        assert float(frac[:, 0].min()) == 1.0  # the first step fills the cache
        if spec == "dual":
            assert float(frac[:, 1].max()) < 1.0


def test_pareto_front():
    from dynamic_dllm.evaluation.plots import pareto_front

    pts = [(10, 80, "a"), (20, 70, "b"), (15, 60, "c"), (30, 70, "d"), (5, 90, "e")]
    assert [p[2] for p in pareto_front(pts)] == ["e", "a", "d"]


def test_bench_cli_end_to_end(llada_dir, tmp_path, capsys):
    rows = available_presets()  # no --presets: every registered preset but the opt-in ones
    assert set(rows) == set(PRESETS) - set(OPT_IN)
    out, plots = tmp_path / "out", tmp_path / "plots"
    code = main(["bench", "--model", str(llada_dir), "--tasks", "tiny-suite", "--limit", "3", "--gen-length", "32",
                 "--block-length", "16", "--out", str(out), "--no-progress",
                 "--repeats", "2", "--batch-size", "2"] + (["--plot", str(plots)] if _has_matplotlib() else []))
    assert code == 0
    table = capsys.readouterr().out
    assert "baseline" in table and "tiny-suite" in table and "1.00x" in table
    summary = json.loads((out / "summary.json").read_text())
    records = json.loads((out / "records.json").read_text())
    assert len(records) == 3 * len(rows) and [s["preset"] for s in summary["summary"]] == rows
    assert summary["meta"]["configs"]["tiny-suite"]["gen_length"] == 32
    with open(out / "records.csv") as f:
        assert [r["output_sha256"] for r in csv.DictReader(f)] == [r["output_sha256"] for r in records]
    with open(out / "summary.csv") as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    base = summary["summary"][0]
    assert base["speedup"] == 1.0 and base["agreement"] == 1.0 and len(base["tps_rounds"]) == 2
    if _has_matplotlib():
        assert (plots / "frontier.png").stat().st_size > 1000
        if "dynamic-dllm" in rows:
            assert (plots / "recompute_heatmap.png").stat().st_size > 1000


def test_bench_cli_errors(capsys, tmp_path):
    assert main(["bench", "--presets", "nope"]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err
    assert main(["bench", "--tasks", "humaneval"]) == 2
    assert "--allow-code-execution" in capsys.readouterr().err
    assert main(["bench", "--tasks", "gsm8k", "--data-dir", str(tmp_path)]) == 2
    assert "not found in" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["bench", "--limit", "0"])
    assert info.value.code == 2 and "--limit: must be a positive integer" in capsys.readouterr().err


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def test_torchrun_two_processes_merge_to_the_single_process_records(dream_dir, tmp_path):
    """Two gloo CPU processes shard the examples; rank 0's merged records equal a one-process run."""
    rows = ",".join(n for n in ("baseline", "fast-dllm") if n in available_presets())
    common = ["bench", "--model", str(dream_dir), "--tasks", "tiny-suite", "--limit", "5", "--gen-length", "16",
              "--block-length", "8", "--presets", rows, "--no-progress", "--no-warmup", "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "dynamic_dllm",
           *common, "--out", str(tmp_path / "dp")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert main([*common, "--out", str(tmp_path / "single")]) == 0
    dp = json.loads((tmp_path / "dp" / "records.json").read_text())
    single = json.loads((tmp_path / "single" / "records.json").read_text())
    assert len(dp) == len(single) == 5 * len(rows.split(","))
    assert _outputs(dp) == _outputs(single)
    assert len({r["output_sha256"] for r in single}) > 3  # distinct generations, so a mis-merge would show
    meta = json.loads((tmp_path / "dp" / "summary.json").read_text())["meta"]
    assert meta["world_size"] == 2
    assert not math.isnan(json.loads((tmp_path / "dp" / "summary.json").read_text())["summary"][0]["tokens_per_second"])


def test_too_long_prompts_fail_before_any_decoding(llada):
    from dynamic_dllm.evaluation.bench import run_bench

    with pytest.raises(ValueError, match="task tiny-suite needs a context of .* tokens .*; this model allows 512"):
        run_bench(llada, [TinySuite()], [resolve_row("baseline")], limit=2, gen_length=512, block_length=32)


def test_frontier_labels_of_coinciding_points_stack():
    from dynamic_dllm.evaluation.plots import label_offsets

    pts = [(10.0, 100.0, "baseline"), (10.2, 100.0, "dkv-cache"), (10.1, 100.0, "dynamic-dllm"), (40.0, 60.0, "fast")]
    offsets = label_offsets(pts)
    assert len(set(offsets[:3])) == 3 and offsets[3] == 4  # three stacked labels, the distant one untouched


def test_block_diffusion_model_runs_in_its_block_size(tmp_path):
    """Without --block-length a block-diffusion model runs the tasks in its trained blocks (not the
    task's Table-4 block length, which it would refuse)."""
    import dynamic_dllm as dd
    from dynamic_dllm.evaluation.bench import Row, run_bench
    from dynamic_dllm.evaluation.tasks import TinySuite
    from dynamic_dllm.models.random_checkpoint import build_random_checkpoint

    lm = dd.load_model(str(build_random_checkpoint("sdar", tmp_path / "sdar", n_layers=1, d_model=32, n_heads=2, block_size=8)))
    out = run_bench(lm, [TinySuite()], [Row("baseline", "none", "low-confidence"), Row("kv", "block-kv", "sdar")],
                    limit=2, gen_length=16, warmup=False)
    assert out["configs"]["tiny-suite"]["block_length"] == 8
    assert {r["preset"] for r in out["records"]} == {"baseline", "kv"}
