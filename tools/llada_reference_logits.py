"""Record the reference LLaDA modeling code's logits on small random LLaDA-layout checkpoints.

    /path/to/ref-venv/bin/python tools/llada_reference_logits.py --modeling /path/to/Fast-dLLM/llada/model \\
        [--out tests/data/llada_reference_logits.json] [--check]

The reference is ``modeling_llada.py`` / ``configuration_llada.py`` (NVlabs/Fast-dLLM @ 24cc59e
``llada/model``, the HF LLaDA modeling file), imported from where it lies through a temporary
package (nothing is copied into this project), in a venv with ``torch==2.13.0 transformers==4.49.0
attrs pluggy safetensors numpy``. Variants: the LLaDA-8B layout (multi-head, untied ``ff_out``) and
the iLLaDA-style options (grouped-query attention, tied embeddings ``weight_tying=true``). Each
checkpoint is built by :func:`build_random_checkpoint` with the recorded arguments, so the test
rebuilds the very same files; the logits of one full forward over a fixed id sequence (prompt ids
and mask ids mixed) are written in full (fp32, as Python floats).
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
from reference_import import import_copied  # noqa: E402

VARIANTS = {
    "mha-untied": dict(seed=5, std=0.3, n_layers=2, d_model=64, n_heads=4, d_ff=128, max_length=256),
    "gqa-tied": dict(seed=6, std=0.3, n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, d_ff=128, max_length=256,
                     tied_embeddings=True),
}
MASKED = [3, 4, 9, 10, 11, 15]  # positions of the input set to the mask id


def input_ids(mask_id: int) -> list:
    ids = [(i * 41 + 5) % 250 for i in range(16)]
    return [mask_id if i in MASKED else t for i, t in enumerate(ids)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modeling", type=Path, required=True, help="folder with modeling_llada.py and configuration_llada.py")
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "llada_reference_logits.json")
    ap.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ref = import_copied(args.modeling, ("modeling_llada.py", "configuration_llada.py"), "llada_logits_reference",
                        "modeling_llada")
    work = Path(tempfile.mkdtemp(prefix="llada_logits_ckpt_"))
    results = {}
    for name, kw in VARIANTS.items():
        folder = build_random_checkpoint("llada", work / name, **kw)
        mask_id = json.loads((folder / "config.json").read_text())["mask_token_id"]
        model = ref.LLaDAModelLM.from_pretrained(str(folder), torch_dtype=torch.float32).eval()
        ids = input_ids(mask_id)
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0]
        results[name] = {"input_ids": ids, "logits": logits.tolist()}
        print(f"{name}: logits {tuple(logits.shape)}", flush=True)
    if args.check:
        recorded = json.loads(args.out.read_text())["variants"]
        worst = max(float((torch.tensor(results[n]["logits"]) - torch.tensor(recorded[n]["logits"])).abs().max())
                    for n in results)
        print(f"max |Δ| vs record: {worst:.2e}")
        sys.exit(0 if worst <= 1e-5 else 1)
    payload = {"reference": "NVlabs/Fast-dLLM 24cc59e llada/model/modeling_llada.py",
               "command": " ".join(["tools/llada_reference_logits.py"] + sys.argv[1:]), "torch": torch.__version__,
               "transformers": importlib.import_module("transformers").__version__, "variants_args": VARIANTS,
               "variants": results}
    args.out.write_text(json.dumps(payload) + "\n")


if __name__ == "__main__":
    main()
