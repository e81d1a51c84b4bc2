"""The tiny model's task suite and training recipe: item generation, held-out split, batch layout,
the masked-diffusion SFT loss, exact-match scoring, and a few training steps end to end."""

from __future__ import annotations

import json
import random

import pytest
import torch
import torch.nn.functional as F

from dynamic_dllm.api import encode_prompts
from dynamic_dllm.cli import main
from dynamic_dllm.models.checkpoint import load_checkpoint
from dynamic_dllm.models.tokenizer import build_byte_tokenizer
from dynamic_dllm.tasks import tiny_suite as ts
from dynamic_dllm.tasks.training import PromptCodec, decode_until_eos, diffusion_sft_loss, evaluate, lr_at, train_tiny


@pytest.fixture(scope="module")
def tokenizer():
    return build_byte_tokenizer()


def test_items_have_checkable_long_answers_and_short_prompts():
    items = ts.heldout_items(60) + [ts.make_item(t, random.Random(s)) for s in range(40) for t in ts.TASKS]
    assert all(ts.check_answer(it) for it in items)
    assert sum(len(it.answer.encode()) for it in items) / len(items) >= 40
    assert max(len(it.prompt.encode()) for it in items) <= 100
    assert {it.task for it in items} == set(ts.TASKS)
    assert ts.check_answer(ts.Item("fill", "fill blanks: 1__2_", "11122")) is True
    assert ts.check_answer(ts.Item("fill", "fill blanks: 1__2_", "11121")) is False
    assert ts.check_answer(ts.Item("swapcase", "swap case: aB c", "Ab C")) is True
    assert ts.check_answer(ts.Item("swapcase", "swap case: aB c", "ab C")) is False
    assert ts.check_answer(ts.Item("caesar", "caesar shift 2: ab z", "cd a")) is False


def test_known_answers():
    assert ts.caesar_answer("xyz ab", 3) == "abc de"
    assert ts.fill_answer("3__71_4___") == "3337114444"
    with pytest.raises(ValueError, match="starts with a blank"):
        ts.fill_answer("_1")
    rng = random.Random(0)
    for _ in range(50):
        item = ts.make_item("fill", rng)
        pattern = item.prompt.split(": ")[1]
        assert len(pattern) == len(item.answer) == ts.DIGITS_LENGTH and pattern[0].isdigit()
        assert "_" in pattern and item.answer.isdigit()
        item = ts.make_item("swapcase", rng)
        text = item.prompt.split(": ")[1]
        assert len(text) == ts.PHRASE_LENGTH and text.lower() != text and text.upper() != text
        item = ts.make_item("caesar", rng)
        assert 1 <= int(item.prompt.split(":")[0].split()[-1]) <= 3


def test_heldout_is_fixed_disjoint_and_prefix_stable():
    held = ts.heldout_items(30)
    assert held == ts.heldout_items(30)
    assert ts.heldout_items(12) == held[:12]
    assert all(ts.is_heldout(it.prompt) for it in held)
    assert len({it.prompt for it in held}) == 30
    stream = ts.train_items(0)
    train = [next(stream) for _ in range(3000)]
    assert not any(ts.is_heldout(it.prompt) for it in train)
    assert not {it.prompt for it in train} & {it.prompt for it in held}
    # the bucket is really used: raw random items do land in it at roughly 1/64
    raw = [ts.make_item("fill", random.Random(s)).prompt for s in range(6400)]
    assert 50 <= sum(map(ts.is_heldout, raw)) <= 150


@pytest.mark.parametrize("bad", [dict(n=-1), dict(n=2, tasks=["sorting"]), dict(n=2, tasks=[])])
def test_bad_arguments_raise(bad):
    with pytest.raises(ValueError):
        ts.heldout_items(**bad)


def test_unknown_task_raises():
    with pytest.raises(ValueError, match="unknown task"):
        ts.make_item("sorting", random.Random(0))


def test_batch_layout_matches_engine_prompts(tokenizer):
    codec = PromptCodec(tokenizer)
    items = ts.heldout_items(5)
    ids, valid, positions, region = codec.batch(items, 64)
    ref_ids, ref_mask = encode_prompts(tokenizer, [it.prompt for it in items])
    P = ref_ids.shape[1]
    assert ids.shape == (5, P + 64)
    assert torch.equal(ids[:, :P][ref_mask.bool()], ref_ids[ref_mask.bool()])
    assert torch.equal(valid[:, :P], ref_mask.bool()) and bool(valid[:, P:].all())
    assert torch.equal(region[:, P:], torch.ones(5, 64, dtype=torch.bool)) and not bool(region[:, :P].any())
    for i, it in enumerate(items):
        n = len(it.answer)
        assert bytes(ids[i, P:P + n].tolist()).decode() == it.answer
        assert bool((ids[i, P + n:] == tokenizer.eos_token_id).all())
        assert positions[i, valid[i]].tolist() == list(range(int(valid[i].sum())))
    with pytest.raises(ValueError, match="no room for EOS"):
        codec.batch(items, 42)


class _Spy(torch.nn.Module):
    """Fixed random logits; records what the loss fed it."""

    mask_id = 258

    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, ids, attention_mask=None, position_ids=None):
        self.seen = ids.clone()
        g = torch.Generator().manual_seed(123)
        return self.scale * torch.randn(*ids.shape, self.vocab, generator=g)


