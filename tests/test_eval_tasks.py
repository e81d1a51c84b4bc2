"""Benchmark tasks on real items of the local data files (GPQA: structure and hashes only)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from dynamic_dllm.evaluation.data import ENV_DATA, read_jsonl, resolve_data_dir
from dynamic_dllm.evaluation.tasks import (
    GPQA, GSM8K, MMLU, ARCChallenge, HumanEval, TinySuite, answer_of, build_program, extract_choice,
    extract_code, flexible_extract, make_task, run_program,
)

DATA = Path(os.environ.get(ENV_DATA) or Path(__file__).resolve().parents[2] / "shared" / "data")
needs_data = pytest.mark.skipif(not (DATA / "README.md").is_file(), reason=f"benchmark data not found at {DATA}")


def _answer(task, example, text):
    return answer_of(task, example, text, [], 0)


def test_flexible_extract_is_the_last_number():
    assert flexible_extract("She has 3 apples, then 1,250 dollars. The answer is $1,250.") == "1250"
    assert flexible_extract("-7 degrees") == "-7"
    assert flexible_extract("no digits") is None
    assert flexible_extract("5 then 12.") == "12"


def test_extract_choice_prefers_explicit_answers():
    L = "ABCD"
    assert extract_choice("The answer is (C).", L) == "C"
    assert extract_choice("Answer: b", L) == "B"
    assert extract_choice("D. because ...", L) == "D"
    assert extract_choice("A cat sat. So the correct one is (B)", L) == "B"
    assert extract_choice("I think B is right", L) == "B"
    assert extract_choice("no idea", L) is None
    assert extract_choice("E", "ABCDE") == "E" and extract_choice("E", L) is None


@needs_data
def test_gsm8k_prompt_and_scoring():
    task = GSM8K(DATA)
    ex = task.load(2)
    assert [e.id for e in ex] == ["gsm8k/0", "gsm8k/1"]
    first = read_jsonl(DATA, "gsm8k_test.jsonl")[0]
    shots = read_jsonl(DATA, "gsm8k_train.jsonl.gz")[:4]
    p = ex[0].prompt
    assert p.count("Question:") == 5 and p.endswith(f"Question: {first['question']}\nAnswer:")
    assert all(s["answer"] in p for s in shots)
    assert ex[0].target == first["answer"].split("####")[-1].strip().replace(",", "")
    # a generation that runs on into a new question is cut there (lm-eval's until)
    good = f"Some work... so {ex[0].target}.\n\nQuestion: next one has 999 apples"
    assert _answer(task, ex[0], good) == ex[0].target and task.score(_answer(task, ex[0], good), ex[0])
    assert not task.score(_answer(task, ex[0], "the answer is 123456789"), ex[0])
    assert task.settings.gen_length == 256 and task.settings.steps == 256 and task.settings.block_length == 32


@needs_data
def test_mmlu_five_shot_from_the_subject_dev_items():
    task = MMLU(DATA)
    ex = task.load(3)
    test = read_jsonl(DATA, "mmlu_test.jsonl.gz")[0]
    dev = [r for r in read_jsonl(DATA, "mmlu_dev.jsonl") if r["subject"] == test["subject"]]
    p = ex[0].prompt
    assert p.startswith(f"The following are multiple choice questions (with answers) about {test['subject'].replace('_', ' ')}.")
    assert p.count("\nAnswer:") == 6 and p.endswith("\nAnswer:")
    for d in dev:
        assert d["question"].strip() in p and f"Answer: {'ABCD'[d['answer']]}" in p
    assert ex[0].target == "ABCD"[test["answer"]]
    assert task.score(_answer(task, ex[0], f" {ex[0].target}"), ex[0])
    wrong = next(x for x in "ABCD" if x != ex[0].target)
    assert not task.score(_answer(task, ex[0], f"The answer is {wrong}."), ex[0])


@needs_data
def test_arc_challenge_zero_shot_uses_each_items_labels():
    task = ARCChallenge(DATA)
    ex = task.load(None)
    assert len(ex) == 1172
    odd = next(e for e in ex if e.meta["labels"] != ["A", "B", "C", "D"])
    assert odd.prompt.count("\n") == len(odd.meta["labels"]) + 2 and "Question:" in odd.prompt
    e = ex[0]
    assert e.target == read_jsonl(DATA, "arc_challenge_test.jsonl")[0]["answerKey"]
    assert task.score(_answer(task, e, f"({e.target})"), e)
    labels = "".join(odd.meta["labels"])
    outside = next(c for c in "ABCDE" if c not in labels)
    assert _answer(task, odd, outside) is None  # a letter that is not an option is no answer


@needs_data
def test_gpqa_structure_and_fixed_shuffle_without_showing_items():
    task = GPQA(DATA)
    ex = task.load(None)
    assert len(ex) == 448 and len({e.id for e in ex}) == 448
    assert all(e.target in "ABCD" for e in ex)
    # all four letters occur as targets and none dominates (the shuffle moved the correct answer)
    counts = {c: sum(e.target == c for e in ex) for c in "ABCD"}
    assert min(counts.values()) > 448 * 0.15
    for e in ex[:20]:
        assert e.prompt.count("What is the correct answer to this question:") == 6
        assert e.prompt.count("Answer: (") == 5 and e.prompt.endswith("\nAnswer:")
        assert all(f"\n({c}) " in e.prompt for c in "ABCD")
    # the correct option sits at the target letter
    raw = {r["record_id"]: r for r in read_jsonl(DATA, "gpqa_main.jsonl.gz")}
    for e in ex[:20]:
        options, letter = task.shuffled(raw[e.id])
        assert letter == e.target and len(options) == 4
        tail = e.prompt.rsplit("Choices:\n", 1)[1]
        line = next(x for x in tail.splitlines() if x.startswith(f"({letter}) "))
        assert hashlib.sha256(line[4:].encode()).digest() == hashlib.sha256(options["ABCD".index(letter)].encode()).digest()
    # deterministic and independent of --limit
    assert [e.prompt for e in GPQA(DATA).load(5)] == [e.prompt for e in ex[:5]]
    assert len(GPQA(DATA, subset="diamond").load(None)) == 198
    assert task.sensitive and task.score(_answer(task, ex[0], f"Answer: ({ex[0].target})"), ex[0])


@needs_data
def test_humaneval_needs_the_flag_and_scores_by_running_tests():
    with pytest.raises(ValueError, match="--allow-code-execution"):
        make_task("humaneval", data_dir=DATA)
    task = make_task("humaneval", data_dir=DATA, allow_code_execution=True)
    raw = read_jsonl(DATA, "HumanEval.jsonl")[:3]
    ex = task.load(3)
    assert task.settings.gen_length == 512 and task.settings.steps == 512
    for e, r in zip(ex, raw):
        assert r["prompt"] in e.prompt and e.id == r["task_id"]
        # the canonical body completes the prompt; a full function in a fenced block works too
        assert task.score(_answer(task, e, r["canonical_solution"]), e)
        full = f"Here it is:\n```python\n{r['prompt']}{r['canonical_solution']}```\nDone."
        assert task.score(_answer(task, e, full), e)
        assert not task.score(_answer(task, e, "    return None\n"), e)


def test_run_program_limits():
    assert run_program("print('ok')")[0]
    assert run_program("raise SystemExit(3)") == (False, "exit status 3")
    assert run_program("while True:\n    pass\n", timeout=1.0) == (False, "timeout")
    ok, reason = run_program("x = bytearray(2 * 1024 ** 3)\n", memory_mb=256)
    assert not ok and "MemoryError" in reason


def test_build_program_and_extract_code():
    prompt = "import math\n\ndef helper(x):\n    return x\n\ndef f(a):\n    \"\"\"doc\"\"\"\n"
    assert build_program(prompt, "f", "    return a\n") == prompt + "    return a\n"
    assert build_program(prompt, "f", "def f(a):\n    return helper(a)\n").startswith("import math\n\ndef helper")
    assert extract_code("x\n```python\ndef f(): pass\n```\ny") == "def f(): pass\n"
    assert extract_code("```python\ndef f(): pass\n") == "def f(): pass\n"  # unclosed fence


def test_tiny_suite_uses_the_suite_api():
    from dynamic_dllm.tasks.tiny_suite import heldout_items

    task = TinySuite()
    ex = task.load(6)
    items = heldout_items(6)
    assert [e.prompt for e in ex] == [it.prompt for it in items] and [e.target for e in ex] == [it.answer for it in items]
    eos = 7
    toks = list(items[0].answer.encode()) + [eos, eos]
    assert task.score(answer_of(task, ex[0], "", toks, eos), ex[0])
    assert answer_of(task, ex[0], "", list(items[0].answer.encode()), eos) is None  # no EOS: no answer
    assert task.settings.stop_at_eos


def test_data_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="gsm8k_train.jsonl.gz not found"):
        GSM8K(tmp_path).load(1)
    monkeypatch.setenv(ENV_DATA, str(tmp_path))
    assert resolve_data_dir() == tmp_path
    (tmp_path / "gsm8k_test.jsonl").write_text("{bad\n")
    with pytest.raises(ValueError, match="not a JSON line"):
        read_jsonl(None, "gsm8k_test.jsonl")
    with pytest.raises(ValueError, match="unknown task"):
        make_task("nope")
    with pytest.raises(ValueError, match="limit"):
        TinySuite().load(0)
