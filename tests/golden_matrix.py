"""The golden record: tokens, NFE and tokens per step of every cache policy × a set of unmask
policies, on the shipped ``tiny`` model and a random Dream checkpoint (fp32, temperature 0, a
left-padded batch of 2, two blocks).

Recorded once before a refactor of the engine and compared after it (``tests/test_golden.py``);
a refactor that changes how policies run must leave every entry unchanged. Re-record only for a
deliberate behaviour change, and say so in the commit::

    python tests/golden_matrix.py --write      # writes tests/data/golden_tokens.json
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

GOLDEN = Path(__file__).resolve().parent / "data" / "golden_tokens.json"

CACHES = [
    "none", "prefix", "dual", "dkv-cache", "dllm-cache", "dllm-cache:prompt_interval=5,response_interval=3",
    "sparse-dllm", "sparse-dllm:keep_ratio=1", "dcu", "dcu:score=value", "dcu:allocation=uniform", "window",
    "dcu+window", "dcu:budget=4+window:size=4", "dynamic-dllm-cache", "dynamic-dllm-cache:score=value,window=0",
]
UNMASKS = ["low-confidence", "random", "threshold", "factor", "apd", "apd:mode=global", "eb-sampler", "maskgit-plus", "origin"]
#: two blocks of 16; low-confidence at one token per step, the parallel rules finish early
CONFIG = dict(gen_length=32, block_length=16, steps=32)
TINY_PROMPTS = ["swap case: JuLOTmu FqiAoF kWE MImwn fu xjWR UsUt qITfWV", "fill blanks: 4_6____0__2"]


def models():
    """(name, LoadedModel, input_ids, attention_mask) for the two golden models."""
    import dynamic_dllm as dd
    from dynamic_dllm.api import encode_prompts
    from dynamic_dllm.models.checkpoint import load_checkpoint
    from dynamic_dllm.models.random_checkpoint import build_random_checkpoint

    tiny = dd.load_model("tiny")
    ids, mask = encode_prompts(tiny.tokenizer, TINY_PROMPTS)
    out = [("tiny", tiny, ids, mask)]
    folder = build_random_checkpoint("dream", Path(tempfile.mkdtemp()) / "dream", seed=2, std=0.5, n_kv_heads=2,
                                     n_layers=2, d_model=64, n_heads=4, d_ff=128, max_length=512)
    dream = load_checkpoint(folder)
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, 256, (2, 11), generator=g)
    mask = torch.ones(2, 11, dtype=torch.bool)
    ids[1, :4], mask[1, :4] = dream.model.pad_id, False
    out.append(("dream", dream, ids, mask))
    return out


def run_matrix():
    """``{"model|cache|unmask": {"tokens", "nfe", "tokens_per_step"}}`` for the whole matrix."""
    import dynamic_dllm as dd

    torch.set_num_threads(1)
    record = {}
    for name, lm, ids, mask in models():
        for cache in CACHES:
            for unmask in UNMASKS:
                out = dd.generate(lm, ids, cache=cache, unmask=unmask, attention_mask=mask, **CONFIG)
                record[f"{name}|{cache}|{unmask}"] = {
                    "tokens": out.tokens.tolist(), "nfe": out.stats.nfe, "tokens_per_step": list(out.stats.tokens_per_step)}
    return record


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/golden_matrix.py --write")
    GOLDEN.write_text(json.dumps(run_matrix(), separators=(",", ":"), sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
