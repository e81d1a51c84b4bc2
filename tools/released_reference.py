"""Record the released Dynamic-dLLM code's outputs on small random LLaDA checkpoints.

    /path/to/ref-venv/bin/python tools/released_reference.py \\
        --released /path/to/DYNAMIC-DLLM --modeling /path/to/Fast-dLLM/llada/model \\
        --out tests/data/released_dynamic_dllm.json [--check]

The released code (TianyiWu233/DYNAMIC-DLLM @ 43cb93b7) cannot be vendored, so the tests pin
tokens recorded by this script. It needs a venv of its own with what the released code was written
against (``torch==2.13.0 transformers==4.49.0 attrs pluggy safetensors numpy``), a local copy of the
released repository (``--released``) and LLaDA's HF modeling code (``--modeling``: a folder with
``modeling_llada.py`` and ``configuration_llada.py``, e.g. NVlabs/Fast-dLLM's ``llada/model``; the
released hooks replace each block's forward, attention and RoPE, so only the layers' modules and
the model's outer forward of that file run). Nothing from either repository is copied: both are
imported from where they lie, in a temporary package.

For every case of :data:`CASES` (checkpoint × geometry × policy settings) it builds the checkpoint
with this project's :func:`~dynamic_dllm.models.random_checkpoint.build_random_checkpoint` (so
both sides read the very same files), runs the released ``generate`` (low-confidence, one token per
step) or ``generate_pd`` (APD) with the released cache hooks registered or not, and writes the
generated tokens and NFE. ``--check`` instead compares a fresh run of the released code with the
recorded file (it does not run this project's policies; the tests compare those with the file).
Each case loads its checkpoint afresh: the released hooks patch the model's blocks in place.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dynamic_dllm.models.random_checkpoint import build_random_checkpoint  # noqa: E402
from reference_import import import_copied, report  # noqa: E402

#: checkpoints: name -> build_random_checkpoint arguments (std 0.3: confident, rarely tied logits)
CHECKPOINTS = {
    "llada-4x64": dict(seed=1, std=0.3, n_layers=4, d_model=64, n_heads=4, d_ff=128, max_length=512),
    "llada-32x64": dict(seed=2, std=0.3, n_layers=32, d_model=64, n_heads=4, d_ff=128, max_length=512),
}
PROMPT = [(i * 37 + 11) % 250 for i in range(20)]  # byte ids of the byte tokenizer (no special ids)
GEOMETRIES = {"g64b32": (64, 32), "g128b8": (128, 8)}
DCU_SETTINGS = [(32, 32), (8, 8), (16, 4), (0, 8)]


def cases() -> list:
    """(checkpoint, geometry, kind, params) for every recorded run."""
    out = []
    for ckpt in CHECKPOINTS:
        for geo in GEOMETRIES:
            out.append((ckpt, geo, "generate", {"cache": None}))
            for w, b in DCU_SETTINGS:
                for score in ("value", "input"):
                    out.append((ckpt, geo, "generate", {"cache": {"window": w, "budget": b, "score": score}}))
            for score in ("value", "input"):  # refreshes: prompt every 3 forwards, response every 5
                out.append((ckpt, geo, "generate", {"cache": {"window": 16, "budget": 4, "score": score,
                                                              "prompt_interval": 3, "response_interval": 5}}))
            for mode in ("global", "per-token"):
                out.append((ckpt, geo, "generate_pd", {"mode": mode, "cache": None}))
                out.append((ckpt, geo, "generate_pd", {"mode": mode, "cache": {"window": 32, "budget": 32, "score": "value"}}))
    return out


def case_name(ckpt, geo, kind, params) -> str:
    c = params.get("cache")
    cache = "none" if c is None else f"w{c['window']}-b{c['budget']}-{c['score']}"
    if c and "prompt_interval" in c:
        cache += f"-p{c['prompt_interval']}-r{c['response_interval']}"
    mode = f"-{params['mode']}" if "mode" in params else ""
    return f"{ckpt}/{geo}/{kind}{mode}/{cache}"


def _import_reference(released: Path, modeling: Path):
    modeling_mod = import_copied(modeling, ("modeling_llada.py", "configuration_llada.py"), "llada_reference_model",
                                 "modeling_llada")
    sys.path.insert(0, str(released))
    cache_mod = importlib.import_module("dynamic_dllm_cache.cache")
    hooks_mod = importlib.import_module("dynamic_dllm_cache.hooks")
    gen_mod = importlib.import_module("utils.generate_function")
    return modeling_mod, cache_mod, hooks_mod, gen_mod


def _accept_replace_position(model) -> None:
    """Fast-dLLM's outer forward passes ``replace_position=None`` to every block; the released
    hooked block forward does not take it (the original LLaDA file never passes it)."""
    for block in model.model.transformer.blocks:
        hooked = block.forward

        def forward(x, attention_bias=None, layer_past=None, use_cache=False, replace_position=None, _f=hooked):
            assert replace_position is None
            return _f(x, attention_bias=attention_bias, layer_past=layer_past, use_cache=use_cache)
        block.forward = forward


def run_case(ref, folder: Path, mask_id: int, geo: str, kind: str, params: dict) -> dict:
    modeling_mod, cache_mod, hooks_mod, gen_mod = ref
    gen_length, block_length = GEOMETRIES[geo]
    model = modeling_mod.LLaDAModelLM.from_pretrained(str(folder), torch_dtype=torch.float32).eval()
    c = params.get("cache")
    type(cache_mod.DynamicDLLMCache)._instances.clear()  # the released cache is a singleton
    config = cache_mod.DynamicDLLMCacheConfig(
        prompt_interval_steps=c.get("prompt_interval", 5000) if c else 1,
        gen_interval_steps=c.get("response_interval", 5000) if c else 1, cfg_interval_steps=1,
        window_size=c["window"] if c else 0, layer_budget=c["budget"] if c else 0,
        select_from=("v" if c["score"] == "value" else "x") if c else "x")
    cache_mod.DynamicDLLMCache.new_instance(**asdict(config))
    if c:
        hooks_mod.register_cache_LLaDA(model, "model.transformer.blocks")
        _accept_replace_position(model)
    prompt = torch.tensor([PROMPT])
    with torch.no_grad():
        if kind == "generate":
            out = gen_mod.generate(prompt, None, model, steps=gen_length, gen_length=gen_length,
                                   block_length=block_length, mask_id=mask_id)
            nfe = gen_length
        else:
            x, nfe = gen_mod.generate_pd(model, prompt, steps=gen_length, gen_length=gen_length,
                                         block_length=block_length, mask_id=mask_id,
                                         pd_mode=1 if params["mode"] == "global" else 2, pd_threshold=0.9,
                                         alpha=0.01, beta=0.15, use_cache=bool(c))
            out = x[:, len(PROMPT):]
    return {"tokens": out[0].tolist(), "nfe": int(nfe)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--released", type=Path, required=True, help="local copy of TianyiWu233/DYNAMIC-DLLM")
    ap.add_argument("--modeling", type=Path, required=True, help="folder with modeling_llada.py and configuration_llada.py")
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "released_dynamic_dllm.json")
    ap.add_argument("--work", type=Path, default=None, help="where to build the checkpoints (default: a temp dir)")
    ap.add_argument("--only", default=None, help="substring: run only matching cases")
    ap.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ref = _import_reference(args.released, args.modeling)
    work = args.work or Path(tempfile.mkdtemp(prefix="released_ckpt_"))
    folders = {}
    for name, kw in CHECKPOINTS.items():
        folders[name] = work / name
        if not (folders[name] / "config.json").is_file():
            build_random_checkpoint("llada", folders[name], **kw)
    mask_id = json.loads((folders["llada-4x64"] / "config.json").read_text())["mask_token_id"]
    recorded = json.loads(args.out.read_text()) if args.check else None
    results, bad = {}, 0
    for ckpt, geo, kind, params in cases():
        name = case_name(ckpt, geo, kind, params)
        if args.only and args.only not in name:
            continue
        res = results[name] = run_case(ref, folders[ckpt], mask_id, geo, kind, params)
        bad += report(name, res, recorded, f"nfe {res['nfe']}")
    if recorded is None:
        payload = {"released_commit": "43cb93b7", "command": " ".join(["tools/released_reference.py"] + sys.argv[1:]),
                   "torch": torch.__version__, "prompt": PROMPT, "checkpoints": CHECKPOINTS,
                   "geometries": GEOMETRIES, "cases": results}
        args.out.write_text(json.dumps(payload, indent=1) + "\n")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
