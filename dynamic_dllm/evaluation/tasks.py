"""Benchmark tasks read from local files, plus the tiny model's synthetic suite.

A task turns records into :class:`Example` s (the user-turn prompt and the gold answer), extracts
an answer from a generation and scores it. The bench wraps each prompt in the model's chat
template when the tokenizer has one (:func:`dynamic_dllm.api.encode_prompts`).

Settings (paper Table 4, LLaDA-style semi-autoregressive decoding): steps 256 / block 32 / gen 256
for every task but HumanEval (steps 512 / block 32 / gen 512).

Few-shot choices:

* ``gsm8k`` — 4-shot, the first 4 items of ``gsm8k_train.jsonl.gz`` in lm-eval's ``gsm8k`` format
  (``Question: …\\nAnswer: <solution> #### N``); answer = lm-eval's *flexible-extract* (the last
  number in the generation), compared after dropping ``,``, ``$`` and a trailing ``.``.
* ``mmlu`` — 5-shot, the 5 dev items of the question's subject (``first_n``, as lm-eval).
* ``arc_challenge`` — 0-shot. ``gpqa`` — 5-shot from ``gpqa_cot_fewshot.jsonl.gz`` (answer-only,
  lm-eval ``gpqa_*_n_shot`` layout), the four options of each question shuffled by a fixed seed
  per record (independent of item order, ``--limit`` and sharding). ``humaneval`` — 0-shot.
* ``tiny-suite`` — held-out items of :mod:`dynamic_dllm.tasks.tiny_suite`; exact match of the text
  before the first EOS.
"""

from __future__ import annotations

import abc
import hashlib
import os
import random
import re
import subprocess
import sys
import tempfile
from typing import Optional, Sequence

import attrs

from .data import read_jsonl


@attrs.frozen
class TaskSettings:
    """Decoding defaults of a task (paper Table 4)."""

    gen_length: int
    block_length: int
    steps: int
    stop_at_eos: bool = False


@attrs.frozen
class Example:
    """One evaluation item: ``prompt`` is the user-turn content, ``target`` the gold answer as the
    task's :meth:`Task.extract` would return it."""

    id: str
    prompt: str
    target: str
    meta: dict = attrs.field(factory=dict, eq=False, repr=False)


PAPER_SETTINGS = TaskSettings(gen_length=256, block_length=32, steps=256)
PAPER_CODE_SETTINGS = TaskSettings(gen_length=512, block_length=32, steps=512)


class Task(abc.ABC):
    """Base class. ``sensitive`` tasks (GPQA) never have their prompts or generated texts written
    to records or logs, only hashes."""

    name: str = ""
    settings: TaskSettings = PAPER_SETTINGS
    num_fewshot: int = 0
    sensitive: bool = False
    #: Generated text is cut at the first of these before extraction (lm-eval ``until``).
    stop_strings: tuple = ()

    def __init__(self, data_dir=None):
        self.data_dir = data_dir

    @abc.abstractmethod
    def load(self, limit: Optional[int] = None) -> list[Example]:
        """The first ``limit`` examples (all when None), in the data file's order."""

    @abc.abstractmethod
    def extract(self, text: str, tokens: Sequence[int], eos_id: int, example: Example) -> Optional[str]:
        """The answer in a generation of ``example`` (``text`` decoded without special tokens,
        ``tokens`` the generated ids); None when there is none."""

    def score(self, answer: Optional[str], example: Example) -> bool:
        return answer is not None and answer == example.target

    def cut(self, text: str) -> str:
        for stop in self.stop_strings:
            i = text.find(stop)
            if i >= 0:
                text = text[:i]
        return text


def _check_limit(limit) -> None:
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0):
        raise ValueError(f"limit must be a positive integer, got {limit!r}")


# --- multiple choice -------------------------------------------------------------------------

_LETTER_PATTERNS = (
    r"answer is:?\s*\(?([{L}])\)?(?![A-Za-z])",
    r"answer:?\s*\(?([{L}])\)?(?![A-Za-z])",
    r"^\s*\(?([{L}])\)?(?:[.):]|\s*$)",
    r"\(([{L}])\)",
    r"(?<![A-Za-z])([{L}])(?![A-Za-z'])",
)


