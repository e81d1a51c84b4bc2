"""Record Fast-dLLM v2's reference modeling code and sampler on a small random Fast-dLLM v2 checkpoint.

    /path/to/ref-venv/bin/python tools/fast_dllm_v2_reference.py --modeling DIR \\
        [--out tests/data/fast_dllm_v2_reference.json] [--check]

``--modeling`` is a folder holding the checkpoint's ``modeling.py`` and ``configuration.py`` (what
``trust_remote_code`` loads for Efficient-Large-Model/Fast_dLLM_v2_7B). The hub is out of reach here;
the copy recorded is the one committed in Satgoy152/DualDiffusion at 189fa7a
(``FastDLLM-inferencing/Fast_dLLM_v2_7B/``), whose ``generate`` carries one addition to the
checkpoint's — an optional ``steps`` cap, left at None (no cap). It needs a venv of its own:
``torch==2.13.0 transformers==4.53.1 safetensors einops numpy attrs pluggy`` (the version the
checkpoint's config.json names).

Cases: one full forward's logits under the block-causal evaluation mask (``block_size`` = the
checkpoint's ``bd_size``), and ``generate``'s tokens (greedy: ``temperature=0``, the exact path
``use_block_cache=False``) for prompts shorter than a block, ending inside a block, and filling
whole blocks (whose next token the reference decodes autoregressively), at two thresholds.
``--check`` compares a fresh run with the record.
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
from reference_import import import_copied, logits_record, report, report_logits  # noqa: E402

CHECKPOINT = dict(seed=7, std=0.3, n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, d_ff=128, block_size=8)
BLOCK, SUB_BLOCK, NEW_TOKENS = 8, 4, 16
PROMPT_LENGTHS = (5, 13, 16)
THRESHOLDS = (1.0, 0.3)
LOGITS_LENGTH = 20


def prompt(n: int) -> list:
    return [(i * 37 + 5) % 250 for i in range(n)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modeling", type=Path, required=True, help="folder with the checkpoint's modeling.py and configuration.py")
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "fast_dllm_v2_reference.json")
    ap.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    args = ap.parse_args()
    torch.set_num_threads(1)
    modeling = import_copied(args.modeling, ("modeling.py", "configuration.py"), "fast_dllm_v2_reference_model", "modeling")
    folder = build_random_checkpoint("fast-dllm-v2", Path(tempfile.mkdtemp(prefix="fdllm2_")) / "fdllm2", **CHECKPOINT)
    config = modeling.Fast_dLLM_QwenConfig.from_pretrained(str(folder))
    model = modeling.Fast_dLLM_QwenForCausalLM.from_pretrained(str(folder), config=config, torch_dtype=torch.float32).eval()
    mask_id, stop = config.mask_token_id, config.eos_token_id
    recorded = json.loads(args.out.read_text()) if args.check else None
    results, bad = {}, 0
    ids = torch.tensor([prompt(LOGITS_LENGTH)])
    ids[0, [17, 19]] = mask_id
    with torch.no_grad():
        logits = model(input_ids=ids, block_size=BLOCK).logits[0]
    results["logits"] = logits_record(ids[0], logits)
    bad += report_logits("logits", results["logits"], recorded)
    for n in PROMPT_LENGTHS:
        for threshold in THRESHOLDS:
            name = f"prompt={n}/threshold={threshold}"
            out = model.generate(torch.tensor([prompt(n)]), max_new_tokens=NEW_TOKENS, mask_id=mask_id, threshold=threshold,
                                 small_block_size=SUB_BLOCK, block_size=BLOCK, stop_token=stop, temperature=0,
                                 use_block_cache=False)
            tokens = out[0, n:].tolist()
            res = results[name] = {"tokens": tokens, "stopped": stop in tokens, "committed_mask": mask_id in tokens}
            bad += report(name, res, recorded, str(res))
    if recorded is None:
        payload = {"reference": "Fast_dLLM_v2_7B modeling.py/configuration.py as committed in Satgoy152/DualDiffusion 189fa7a"
                                " (FastDLLM-inferencing/Fast_dLLM_v2_7B): Fast_dLLM_QwenForCausalLM.forward and .generate",
                   "command": " ".join(["tools/fast_dllm_v2_reference.py"] + sys.argv[1:]), "torch": torch.__version__,
                   "transformers": importlib.import_module("transformers").__version__, "checkpoint": CHECKPOINT,
                   "block_length": BLOCK, "sub_block": SUB_BLOCK, "max_new_tokens": NEW_TOKENS, "cases": results}
        args.out.write_text(json.dumps(payload, indent=1) + "\n")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
