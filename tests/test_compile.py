"""The opt-in compiled path: torch.compile of the per-layer compute with fullgraph=True (a graph
break is an error), one graph per kernel for every layer and row count, and the same tokens as
eager in fp32 on the shipped tiny model and a random Dream checkpoint."""

from __future__ import annotations

import torch

import dynamic_dllm as dd

CONFIG = dict(gen_length=32, block_length=16, steps=32)
SPECS = [("dcu+window", "low-confidence"), ("dual", "threshold"), ("none", "low-confidence")]


def test_compiled_tokens_equal_eager(dream):
    import torch._dynamo

    torch._dynamo.utils.counters.clear()
    tiny = dd.load_model("tiny")
    prompts = ["swap case: JuLOTmu FqiAoF kWE MImwn fu xjWR UsUt qITfWV", "fill blanks: 4_6____0__2"]
    g = torch.Generator().manual_seed(7)
    dream_ids = torch.randint(0, 256, (2, 11), generator=g)
    for lm, prompt in ((tiny, prompts), (dream, dream_ids)):
        for cache, unmask in SPECS:
            eager = dd.generate(lm, prompt, cache=cache, unmask=unmask, **CONFIG)
            compiled = dd.generate(lm, prompt, cache=cache, unmask=unmask, compile=True, **CONFIG)
            assert torch.equal(compiled.tokens, eager.tokens), (lm.model.family, cache, unmask)
            assert compiled.stats.nfe == eager.stats.nfe
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    # three kernels, a few variants each (key mask or none, given K/V, two models), never one per layer
    assert 0 < graphs <= 24, graphs