def extract_choice(text: str, labels: Sequence[str]) -> Optional[str]:
    """The option letter a generation picks: an explicit "answer is X" / "Answer: X" first, then
    a letter opening the text, then "(X)", then the first standalone label letter."""
    letters = "".join(re.escape(label) for label in labels)
    for pattern in _LETTER_PATTERNS:
        flags = re.IGNORECASE if pattern.startswith("answer") else 0
        m = re.search(pattern.replace("{L}", letters), text, flags | re.MULTILINE)
        if m:
            return m.group(1).upper()
    return None


def _options(labels: Sequence[str], texts: Sequence[str], style: str = "{label}. {text}") -> str:
    return "\n".join(style.format(label=label, text=text) for label, text in zip(labels, texts))


class MMLU(Task):
    name = "mmlu"
    num_fewshot = 5
    LETTERS = ("A", "B", "C", "D")

    def _fmt(self, record: dict, with_answer: bool) -> str:
        text = f"{record['question'].strip()}\n{_options(self.LETTERS, record['choices'])}\nAnswer:"
        return text + (f" {self.LETTERS[record['answer']]}\n\n" if with_answer else "")

    def load(self, limit=None):
        _check_limit(limit)
        dev: dict[str, list] = {}
        for r in read_jsonl(self.data_dir, "mmlu_dev.jsonl"):
            dev.setdefault(r["subject"], []).append(r)
        out = []
        for i, r in enumerate(read_jsonl(self.data_dir, "mmlu_test.jsonl.gz")):
            if limit is not None and len(out) >= limit:
                break
            shots = dev.get(r["subject"], [])[: self.num_fewshot]
            if len(shots) < self.num_fewshot:
                raise ValueError(f"mmlu_dev.jsonl has {len(shots)} items for subject {r['subject']!r}; 5-shot needs 5")
            subject = r["subject"].replace("_", " ")
            prompt = (f"The following are multiple choice questions (with answers) about {subject}.\n\n"
                      + "".join(self._fmt(s, True) for s in shots) + self._fmt(r, False))
            out.append(Example(id=f"mmlu/{i}", prompt=prompt, target=self.LETTERS[r["answer"]],
                               meta={"subject": r["subject"]}))
        return out

    def extract(self, text, tokens, eos_id, example):
        return extract_choice(text, self.LETTERS)


class ARCChallenge(Task):
    name = "arc_challenge"

    def load(self, limit=None):
        _check_limit(limit)
        out = []
        for r in read_jsonl(self.data_dir, "arc_challenge_test.jsonl")[:limit]:
            labels = [c["label"] for c in r["choices"]]
            prompt = (f"Question: {r['question'].strip()}\n{_options(labels, [c['text'] for c in r['choices']])}\n"
                      "Answer with the letter of the correct option.\nAnswer:")
            out.append(Example(id=r["id"], prompt=prompt, target=r["answerKey"], meta={"labels": labels}))
        return out

    def extract(self, text, tokens, eos_id, example):
        return extract_choice(text, example.meta["labels"])


def _gpqa_clean(text: str) -> str:
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