def test_sft_loss_masks_only_the_answer_and_weights_by_inverse_t(tokenizer):
    codec = PromptCodec(tokenizer)
    items = ts.heldout_items(8)
    batch = codec.batch(items, 96)
    ids, valid, positions, region = batch
    spy = _Spy(len(tokenizer))
    loss = diffusion_sft_loss(spy, *batch, generator=torch.Generator().manual_seed(7))
    masked = spy.seen == spy.mask_id
    assert not bool(masked[~region].any())  # prompt and its padding are never masked
    assert torch.equal(spy.seen[~masked], ids[~masked])
    # same draws as the loss: t stratified over the batch, then the Bernoulli mask
    g = torch.Generator().manual_seed(7)
    t = 1e-3 + (1 - 1e-3) * ((torch.rand(1, generator=g) + torch.arange(8) / 8) % 1.0)
    assert torch.equal(masked, region & (torch.rand(ids.shape, generator=g) < t[:, None]))
    logits = spy(spy.seen).detach()
    expected = 0.0
    for b in range(8):
        m = masked[b]
        if m.any():
            expected += F.cross_entropy(logits[b][m], ids[b][m], reduction="sum") / t[b] / 96
    assert loss.detach().item() == pytest.approx(float(expected) / 8, rel=1e-5)
    loss.backward()
    assert spy.scale.grad is not None and torch.isfinite(spy.scale.grad)


def test_decode_until_eos():
    eos = 257
    assert decode_until_eos([104, 105, eos, 7, eos], eos) == "hi"
    assert decode_until_eos([104, 105], eos) is None  # never stopped
    assert decode_until_eos([104, 258, eos], eos) is None  # a mask before EOS
    assert decode_until_eos([eos], eos) == ""


def test_lr_schedule_warms_up_then_decays_to_floor():
    lrs = [lr_at(s, 1000, 1e-3, 100) for s in range(1000)]
    assert lrs[0] == pytest.approx(1e-5) and lrs[99] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[100:], lrs[101:]))
    assert lrs[-1] == pytest.approx(1e-4, rel=1e-2)
    # a time limit reached before the planned steps still anneals to the floor
    assert lr_at(300, 1000, 1e-3, 100, time_fraction=1.0) == pytest.approx(1e-4)
    assert lr_at(300, 1000, 1e-3, 100, time_fraction=0.5) < lr_at(300, 1000, 1e-3, 100)
    assert lr_at(50, 1000, 1e-3, 100, time_fraction=0.9) == pytest.approx(lr_at(50, 1000, 1e-3, 100))  # warmup first


def test_evaluate_scores_exact_match_up_to_first_eos(llada, monkeypatch):
    """Scoring: text before the first EOS must equal the answer; a missing EOS or a wrong byte fails."""
    import dynamic_dllm.api as api

    items = ts.heldout_items(6)
    eos = llada.model.eos_id

    def fake_denoise(model, input_ids, config, cache, unmask, attention_mask=None, progress=None, on_block=None):
        B, P = input_ids.shape
        gen = torch.full((B, config.gen_length), eos, dtype=torch.long)
        for i, it in enumerate(items[:B]):
            answer = list(it.answer.encode())
            if i == 1:
                answer[5] ^= 1  # one wrong byte
            gen[i, :len(answer)] = torch.tensor(answer)
            if i == 2:
                gen[i, len(answer):] = ord("x")  # never emits EOS
            if i == 3:
                gen[i, len(answer) + 1:] = ord("x")  # junk after the first EOS is ignored
        stats = type("S", (), {"nfe": 4, "tokens_per_step": (B,) * 4})()
        return torch.cat([input_ids, gen], 1), stats

    monkeypatch.setattr(api, "denoise", fake_denoise)  # evaluate generates through dd.generate
    result = evaluate(llada, items, gen_length=64, block_length=32, batch_size=6)
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["per_task"] == {"caesar": 1.0, "fill": 0.5, "swapcase": 0.5}
    assert [f["task"] for f in result["failures"]] == ["fill", "swapcase"]


def test_evaluate_runs_the_engine(llada):
    result = evaluate(llada, ts.heldout_items(3), gen_length=16, block_length=16, batch_size=2)
    assert result["n"] == 3 and result["accuracy"] == 0.0  # random weights, and 16 tokens cannot hold an answer
    # low-confidence with steps == gen_length commits one token per row per step: 16 steps per batch
    assert result["nfe"] == 2 * 16 and result["batches"] == 2
    assert result["mean_tokens_per_step"] == pytest.approx(1.0)  # per sequence, not summed over the batch
    with pytest.raises(ValueError):
        evaluate(llada, [], gen_length=32, block_length=32)


def test_train_tiny_runs_saves_and_logs(tmp_path):
    sizes = dict(n_layers=1, d_model=32, n_heads=2, d_ff=64, max_length=512)
    result = train_tiny(tmp_path / "ck", steps=3, batch_size=4, warmup=1, eval_every=3, eval_items=3, eval_gen_length=32,
                        full_every=2, sizes=sizes, progress=False)
    assert result["steps"] == 3 and len(result["history"]) == 1
    records = [json.loads(line) for line in (tmp_path / "ck" / "train_log.jsonl").read_text().splitlines()]
    assert [r["event"] for r in records] == ["start", "eval", "done"]
    assert records[0]["n_params"] == result["n_params"] > 0
    lm = load_checkpoint(tmp_path / "ck" / "best")
    assert lm.model.n_layers == 1 and lm.model.d_model == 32
    with pytest.raises(ValueError, match="batch_size"):
        train_tiny(tmp_path / "bad", steps=3, batch_size=0, sizes=sizes, progress=False)


def test_eval_tiny_cli(llada_dir, capsys):
    rc = main(["eval-tiny", "--model", str(llada_dir), "--n", "3", "--gen-length", "16", "--block-length", "16",
               "--json", "--no-progress"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 3 and out["accuracy"] == 0.0 and out["steps"] == 16
    assert set(out["per_task"]) == set(ts.TASKS)
