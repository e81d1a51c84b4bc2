"""Synthetic task suite the shipped ``tiny`` model is trained and evaluated on.

Three tasks with exactly checkable answers, each a chat-style user prompt (at most ~70 bytes of
content) and a fixed-length answer (bytes = tokens with the byte-level tokenizer):

* ``caesar`` — shift every letter of a 44-character lowercase phrase by ``k`` (1..3), spaces kept:
  ``"caesar shift 2: abc xyz ..."`` → ``"cde zab ..."``. A per-character transform of the prompt.
* ``fill`` — copy 42 digits, replacing each blank ``_`` by the digit before it:
  ``"fill blanks: 3__71_4___"`` → ``"3337114444"``. A blank's answer token equals the previous
  *answer* token, so runs of blanks are chains of dependencies: committed one at a time they are
  copies of a neighbour, committed together the model must find the run's digit in the prompt.
* ``swapcase`` — copy a 44-character mixed-case phrase with the case of every letter swapped.

Why these: each answer token is a local function of one or two visible tokens with a strong
marginal signal (copy, copy-and-shift), which a ~1 M-parameter model learns on CPU in about an
hour. Tasks whose output is independent of each input taken alone (digit-wise sums mod 10, a
random key→value table in the prompt) stayed at chance for 700 steps (~20 min) and were dropped.

Answers average 43.3 bytes; in generation they are followed by EOS and EOS padding up to the
generation length, as LLaDA-Instruct's SFT data is. An item belongs to the held-out split iff a hash
of its prompt falls in a fixed bucket, so training items (which are rejected when they hash there)
and held-out items can never coincide; held-out items come from a fixed seed.
"""

from __future__ import annotations

import hashlib
import random
from typing import Iterator, NamedTuple, Optional, Sequence

TASKS = ("caesar", "fill", "swapcase")
PHRASE_LENGTH = 44
DIGITS_LENGTH = 42
#: One prompt in HELDOUT_MODULUS (by hash) is held out; training never uses those prompts.
HELDOUT_MODULUS = 64
HELDOUT_SEED = 20240905


class Item(NamedTuple):
    task: str
    prompt: str
    answer: str


def is_heldout(prompt: str) -> bool:
    """Whether ``prompt`` belongs to the held-out split (a fixed 1/64 hash bucket)."""
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % HELDOUT_MODULUS == 0


def _phrase(rng: random.Random, length: int) -> str:
    """Lowercase words (2..7 letters) separated by single spaces, exactly ``length`` characters,
    neither starting nor ending with a space."""
    out = []
    while True:
        word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 7)))
        out.append(word)
        text = " ".join(out)
        if len(text) >= length:
            text = text[:length]
            if text.endswith(" "):
                text = text[:-1] + rng.choice("abcdefghijklmnopqrstuvwxyz")
            return text


def caesar_answer(text: str, shift: int) -> str:
    return "".join(chr((ord(c) - 97 + shift) % 26 + 97) if "a" <= c <= "z" else c for c in text)


def fill_answer(pattern: str) -> str:
    """Each ``_`` replaced by the digit before it (the pattern starts with a digit)."""
    out = []
    for ch in pattern:
        if ch == "_":
            if not out:
                raise ValueError(f"fill pattern {pattern!r} starts with a blank")
            out.append(out[-1])
        else:
            out.append(ch)
    return "".join(out)


def _fill_pattern(rng: random.Random, length: int) -> str:
    """Digits and blanks: a digit, then runs of 0..5 blanks each followed by a digit, cut to ``length``."""
    out = [rng.choice("0123456789")]
    while len(out) < length:
        out.extend("_" * rng.randint(0, 5))
        out.append(rng.choice("0123456789"))
    return "".join(out[:length])


def make_item(task: str, rng: random.Random) -> Item:
    """One random item of ``task`` drawn from ``rng``."""
    if task == "caesar":
        shift = rng.randint(1, 3)
        text = _phrase(rng, PHRASE_LENGTH)
        return Item(task, f"caesar shift {shift}: {text}", caesar_answer(text, shift))
    if task == "fill":
        pattern = _fill_pattern(rng, DIGITS_LENGTH)
        return Item(task, f"fill blanks: {pattern}", fill_answer(pattern))
    if task == "swapcase":
        text = "".join(c.upper() if rng.random() < 0.5 else c for c in _phrase(rng, PHRASE_LENGTH))
        return Item(task, f"swap case: {text}", text.swapcase())
    raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")


def check_answer(item: Item) -> bool:
    """Recompute ``item.answer`` from its prompt (a parser independent of :func:`make_item`'s RNG)."""
    task, prompt, answer = item
    if task == "caesar":
        head, text = prompt.split(": ", 1)
        return answer == caesar_answer(text, int(head.rsplit(" ", 1)[1]))
    if task == "fill":
        return answer == fill_answer(prompt.split(": ", 1)[1])
    if task == "swapcase":
        return answer == prompt.split(": ", 1)[1].swapcase()
    raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")


def _check_tasks(tasks: Optional[Sequence[str]]) -> tuple[str, ...]:
    tasks = TASKS if tasks is None else tuple(tasks)
    if not tasks or any(t not in TASKS for t in tasks):
        raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {tasks!r}")
    return tasks


def train_items(seed: int, tasks: Optional[Sequence[str]] = None) -> Iterator[Item]:
    """Endless stream of training items (tasks round-robin), never a held-out prompt."""
    tasks = _check_tasks(tasks)
    rng = random.Random(seed)
    i = 0
    while True:
        item = make_item(tasks[i % len(tasks)], rng)
        if not is_heldout(item.prompt):
            i += 1
            yield item


def heldout_items(n: int, tasks: Optional[Sequence[str]] = None, seed: int = HELDOUT_SEED) -> list[Item]:
    """The first ``n`` held-out items (tasks round-robin) from the fixed held-out seed: the same
    list on every call, and ``heldout_items(m)`` is a prefix of ``heldout_items(n)`` for ``m < n``."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    tasks = _check_tasks(tasks)
    rngs = {t: random.Random(f"{seed}:{t}") for t in tasks}
    seen, out = set(), []
    while len(out) < n:
        task = tasks[len(out) % len(tasks)]
        item = make_item(task, rngs[task])
        if is_heldout(item.prompt) and item.prompt not in seen:
            seen.add(item.prompt)
            out.append(item)
    return out