class GPQA(Task):
    """5-shot GPQA (``main`` by default, or ``diamond``). Never log its items."""

    name = "gpqa"
    num_fewshot = 5
    sensitive = True
    LETTERS = ("A", "B", "C", "D")
    SHUFFLE_SEED = 1234

    def __init__(self, data_dir=None, subset: str = "main"):
        super().__init__(data_dir)
        if subset not in ("main", "diamond"):
            raise ValueError(f"gpqa subset must be 'main' or 'diamond', got {subset!r}")
        self.subset = subset

    @staticmethod
    def _block(question: str, options: Sequence[str], answer: Optional[str]) -> str:
        text = (f"What is the correct answer to this question: {question}\nChoices:\n"
                + _options(GPQA.LETTERS, options, "({label}) {text}") + "\nAnswer:")
        return text + (f" ({answer})\n\n" if answer else "")

    def shuffled(self, record: dict) -> tuple[list, str]:
        """The four options in this record's fixed shuffled order and the correct letter."""
        options = [_gpqa_clean(record["correct_answer"])] + [_gpqa_clean(a) for a in record["incorrect_answers"]]
        order = list(range(4))
        random.Random(f"{self.SHUFFLE_SEED}:{record['record_id']}").shuffle(order)
        return [options[j] for j in order], self.LETTERS[order.index(0)]

    def load(self, limit=None):
        _check_limit(limit)
        shots = read_jsonl(self.data_dir, "gpqa_cot_fewshot.jsonl.gz")[: self.num_fewshot]
        if len(shots) < self.num_fewshot:
            raise ValueError(f"gpqa_cot_fewshot.jsonl.gz has {len(shots)} examples; 5-shot needs 5")
        header = "".join(self._block(_gpqa_clean(s["question"]), [_gpqa_clean(s["choices"][k]) for k in self.LETTERS],
                                     s["correct_answer"]) for s in shots)
        out = []
        for r in read_jsonl(self.data_dir, f"gpqa_{self.subset}.jsonl.gz")[:limit]:
            options, target = self.shuffled(r)
            out.append(Example(id=r["record_id"], prompt=header + self._block(_gpqa_clean(r["question"]), options, None),
                               target=target))
        return out

    def extract(self, text, tokens, eos_id, example):
        return extract_choice(text, self.LETTERS)


# --- GSM8K -----------------------------------------------------------------------------------

_NUMBER = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")


def normalize_number(text: str) -> str:
    return re.sub(r"\.$", "", text.replace(",", "").replace("$", "").strip())


def flexible_extract(text: str) -> Optional[str]:
    """lm-eval's gsm8k *flexible-extract*: the last number-like match, normalised."""
    matches = _NUMBER.findall(text)
    if not matches:
        return None
    a, b = matches[-1]
    return normalize_number(a or b)


class GSM8K(Task):
    name = "gsm8k"
    num_fewshot = 4
    stop_strings = ("Question:",)

    def load(self, limit=None):
        _check_limit(limit)
        shots = read_jsonl(self.data_dir, "gsm8k_train.jsonl.gz")[: self.num_fewshot]
        header = "".join(f"Question: {s['question']}\nAnswer: {s['answer']}\n\n" for s in shots)
        out = []
        for i, r in enumerate(read_jsonl(self.data_dir, "gsm8k_test.jsonl")[:limit]):
            target = normalize_number(r["answer"].rsplit("####", 1)[1])
            out.append(Example(id=f"gsm8k/{i}", prompt=f"{header}Question: {r['question']}\nAnswer:", target=target))
        return out

    def extract(self, text, tokens, eos_id, example):
        return flexible_extract(text)


# --- HumanEval -------------------------------------------------------------------------------

