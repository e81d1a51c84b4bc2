"""Baseline unmask policies reproduce their reference rules, written out here independently:
LLaDA's ``generate`` (full-sequence forward, top-k over the current block) and Dream's block
sampler (shifted logits, ``int(n * (1 - s/t))`` per step)."""

from __future__ import annotations

import pytest
import torch

import dynamic_dllm as dd


def llada_reference(model, prompt, steps, gen_length, block_length):
    mask_id = model.mask_id
    x = torch.cat([prompt, torch.full((prompt.shape[0], gen_length), mask_id)], 1)
    P, spb = prompt.shape[1], steps // (gen_length // block_length)
    for b in range(gen_length // block_length):
        bs, be = P + b * block_length, P + (b + 1) * block_length
        m = (x[:, bs:be] == mask_id).sum(1)
        counts = [[int(m[j]) // spb + (1 if i < int(m[j]) % spb else 0) for i in range(spb)] for j in range(len(m))]
        for i in range(spb):
            mask_index = x == mask_id
            logits = model(x)
            x0 = logits.argmax(-1)
            p = torch.softmax(logits, -1).gather(-1, x0[..., None])[..., 0]
            p[:, be:] = -float("inf")
            x0 = torch.where(mask_index, x0, x)
            conf = torch.where(mask_index, p, torch.tensor(-float("inf")))
            for j in range(x.shape[0]):
                sel = torch.topk(conf[j], counts[j][i]).indices
                x[j, sel] = x0[j, sel]
    return x[:, P:]


@pytest.mark.parametrize("steps", [32, 16, 8])
def test_low_confidence_reproduces_llada_generate(llada, steps):
    prompt = torch.tensor([[72, 101, 108, 108, 111, 32], [87, 111, 114, 108, 100, 33]])
    out = dd.generate(llada, prompt, cache="none", unmask="low-confidence", gen_length=32, block_length=8, steps=steps)
    assert torch.equal(out.tokens, llada_reference(llada.model, prompt, steps, 32, 8))


def dream_reference(model, prompt, steps, gen_length, block_length, score, eps=1e-3):
    mask_id = model.mask_id
    x = torch.cat([prompt, torch.full((prompt.shape[0], gen_length), mask_id)], 1)
    P, spb = prompt.shape[1], steps // (gen_length // block_length)
    ts = torch.linspace(1, eps, spb + 1, dtype=torch.float64)
    for b in range(gen_length // block_length):
        bs, be = P + b * block_length, P + (b + 1) * block_length
        for i in range(spb):
            logits = model(x)
            logits = torch.cat([logits[:, :1], logits[:, :-1]], 1)[:, bs:be]  # position i from hidden i-1
            probs = torch.softmax(logits, -1)
            conf, x0 = probs.max(-1)
            if score == "margin":
                top = probs.topk(2, -1).values
                conf = top[..., 0] - top[..., 1]
            elif score == "entropy":
                conf = (probs * torch.log(probs + 1e-10)).sum(-1)
            for j in range(x.shape[0]):
                masked = x[j, bs:be] == mask_id
                n = int(masked.sum()) if i == spb - 1 else int(int(masked.sum()) * float(1 - ts[i + 1] / ts[i]))
                c = torch.where(masked, conf[j].double(), torch.tensor(-float("inf"), dtype=torch.float64))
                sel = torch.topk(c, n).indices
                x[j, bs + sel] = x0[j, sel]
    return x[:, P:]


@pytest.mark.parametrize("unmask, score", [("maskgit-plus", "prob"), ("margin", "margin"), ("entropy", "entropy")])
def test_dream_samplers_reproduce_reference(dream, unmask, score):
    prompt = torch.tensor([[72, 101, 108, 108, 111, 32, 33]])
    out = dd.generate(dream, prompt, cache="none", unmask=unmask, gen_length=32, block_length=16, steps=8)
    assert torch.equal(out.tokens, dream_reference(dream.model, prompt, 8, 32, 16, score))


def test_origin_commits_on_the_schedule_and_finishes(dream):
    out = dd.generate(dream, torch.tensor([[72, 105]]), unmask="origin", gen_length=64, block_length=64, steps=16, seed=3)
    assert out.stats.nfe == 16 and sum(out.stats.tokens_per_step) == 64
    # expected commits per step follow 1 - s/t: the last step takes what is left, early steps few
    assert out.stats.tokens_per_step[0] < 16


def test_temperature_sampling_depends_on_seed_only(llada):
    prompt = torch.tensor([[72, 105, 33]])
    a = dd.generate(llada, prompt, unmask="low-confidence", gen_length=16, block_length=8, steps=16, temperature=1.0, seed=1)
    b = dd.generate(llada, prompt, unmask="low-confidence", gen_length=16, block_length=8, steps=16, temperature=1.0, seed=1)
    c = dd.generate(llada, prompt, unmask="low-confidence", gen_length=16, block_length=8, steps=16, temperature=1.0, seed=2)
    assert torch.equal(a.tokens, b.tokens) and not torch.equal(a.tokens, c.tokens)
