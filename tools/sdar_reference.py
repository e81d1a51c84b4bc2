"""Record SDAR's reference modeling code and sampler on a small random SDAR checkpoint.

    /path/to/ref-venv/bin/python tools/sdar_reference.py --sdar /path/to/JetAstra-SDAR \\
        [--out tests/data/sdar_reference.json] [--check]

``--sdar`` is a local copy of JetAstra/SDAR (recorded at c2041a8): the model code is
``training/model/SDAR-4B-Chat/{modeling,configuration}_sdar.py`` (what ``trust_remote_code`` loads
for the SDAR chat checkpoints), the sampler ``block_diffusion_generate`` of
``evaluation/opencompass/opencompass/models/huggingface_bd3.py`` (the paper's HF evaluation).
Neither can be vendored, so the tests pin what this script records. It needs a venv of its own
(``torch==2.13.0 transformers==4.52.4 safetensors einops numpy attrs pluggy``: the modeling file
imports transformers names removed in 4.54, this project needs ≥ 5).

The reference only runs on CUDA as written; this script gives it CPU stand-ins with the same math
for its three GPU kernels, and nothing else: flash-attn's Triton ``rms_norm_fn`` (fp32
``x·rsqrt(mean(x²)+eps)·w``, cast back), ``flash_attn_func`` (non-causal attention with GQA, via
``scaled_dot_product_attention``) and the training-only fused diffusion cross-entropy (never called).
The sampler is taken from its file by name (the file's other imports are OpenCompass's) and run as
written. Cases: the full forward's logits under the block-causal mask, and the sampler's tokens
(greedy = ``top_k=1``) for static and dynamic thresholds with 4 and 2 steps per block, on a prompt
whose last tokens share the first block with masks. ``--check`` compares a fresh run with the record.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.machinery
import json
import sys
import tempfile
import types
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dynamic_dllm.models.random_checkpoint import build_random_checkpoint  # noqa: E402
from reference_import import import_copied, logits_record, report, report_logits  # noqa: E402

MODEL_DIR = Path("training/model/SDAR-4B-Chat")
SAMPLER_FILE = Path("evaluation/opencompass/opencompass/models/huggingface_bd3.py")
SAMPLER_FUNCTIONS = ("add_gumbel_noise", "top_k_logits", "top_p_logits", "sample_with_temperature_topk_topp",
                     "get_num_transfer_tokens", "block_diffusion_generate")
CHECKPOINT = dict(seed=5, std=0.3, n_layers=3, d_model=64, n_heads=4, n_kv_heads=2, head_dim=32, d_ff=128, block_size=4)
PROMPT = [(i * 37 + 5) % 250 for i in range(10)]  # byte ids; 10 = two whole blocks + a tail of 2
GEN_LENGTH, BLOCK = 16, 4
#: (denoising steps per block, threshold): 1.0 = low_confidence_static, < 1 = low_confidence_dynamic
SAMPLER_CASES = [(4, 1.0), (2, 1.0), (4, 0.1), (4, 0.05), (2, 0.05)]
LOGITS_LENGTH = 14  # positions 0..13: three whole blocks and half a block, with masks in the last two


def install_kernel_stand_ins() -> None:
    """CPU stand-ins, same math, for the flash-attn kernels modeling_sdar.py imports."""
    def rms_norm_fn(x, weight, bias=None, eps=1e-6, **_):
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * weight.float()
        return (y if bias is None else y + bias.float()).to(x.dtype)

    def flash_attn_func(q, k, v, causal=False, softmax_scale=None, **_):  # [b, l, h, d] in and out
        assert not causal
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                             scale=softmax_scale, enable_gqa=True)
        return out.transpose(1, 2)

    def unused(*_a, **_k):
        raise RuntimeError("not used on this path")

    mods = {name: types.ModuleType(name) for name in
            ("flash_attn", "flash_attn.ops", "flash_attn.ops.triton", "flash_attn.ops.triton.layer_norm", "flash_attn.bert_padding")}
    for name, mod in mods.items():  # transformers probes importlib's find_spec("flash_attn")
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
    mods["flash_attn.ops.triton.layer_norm"].rms_norm_fn = rms_norm_fn
    mods["flash_attn"].flash_attn_func = flash_attn_func
    mods["flash_attn"].flash_attn_varlen_func = unused
    for name in ("index_first_axis", "pad_input", "unpad_input"):
        setattr(mods["flash_attn.bert_padding"], name, unused)
    sys.modules.update(mods)


LOSS_STAND_IN = '''class FusedLinearDiffusionCrossEntropyLoss:  # training only (Triton); never built at inference
    def __init__(self, *args, **kwargs):
        raise RuntimeError("training loss not available in the reference recording")
'''


def load_sampler(sdar: Path) -> dict:
    """The sampler's functions, compiled from their source in the reference file."""
    from transformers.cache_utils import DynamicCache
    import numpy as np

    tree = ast.parse((sdar / SAMPLER_FILE).read_text())
    picked = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name in SAMPLER_FUNCTIONS]
    assert {n.name for n in picked} == set(SAMPLER_FUNCTIONS), "sampler functions not found"
    namespace = {"torch": torch, "F": F, "np": np, "DynamicCache": DynamicCache}
    exec(compile(ast.Module(body=picked, type_ignores=[]), str(sdar / SAMPLER_FILE), "exec"), namespace)
    return namespace


