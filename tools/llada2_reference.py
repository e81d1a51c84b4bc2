"""Record LLaDA2.0's reference modeling code and sampler on small random LLaDA2 checkpoints.

    /path/to/ref-venv/bin/python tools/llada2_reference.py --modeling DIR --modeling21 DIR \\
        [--out tests/data/llada2_reference.json] [--check]

``--modeling`` is a folder holding ``modeling_llada2_moe.py`` and ``configuration_llada2_moe.py``.
The checkpoint's own copies (inclusionAI/LLaDA2.0-mini on the hub) are out of reach here; the copy
recorded is ZHZisZZ/dllm's (ca176752, ``dllm/pipelines/llada2/models/``), the checkpoint's file with
the dllm project's edits for training (bool masks converted to additive ones — the generation below
passes the additive mask the checkpoint's ``generate`` builds, so that branch is not taken).
Needs a venv of its own: ``torch==2.13.0 transformers==4.57.0 safetensors einops numpy attrs pluggy`` (the
version dllm pins; the file imports names 4.53 lacks).

One shim, nothing else: ``generate`` builds its additive mask in bfloat16 (the checkpoints run in
bf16), which SDPA refuses next to fp32 queries; a forward pre-hook casts a floating 4D mask to the
model's dtype — its values, 0 and −inf, are exact in every float dtype.

``--modeling21`` holds LLaDA2.1's ``modeling_llada21_moe.py`` and ``configuration_llada21_moe.py``
(the same dllm commit, ``dllm/pipelines/llada21/models/``): the same architecture and forward, and a
``generate`` that also edits decoded tokens.

Cases: per variant, one full forward's logits under ``generate``'s block-lower-triangular mask
(blocks of ``block_size`` from position 0); on the first variant LLaDA2.0 ``generate``'s greedy
tokens (``temperature=0``) for two step counts and thresholds 0.95 (its default), 1.0 (static top-k)
and 0.2, and LLaDA2.1 ``generate``'s greedy tokens for mask / editing thresholds and refinement-step
limits that make it edit.
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

BLOCK = 4
VARIANTS = {
    # a dense first layer, then group-limited MoE with a shared expert; partial RoPE, QK-norm, GQA
    "dense-then-moe": dict(seed=8, std=0.3, n_layers=3, d_model=64, n_heads=4, n_kv_heads=2, head_dim=32, d_ff=96,
                           n_experts=8, top_k=2, d_expert=24, n_group=4, topk_group=2, block_size=BLOCK),
    # every layer MoE, top-3 of 12 in 3 groups keeping 1, two shared experts, tied embeddings
    "all-moe-tied": dict(seed=9, std=0.3, n_layers=2, d_model=64, n_heads=4, n_kv_heads=1, d_ff=96, n_experts=12,
                         top_k=3, d_expert=16, n_group=3, topk_group=1, d_shared=2, dense_layers=0,
                         tied_embeddings=True, block_size=BLOCK),
}
PROMPT = [(i * 37 + 5) % 250 for i in range(10)]  # two whole blocks and a tail of 2
GEN_LENGTH = 16
SAMPLER_CASES = [(4, 0.95), (2, 0.95), (4, 1.0), (4, 0.2)]  # (steps per block, threshold)
#: LLaDA2.1: (threshold, editing_threshold, max_post_steps); the first is its default. Settings whose run draws the
#: mask id as an argmax and writes it back by an edit (re-masking a decoded token) are left out: this engine never
#: draws the mask id (drew_mask records whether any draw was the mask id, committed or not)
EDITING_CASES = [(0.95, 0.9, 16), (0.3, 0.2, 16), (0.3, 0.2, 1), (0.4, 0.3, 0)]
LOGITS_LENGTH = 14


def block_mask(length: int) -> torch.Tensor:
    """``generate``'s mask: log of the block-lower-triangular ones (0 / -inf), in bfloat16 as it builds it."""
    n = -(-length // BLOCK)
    ones = torch.tril(torch.ones(n, n)).repeat_interleave(BLOCK, 0).repeat_interleave(BLOCK, 1)
    return ones[None, None, :length, :length].log().to(torch.bfloat16)


def mask_in_model_dtype(module, args, kwargs):
    """The shim: a floating additive mask cast to the model's dtype (0 / -inf stay exact)."""
    mask = kwargs.get("attention_mask")
    if mask is not None and mask.is_floating_point():
        kwargs["attention_mask"] = mask.to(torch.float32)
    return args, kwargs


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modeling", type=Path, required=True, help="folder with modeling_llada2_moe.py and configuration_llada2_moe.py")
    ap.add_argument("--modeling21", type=Path, required=True, help="folder with LLaDA2.1's modeling_llada21_moe.py and configuration")
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "llada2_reference.json")
    ap.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    args = ap.parse_args()
    torch.set_num_threads(1)
    modeling = import_copied(args.modeling, ("modeling_llada2_moe.py", "configuration_llada2_moe.py"), "llada2_reference_model",
                             "modeling_llada2_moe")
    modeling21 = import_copied(args.modeling21, ("modeling_llada21_moe.py", "configuration_llada21_moe.py"),
                               "llada21_reference_model", "modeling_llada21_moe")
    recorded = json.loads(args.out.read_text()) if args.check else None
    results, bad = {}, 0
    for variant, sizes in VARIANTS.items():
        folder = build_random_checkpoint("llada2", Path(tempfile.mkdtemp(prefix="llada2_")) / variant, **sizes)
        config = modeling.LLaDA2MoeConfig.from_pretrained(str(folder))
        model = modeling.LLaDA2MoeModelLM.from_pretrained(str(folder), config=config, torch_dtype=torch.float32).eval()
        model.model.register_forward_pre_hook(mask_in_model_dtype, with_kwargs=True)
        mask_id, eos_id = config.mask_token_id, config.eos_token_id
        ids = torch.tensor([PROMPT + [(i * 11 + 3) % 250 for i in range(LOGITS_LENGTH - len(PROMPT))]])
        ids[0, [11, 13]] = mask_id
        with torch.no_grad():
            logits = model(ids, attention_mask=block_mask(LOGITS_LENGTH), position_ids=torch.arange(LOGITS_LENGTH)[None]).logits
        name = f"{variant}/logits"
        results[name] = logits_record(ids[0], logits[0])
        bad += report_logits(name, results[name], recorded)
        if variant != "dense-then-moe":
            continue
        for steps, threshold in SAMPLER_CASES:
            name = f"{variant}/generate/steps={steps}/threshold={threshold}"
            out = model.generate(torch.tensor([PROMPT]), temperature=0.0, block_length=BLOCK, steps=steps, gen_length=GEN_LENGTH,
                                 threshold=threshold, eos_id=eos_id, mask_id=mask_id)
            tokens = out[0].tolist()
            res = results[name] = {"tokens": tokens, "stopped": eos_id in tokens, "committed_mask": mask_id in tokens}
            bad += report(name, res, recorded, str(res))
        model21 = modeling21.LLaDA2MoeModelLM.from_pretrained(
            str(folder), config=modeling21.LLaDA2MoeConfig.from_pretrained(str(folder)), torch_dtype=torch.float32).eval()
        model21.model.register_forward_pre_hook(mask_in_model_dtype, with_kwargs=True)
        drawn = []  # every token generate draws: its argmax may be the mask id, which an edit would write back
        sample = model21._sample_with_temperature_topk_topp
        model21._sample_with_temperature_topk_topp = lambda *a, **k: drawn.append(sample(*a, **k)[0]) or sample(*a, **k)
        for threshold, editing, post in EDITING_CASES:
            name = f"{variant}/generate21/threshold={threshold}/editing={editing}/post={post}"
            drawn.clear()
            out = model21.generate(torch.tensor([PROMPT]), temperature=0.0, block_length=BLOCK, gen_length=GEN_LENGTH,
                                   threshold=threshold, editing_threshold=editing, max_post_steps=post, eos_id=eos_id,
                                   mask_id=mask_id)
            tokens = out[0].tolist()
            res = results[name] = {"tokens": tokens, "stopped": eos_id in tokens, "committed_mask": mask_id in tokens,
                                   "drew_mask": any(bool((t == mask_id).any()) for t in drawn)}
            bad += report(name, res, recorded, str(res))
    if recorded is None:
        payload = {"reference": "modeling_llada2_moe.py / configuration_llada2_moe.py (LLaDA2.0) and modeling_llada21_moe.py /"
                                " configuration_llada21_moe.py (LLaDA2.1) as carried by ZHZisZZ/dllm ca176752"
                                " (dllm/pipelines/llada2{,1}/models): LLaDA2MoeModelLM.forward and .generate",
                   "command": " ".join(["tools/llada2_reference.py"] + sys.argv[1:]), "torch": torch.__version__,
                   "transformers": importlib.import_module("transformers").__version__, "variants": VARIANTS,
                   "prompt": PROMPT, "gen_length": GEN_LENGTH, "block_length": BLOCK, "cases": results}
        args.out.write_text(json.dumps(payload, indent=1) + "\n")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
