"""Record LLaDA-MoE's reference modeling code and LLaDA's sampler on small random LLaDA-MoE checkpoints.

    /path/to/ref-venv/bin/python tools/llada_moe_reference.py --modeling DIR --llada DIR \\
        [--out tests/data/llada_moe_reference.json] [--check]

``--modeling`` is a folder holding ``modeling_lladamoe.py`` as the LLaDA-MoE checkpoints ship it
(recorded from InfiniTensor/InfiniLM @ 0a7e522a, whose root carries the checkpoint's file:
``git --git-dir=… show 0a7e522a:modeling_lladamoe.py``). Its ``configuration_lladamoe.py`` is not in
that repository; a ``PretrainedConfig`` that keeps every config.json field as an attribute stands in
(the modeling code only reads attributes). ``--llada`` is a copy of ML-GSAI/LLaDA (recorded at
b7e6c35): its ``generate.py`` ``generate`` is the sampler the LLaDA-MoE model card runs. Needs a venv
of its own: ``torch==2.13.0 transformers==4.52.4 safetensors numpy attrs pluggy``.

Cases: per checkpoint variant, one full forward's logits over a fixed id sequence (prompt ids and
mask ids mixed); on the all-MoE variant, ``generate``'s tokens (low_confidence, temperature 0) for two
step counts on a batch of two prompts. ``--check`` compares a fresh run with the record.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dynamic_dllm.models.random_checkpoint import build_random_checkpoint  # noqa: E402
from reference_import import import_copied, logits_record, report, report_logits  # noqa: E402

CONFIG_STAND_IN = '''from transformers import PretrainedConfig


class LLaDAConfig(PretrainedConfig):  # stand-in: keeps every config.json field as an attribute
    model_type = "llada"
'''
VARIANTS = {
    # every layer MoE (the released layout), GQA
    "moe-gqa": dict(seed=5, std=0.3, n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, n_experts=8, top_k=2, d_expert=32),
    # a dense first layer, a MoE layer with a shared expert, tied embeddings
    "dense-moe-shared-tied": dict(seed=6, std=0.3, n_layers=2, d_model=64, n_heads=4, n_experts=6, top_k=3, d_expert=24,
                                  d_ff=96, moe_layers=[0, 1], d_shared=40, tied_embeddings=True),
}
LOGITS_IDS = [(i * 37 + 5) % 250 for i in range(16)]
MASKED = [3, 4, 9, 10, 11, 15]
PROMPTS = [[(i * 37 + 5) % 250 for i in range(6)], [(i * 53 + 17) % 250 for i in range(6)]]
#: (steps, gen_length, block_length) for LLaDA's generate on the "moe-gqa" variant
SAMPLER_CASES = [(16, 16, 8), (8, 16, 8)]


def load_generate(llada: Path):
    spec = importlib.util.spec_from_file_location("llada_generate", llada / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modeling", type=Path, required=True, help="folder with the checkpoint's modeling_lladamoe.py")
    ap.add_argument("--llada", type=Path, required=True, help="local copy of ML-GSAI/LLaDA")
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "llada_moe_reference.json")
    ap.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    args = ap.parse_args()
    torch.set_num_threads(1)
    modeling = import_copied(args.modeling, ("modeling_lladamoe.py",), "lladamoe_reference_model", "modeling_lladamoe",
                             stand_ins={"configuration_lladamoe.py": CONFIG_STAND_IN})
    generate = load_generate(args.llada)
    recorded = json.loads(args.out.read_text()) if args.check else None
    results, bad = {}, 0
    for variant, sizes in VARIANTS.items():
        folder = build_random_checkpoint("llada-moe", Path(tempfile.mkdtemp(prefix="lladamoe_")) / variant, **sizes)
        config = modeling.LLaDAConfig.from_pretrained(str(folder))
        model = modeling.LLaDAMoEModelLM.from_pretrained(str(folder), config=config, torch_dtype=torch.float32).eval()
        mask_id = config.mask_token_id
        ids = torch.tensor([LOGITS_IDS])
        ids[0, MASKED] = mask_id
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0]
        results[f"{variant}/logits"] = logits_record(ids[0], logits)
        bad += report_logits(f"{variant}/logits", results[f"{variant}/logits"], recorded)
        if variant != "moe-gqa":
            continue
        for steps, gen_length, block_length in SAMPLER_CASES:
            name = f"{variant}/generate/steps={steps}/gen={gen_length}/block={block_length}"
            x = generate(model, torch.tensor(PROMPTS), steps=steps, gen_length=gen_length, block_length=block_length,
                         temperature=0.0, remasking="low_confidence", mask_id=mask_id)
            res = results[name] = {"tokens": x[:, len(PROMPTS[0]):].tolist()}
            bad += report(name, res, recorded, str(res["tokens"]))
    if recorded is None:
        payload = {"reference": "modeling_lladamoe.py (InfiniTensor/InfiniLM 0a7e522a, the checkpoint's file) with a"
                                " PretrainedConfig stand-in; ML-GSAI/LLaDA b7e6c35 generate.py generate",
                   "command": " ".join(["tools/llada_moe_reference.py"] + sys.argv[1:]), "torch": torch.__version__,
                   "transformers": importlib.import_module("transformers").__version__, "variants": VARIANTS,
                   "prompts": PROMPTS, "cases": results}
        args.out.write_text(json.dumps(payload, indent=1) + "\n")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