def logits_case(model, mask_id: int) -> dict:
    ids = torch.tensor([PROMPT + [(i * 11 + 3) % 250 for i in range(LOGITS_LENGTH - len(PROMPT))]])
    ids[0, [11, 13]] = mask_id
    n = -(-LOGITS_LENGTH // BLOCK)
    mask = torch.tril(torch.ones(n, n)).repeat_interleave(BLOCK, 0).repeat_interleave(BLOCK, 1)[None, :LOGITS_LENGTH, :LOGITS_LENGTH]
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=torch.arange(LOGITS_LENGTH)[None]).logits
    return logits_record(ids[0], logits[0])


def sampler_case(model, sampler: dict, mask_id: int, steps: int, threshold: float) -> dict:
    prompt = torch.tensor([PROMPT])
    with torch.no_grad():
        x = sampler["block_diffusion_generate"](
            model, None, {"input_ids": prompt, "attention_mask": torch.ones_like(prompt)}, mask_id, gen_length=GEN_LENGTH,
            block_length=BLOCK, denoising_steps=steps, temperature=1.0, top_k=1, top_p=1.0, remasking="low_confidence",
            threshold=threshold, stopping_criteria_idx=[])
    tokens = x[0, len(PROMPT):len(PROMPT) + GEN_LENGTH].tolist()
    return {"tokens": tokens, "committed_mask": mask_id in x[0, len(PROMPT):].tolist()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sdar", type=Path, required=True, help="local copy of JetAstra/SDAR")
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "sdar_reference.json")
    ap.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    args = ap.parse_args()
    torch.set_num_threads(1)
    install_kernel_stand_ins()
    modeling = import_copied(args.sdar / MODEL_DIR, ("modeling_sdar.py", "configuration_sdar.py"), "sdar_reference_model",
                             "modeling_sdar", stand_ins={"fused_linear_diffusion_cross_entropy.py": LOSS_STAND_IN})
    sampler = load_sampler(args.sdar)
    folder = build_random_checkpoint("sdar", Path(tempfile.mkdtemp(prefix="sdar_ckpt_")) / "sdar", **CHECKPOINT)
    model = modeling.SDARForCausalLM.from_pretrained(str(folder), torch_dtype=torch.float32).eval()
    mask_id = model.config.mask_token_id
    recorded = json.loads(args.out.read_text()) if args.check else None
    results, bad = {}, 0
    results["logits"] = logits_case(model, mask_id)
    bad += report_logits("logits", results["logits"], recorded)
    for steps, threshold in SAMPLER_CASES:
        name = f"steps={steps}/threshold={threshold}"
        res = results[name] = sampler_case(model, sampler, mask_id, steps, threshold)
        bad += report(name, res, recorded, str(res))
    if recorded is None:
        payload = {"reference": "JetAstra/SDAR c2041a8: training/model/SDAR-4B-Chat/modeling_sdar.py, "
                                "evaluation/opencompass/opencompass/models/huggingface_bd3.py block_diffusion_generate",
                   "command": " ".join(["tools/sdar_reference.py"] + sys.argv[1:]), "torch": torch.__version__,
                   "transformers": importlib.import_module("transformers").__version__, "prompt": PROMPT,
                   "checkpoint": CHECKPOINT, "gen_length": GEN_LENGTH, "block_length": BLOCK, "cases": results}
        args.out.write_text(json.dumps(payload, indent=1) + "\n")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