_FENCE = re.compile(r"```[ \t]*(?:python|py|Python)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_code(text: str) -> str:
    """The code of a generation: the first fenced block if any (an unclosed one runs to the end),
    else the whole text."""
    m = _FENCE.search(text)
    return m.group(1) if m else text


def build_program(prompt: str, entry_point: str, code: str) -> str:
    """A runnable module from a HumanEval prompt and generated code: when the code defines
    ``entry_point`` itself, the prompt's preamble (imports, helper functions) followed by the code;
    otherwise the code is taken as the body that completes the prompt."""
    if re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", code, re.MULTILINE):
        m = re.search(rf"^def\s+{re.escape(entry_point)}\s*\(", prompt, re.MULTILINE)
        preamble = prompt[: m.start()] if m else ""
        return preamble + code
    return prompt + code


def _limit_resources(memory_bytes: int, cpu_seconds: int):
    def apply():  # runs in the child before exec
        import resource

        os.setsid()
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


def run_program(source: str, timeout: float = 10.0, memory_mb: int = 1024) -> tuple[bool, str]:
    """Run ``source`` with a fresh isolated Python (``-I``) in a subprocess in an empty temporary
    folder, with a wall-clock timeout and address-space / CPU / file-size limits. Returns
    ``(passed, reason)``; passed iff it exits with status 0 in time. POSIX only."""
    if os.name != "posix":
        raise RuntimeError("running generated code needs a POSIX system (resource limits)")
    with tempfile.TemporaryDirectory(prefix="dynamic-dllm-exec-") as tmp:
        path = os.path.join(tmp, "program.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(source)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONHASHSEED": "0", "HOME": tmp}
        try:
            proc = subprocess.run([sys.executable, "-I", path], cwd=tmp, env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                                  preexec_fn=_limit_resources(memory_mb << 20, int(timeout) + 1))
        except subprocess.TimeoutExpired:
            return False, "timeout"
    if proc.returncode == 0:
        return True, "passed"
    tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()
    return False, tail[-1][:200] if tail else f"exit status {proc.returncode}"


class HumanEval(Task):
    """0-shot HumanEval scored by functional correctness: the generated program and the item's
    tests run in a subprocess (timeout, memory limit). Running model-written code must be allowed
    explicitly (``allow_code_execution=True`` / ``--allow-code-execution``)."""

    name = "humaneval"
    settings = PAPER_CODE_SETTINGS

    def __init__(self, data_dir=None, allow_code_execution: bool = False, timeout: float = 10.0, memory_mb: int = 1024):
        super().__init__(data_dir)
        if not allow_code_execution:
            raise ValueError("humaneval is scored by executing model-generated code, which is unsafe; "
                             "pass --allow-code-execution (allow_code_execution=True) to run it in a "
                             "subprocess with a timeout and memory limit")
        self.timeout, self.memory_mb = timeout, memory_mb

    def load(self, limit=None):
        _check_limit(limit)
        out = []
        for r in read_jsonl(self.data_dir, "HumanEval.jsonl")[:limit]:
            prompt = ("Complete the following Python function. Reply with the complete function in one "
                      f"```python code block.\n\n```python\n{r['prompt']}```")
            out.append(Example(id=r["task_id"], prompt=prompt, target="passed",
                               meta={"prompt": r["prompt"], "entry_point": r["entry_point"], "test": r["test"]}))
        return out

    def extract(self, text, tokens, eos_id, example):
        return extract_code(text)

    def program(self, code: str, example: Example) -> str:
        m = example.meta
        return f"{build_program(m['prompt'], m['entry_point'], code)}\n\n{m['test']}\n\ncheck({m['entry_point']})\n"

    def score(self, answer, example):
        if answer is None:
            return False
        return run_program(self.program(answer, example), self.timeout, self.memory_mb)[0]


# --- tiny suite ------------------------------------------------------------------------------


class TinySuite(Task):
    """Held-out items of the tiny model's synthetic suite (caesar, fill, swapcase, round-robin);
    exact match of the generated text before the first EOS."""

    name = "tiny-suite"
    settings = TaskSettings(gen_length=256, block_length=32, steps=256, stop_at_eos=True)
    DEFAULT_ITEMS = 240

    def load(self, limit=None):
        _check_limit(limit)
        from ..tasks.tiny_suite import heldout_items

        items = heldout_items(limit or self.DEFAULT_ITEMS)
        digest = lambda p: hashlib.sha256(p.encode()).hexdigest()[:12]  # noqa: E731
        return [Example(id=f"{it.task}/{digest(it.prompt)}", prompt=it.prompt, target=it.answer, meta={"task": it.task})
                for it in items]

    def extract(self, text, tokens, eos_id, example):
        from ..tasks.training import decode_until_eos

        return decode_until_eos(list(tokens), eos_id)


TASKS = {t.name: t for t in (TinySuite, GSM8K, MMLU, ARCChallenge, GPQA, HumanEval)}


def make_task(name: str, data_dir=None, allow_code_execution: bool = False, gpqa_subset: str = "main") -> Task:
    """A task by name; options only go to the tasks that take them."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    cls = TASKS[name]
    if cls is HumanEval:
        return cls(data_dir, allow_code_execution=allow_code_execution)
    if cls is GPQA:
        return cls(data_dir, subset=gpqa_subset)
    return cls(data_dir)


def answer_of(task: Task, example: Example, text: str, tokens: Sequence[int], eos_id: int) -> Optional[str]:
    """The extracted answer for ``example`` (after cutting at the task's stop strings)."""
    return task.extract(task.cut(text), tokens, eos_id, example)
