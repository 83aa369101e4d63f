"""`arithmetic`: ``37+48=`` → ``85``. Seeded, procedurally generated train/test splits with no overlap.

The reward is exact match of the response (whitespace stripped) with the answer (``rewards.builtin.exact_match``):
the verifiable-reward task of the quickstart. Operators: + (sum), - (difference, may be negative), * (product).
"""

from __future__ import annotations

import random

from rewardloop.envs.base import DatasetEnv, Example
from rewardloop.rewards.builtin import exact_match

OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def _problem(a: int, op: str, b: int) -> Example:
    return Example(prompt=f"{a}{op}{b}=", answer=str(OPS[op](a, b)))


def make_arithmetic_splits(
    seed: int = 0,
    n_train: int = 4000,
    n_test: int = 200,
    digits: tuple[int, int] = (1, 2),
    ops: tuple[str, ...] = ("+",),
    demo_error: float = 0.0,
    demos_per_problem: int = 1,
) -> tuple[list[Example], list[Example]]:
    """Disjoint train/test problems with operands of ``digits[0]``..``digits[1]`` digits, operators ``ops``.

    ``demo_error``: fraction of *training demonstrations* written carelessly, with a trailing period (``85.``).
    It goes into the row's ``completion`` column (what SFT imitates); ``answer`` (what the exact-match reward checks)
    stays the bare number. SFT copies the habit; RL with the verifiable reward has to find and reinforce the
    rewarded format, a habit that carries over to held-out problems — the classic case of RL fixing what imitation
    of imperfect demonstrations got wrong. ``demos_per_problem``: each training problem appears this many times,
    each demonstration independently careless.
    """
    lo_d, hi_d = digits
    if not 1 <= lo_d <= hi_d:
        raise ValueError(f"digits must satisfy 1 <= min <= max, got {digits}")
    unknown = [op for op in ops if op not in OPS]
    if unknown:
        raise ValueError(f"unknown operators {unknown}; allowed: {list(OPS)}")
    lo, hi = (0 if lo_d == 1 else 10 ** (lo_d - 1)), 10**hi_d - 1
    space = (hi - lo + 1) ** 2 * len(ops)
    if n_train + n_test > space:
        raise ValueError(f"asked for {n_train + n_test} problems but only {space} exist for digits={digits}")
    rng = random.Random(seed)
    seen: set[tuple[int, str, int]] = set()
    problems: list[Example] = []
    while len(problems) < n_train + n_test:
        key = (rng.randint(lo, hi), rng.choice(ops), rng.randint(lo, hi))
        if key not in seen:
            seen.add(key)
            problems.append(_problem(*key))
    train, test = problems[n_test:], problems[:n_test]
    train = [Example(e.prompt, e.answer, dict(e.columns)) for e in train for _ in range(demos_per_problem)]
    if demo_error > 0:
        noise = random.Random(seed + 1)  # own stream: the problems do not depend on demo_error
        for ex in train:
            if noise.random() < demo_error:
                ex.columns["completion"] = ex.answer + "."
    return train, test


def arithmetic_corpus() -> list[str]:
    """Every character the task uses, in realistic strings (for tokenizer training)."""
    train, test = make_arithmetic_splits(seed=1, n_train=300, n_test=0, digits=(1, 3), ops=tuple(OPS))
    return [e.prompt + e.answer for e in train + test]


class ArithmeticEnv(DatasetEnv):
    """Single-step environment: observation = ``"37+48="``, action = the answer text, reward = exact match."""

    def __init__(self, examples: list[Example], *, seed: int = 0) -> None:
        super().__init__([e.as_row() for e in examples], exact_match, seed=seed)
