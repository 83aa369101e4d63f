"""`strings`: string transformations. ``reverse: c a t d =`` → ``d t a c``; ``sort: lamp cap mug =`` → ``cap lamp mug``.

A problem is an operation and a short sequence of items — letters (``a``..``j`` by default) or short words — written
space-separated so that every item is one token of the built-in tokenizer (`` c``, `` lamp``). Operations:

* ``reverse``: the items in reverse order;
* ``sort``: the items in alphabetical order;
* ``rotate``: the first item moved to the end;
* ``swap``: the first and the last item exchanged.

Seeded, procedurally generated train/test splits with no (operation, sequence) pair in both. The reward is exact
match of the response with the answer (``rewards.builtin.exact_match``); ``edit_similarity`` (same module) gives
partial credit, 1 − (item-level edit distance) / (longer length), for RL with a denser signal.
"""

from __future__ import annotations

import random

from rewardloop.envs.base import Example

STRING_OPS = {
    "reverse": lambda items: items[::-1],
    "sort": sorted,
    "rotate": lambda items: items[1:] + items[:1],
    "swap": lambda items: items[-1:] + items[1:-1] + items[:1] if len(items) > 1 else list(items),
}
# Words that are one token each (with their leading space) in the built-in tokenizer.
WORDS = (
    "bat", "cap", "day", "jar", "key", "lamp", "lid", "mug", "rim", "zip", "tray", "cord", "bass", "grip", "bulb",
    "crown", "dial", "frame", "hood", "lens",
)  # fmt: skip
LETTERS = "abcdefghij"


def _problem(op: str, items: tuple[str, ...]) -> Example:
    answer = " ".join(STRING_OPS[op](list(items)))
    # SFT completion with a leading space: each item then has the same token as in the prompt (" d", not "d")
    return Example(prompt=f"{op}: {' '.join(items)} =", answer=answer, columns={"completion": " " + answer})


def make_strings_splits(
    seed: int = 0,
    n_train: int = 4000,
    n_test: int = 200,
    ops: tuple[str, ...] = ("reverse",),
    length: tuple[int, int] = (3, 6),
    items: str = "letters",
    alphabet: str = LETTERS,
) -> tuple[list[Example], list[Example]]:
    """Disjoint train/test problems: operation from ``ops``, ``length[0]``..``length[1]`` items drawn (with repeats)
    from ``alphabet``'s letters (``items="letters"``) or from ``WORDS`` (``items="words"``)."""
    unknown = [op for op in ops if op not in STRING_OPS]
    if unknown or not ops:
        raise ValueError(f"task.string_ops: unknown operations {unknown or ops}; allowed: {list(STRING_OPS)}")
    lo, hi = length
    if not 1 <= lo <= hi:
        raise ValueError(f"task.string_length must satisfy 1 <= min <= max, got {length}")
    if items not in ("letters", "words"):
        raise ValueError(f"task.string_items must be 'letters' or 'words', got {items!r}")
    pool = list(WORDS) if items == "words" else list(dict.fromkeys(alphabet))
    if items == "letters" and not all(c.isalpha() and c.islower() and c.isascii() for c in pool):
        raise ValueError(f"task.alphabet must be lowercase ASCII letters, got {alphabet!r}")
    space = len(ops) * sum(len(pool) ** k for k in range(lo, hi + 1))
    if n_train + n_test > space:
        raise ValueError(f"asked for {n_train + n_test} problems but only {space} exist for these settings")
    rng = random.Random(seed)
    seen: set[tuple[str, tuple[str, ...]]] = set()
    problems: list[Example] = []
    while len(problems) < n_train + n_test:
        key = (rng.choice(ops), tuple(rng.choice(pool) for _ in range(rng.randint(lo, hi))))
        if key not in seen:
            seen.add(key)
            problems.append(_problem(*key))
    return problems[n_test:], problems[:n_test]
