"""Synthetic task suite the shipped ``tiny`` model is trained and evaluated on.

Three tasks with exactly checkable answers, each a chat-style user prompt (at most ~80 bytes of
content) and a fixed-length answer (bytes = tokens with the byte-level tokenizer):

* ``caesar`` — shift every letter of a 44-character lowercase phrase by ``k`` (1..9), spaces kept:
  ``"caesar shift 3: abc xyz ..."`` → ``"def abc ..."``. A per-character transform of the prompt.
* ``cumsum`` — running sum mod 10 of 42 digits: ``"running sum mod 10: 3141..."`` → ``"3458..."``.
  Answer digit ``i`` is ``(answer[i-1] + digit[i]) % 10``: each answer token depends on the
  previous one, so committing many answer tokens in one step (parallel decoding) loses accuracy.
* ``lookup`` — substitute 42 digits through a key→value table given in the prompt:
  ``"map 0q 1w 2e ...: 3141..."`` → ``"rqrt..."`` (content-addressed lookup in the prompt).

Answers average 42.7 bytes; in generation they are followed by EOS and EOS padding up to the
generation length, as LLaDA-Instruct's SFT data is. An item belongs to the held-out split iff a hash
of its prompt falls in a fixed bucket, so training items (which are rejected when they hash there)
and held-out items can never coincide; held-out items come from a fixed seed.
"""

from __future__ import annotations

import hashlib
import random
from typing import Iterator, NamedTuple, Optional, Sequence

TASKS = ("caesar", "cumsum", "lookup")
CAESAR_LENGTH = 44
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


def cumsum_answer(digits: str) -> str:
    total, out = 0, []
    for d in digits:
        total = (total + int(d)) % 10
        out.append(str(total))
    return "".join(out)


def make_item(task: str, rng: random.Random) -> Item:
    """One random item of ``task`` drawn from ``rng``."""
    if task == "caesar":
        shift = rng.randint(1, 9)
        text = _phrase(rng, CAESAR_LENGTH)
        return Item(task, f"caesar shift {shift}: {text}", caesar_answer(text, shift))
    if task == "cumsum":
        digits = "".join(rng.choice("0123456789") for _ in range(DIGITS_LENGTH))
        return Item(task, f"running sum mod 10: {digits}", cumsum_answer(digits))
    if task == "lookup":
        values = rng.sample("abcdefghijklmnopqrstuvwxyz", 10)
        digits = "".join(rng.choice("0123456789") for _ in range(DIGITS_LENGTH))
        table = " ".join(f"{k}{v}" for k, v in enumerate(values))
        return Item(task, f"map {table}: {digits}", "".join(values[int(d)] for d in digits))
    raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")


def check_answer(item: Item) -> bool:
    """Recompute ``item.answer`` from its prompt (a parser independent of :func:`make_item`'s RNG)."""
    task, prompt, answer = item
    if task == "caesar":
        head, text = prompt.split(": ", 1)
        return answer == caesar_answer(text, int(head.rsplit(" ", 1)[1]))
    if task == "cumsum":
        return answer == cumsum_answer(prompt.rsplit(" ", 1)[1])
    if task == "lookup":
        table, digits = prompt[len("map "):].split(": ")
        mapping = {pair[0]: pair[1] for pair in table.split(" ")}
        return answer == "".join(mapping[d] for d in digits)
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
