"""Record Dream's ``diffusion_generate`` outputs on a small random Dream checkpoint.

    /path/to/ref-venv/bin/python tools/dream_reference.py --modeling /path/to/Fast-dLLM/dream/model \\
        [--out tests/data/dream_reference.json] [--check]

Dream's sampler (``generation_utils.py`` of the Dream checkpoints; NVlabs/Fast-dLLM @ 24cc59e ships it
as ``dream/model/generation_utils.py`` with ``modeling_dream.py``) cannot be vendored, so the tests pin
tokens recorded by this script. It needs a venv of its own (``torch==2.13.0 transformers==4.49.0
attrs pluggy safetensors numpy``) and the folder holding those files (``--modeling``), imported from
where it lies through a temporary package; nothing is copied into this project.

The point is the sampler's *effective* defaults: called without ``generation_config``,
``diffusion_generate`` builds ``DreamGenerationConfig.from_model_config(model.config)``, so
generation settings the caller does not pass come from ``config.json`` and, where it has none,
from transformers' ``PretrainedConfig`` generation defaults (``top_k=50``, ``top_p=1.0``,
``temperature=1.0``); ``generation_config.json`` is not read for them (the checkpoint gets one
with ``top_k=7`` to show it). Each case passes ``temperature=0.0`` (as Dream's own scripts do) and either
no ``top_k`` (the inherited 50 applies), ``top_k=None`` (no filter) or ``top_k=5``. One block: the
whole generation is one diffusion of ``steps`` steps, which this project's samplers run as one
block of ``gen_length``. ``--check`` compares a fresh run with the recorded file.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dynamic_dllm.models.random_checkpoint import build_random_checkpoint  # noqa: E402
from reference_import import import_copied, report  # noqa: E402

CHECKPOINT = dict(seed=3, std=0.3, n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, d_ff=128)
PROMPT = [(i * 53 + 7) % 250 for i in range(12)]  # byte ids of the byte tokenizer (no special ids)
GEN_LENGTH, STEPS = 32, 16
ALGS = {"entropy": "entropy", "maskgit_plus": "maskgit-plus", "topk_margin": "margin"}  # Dream alg -> our policy
TOP_K = {"inherited": "not passed", "none": None, "5": 5}


def cases() -> list:
    return [(alg, top_k) for alg in ALGS for top_k in TOP_K]


def case_name(alg: str, top_k: str) -> str:
    return f"{alg}/top_k={top_k}"


def write_generation_config(folder: Path) -> None:
    """Dream's ``from_pretrained`` also loads ``generation_config.json`` (real checkpoints ship one).
    ``diffusion_generate`` without a ``generation_config`` does not read it: the ``top_k`` written
    here (7) must not show in the outputs."""
    config = json.loads((folder / "config.json").read_text())
    ids = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id", "mask_token_id") if k in config}
    (folder / "generation_config.json").write_text(json.dumps({**ids, "top_k": 7}, indent=1) + "\n")


def run_case(modeling_mod, folder: Path, alg: str, top_k: str) -> dict:
    model = modeling_mod.DreamModel.from_pretrained(str(folder), torch_dtype=torch.float32).eval()
    kwargs = dict(max_new_tokens=GEN_LENGTH, steps=STEPS, alg=alg, temperature=0.0, output_history=True,
                  return_dict_in_generate=True)
    if top_k != "inherited":
        kwargs["top_k"] = TOP_K[top_k]
    with torch.no_grad():
        out = model.diffusion_generate(torch.tensor([PROMPT]), **kwargs)
    mask_id = model.config.mask_token_id
    # a step whose argmax was [MASK] commits it and the position stays masked: replay the counts
    ts, left, committed_mask = torch.linspace(1, 1e-3, STEPS + 1), GEN_LENGTH, False
    for i, h in enumerate(out.history):
        n = int(left * (1 - ts[i + 1] / ts[i])) if i < STEPS - 1 else left
        now = int((h[0, len(PROMPT):] == mask_id).sum())
        committed_mask |= now != left - n
        left = now
    return {"tokens": out.sequences[0, len(PROMPT):].tolist(), "committed_mask": committed_mask}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modeling", type=Path, required=True, help="folder with modeling_dream.py, configuration_dream.py, generation_utils.py")
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "dream_reference.json")
    ap.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    args = ap.parse_args()
    torch.set_num_threads(1)
    modeling_mod = import_copied(args.modeling, ("modeling_dream.py", "configuration_dream.py", "generation_utils.py"),
                                 "dream_reference_model", "modeling_dream")
    folder = build_random_checkpoint("dream", Path(tempfile.mkdtemp(prefix="dream_ckpt_")) / "dream", **CHECKPOINT)
    write_generation_config(folder)
    recorded = json.loads(args.out.read_text()) if args.check else None
    results, bad = {}, 0
    for alg, top_k in cases():
        name = case_name(alg, top_k)
        res = results[name] = run_case(modeling_mod, folder, alg, top_k)
        bad += report(name, res, recorded, str(res))
    if recorded is None:
        payload = {"reference": "NVlabs/Fast-dLLM 24cc59e dream/model (Dream's generation_utils.py)",
                   "command": " ".join(["tools/dream_reference.py"] + sys.argv[1:]), "torch": torch.__version__,
                   "transformers": importlib.import_module("transformers").__version__, "prompt": PROMPT,
                   "checkpoint": CHECKPOINT, "gen_length": GEN_LENGTH, "steps": STEPS, "cases": results}
        args.out.write_text(json.dumps(payload, indent=1) + "\n")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
