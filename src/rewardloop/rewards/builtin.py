"""Built-in reward functions: plain ``(prompts, completions, **columns) -> list[float]`` (DESIGN.md §3).

Dataset columns arrive as keyword lists aligned with the completions (``answer=[...]``); fixed settings come from a
``RewardSpec``'s ``kwargs`` (``pattern=...``). Each is registered by name in ``rewards.registry.BUILTIN_REWARDS``.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from typing import Any

from rewardloop.chat import text_of

_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


def on_text(fn: Callable[..., list[float]]) -> Callable[..., list[float]]:
    """Let a text reward take conversational completions too (``[{"role": "assistant", "content": ...}]``, as TRL
    passes them for conversational datasets): each completion becomes its text before ``fn`` sees it."""

    @functools.wraps(fn)
    def wrapped(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
        return fn(prompts, [text_of(c) for c in completions], **kwargs)

    return wrapped


@on_text
def exact_answer(
    prompts: list[Any], completions: list[str], *, answer: list[Any], ignore_case: bool = False, **_: Any
) -> list[float]:
    """1.0 where the completion equals the ``answer`` column after stripping whitespace (optionally case-blind)."""

    def norm(s: Any) -> str:
        s = str(s).strip()
        return s.lower() if ignore_case else s

    return [float(norm(c) == norm(a)) for c, a in zip(completions, answer, strict=True)]


def exact_match(prompts: list[Any], completions: list[str], *, answer: list[Any], **_: Any) -> list[float]:
    """1.0 where the completion (stripped) equals the answer, else 0.0: the arithmetic task's reward."""
    return exact_answer(prompts, completions, answer=answer)


def edit_distance(a: list[str], b: list[str]) -> int:
    """Levenshtein distance between two sequences (insertions, deletions, substitutions each cost 1)."""
    prev = list(range(len(b) + 1))  # prev[j] = distance(a[:i-1], b[:j])
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


@on_text
def edit_similarity(
    prompts: list[Any], completions: list[str], *, answer: list[Any], unit: str = "word", **_: Any
) -> list[float]:
    """Partial credit 1 − d(c, a) / max(|c|, |a|) in [0, 1], d the edit distance between the completion and the
    ``answer`` as sequences of whitespace-separated items (``unit="word"``) or characters (``unit="char"``); 1.0
    exactly when they match (whitespace-normalised), so ``accuracy`` (reward ≥ 1) stays exact match."""
    if unit not in ("word", "char"):
        raise ValueError(f"edit_similarity: unit must be 'word' or 'char', got {unit!r}")

    def items(s: Any) -> list[str]:
        return str(s).split() if unit == "word" else list(" ".join(str(s).split()))

    out = []
    for c, a in zip(completions, answer, strict=True):
        x, y = items(c), items(a)
        out.append(1.0 - edit_distance(x, y) / max(len(x), len(y), 1))
    return out


@on_text
def numeric_match(
    prompts: list[Any], completions: list[str], *, answer: list[Any], tol: float = 1e-6, **_: Any
) -> list[float]:
    """1.0 where the last number in the completion equals the numeric ``answer`` within ``tol`` (relative/absolute).

    "The answer is 85." and "85" both match answer "85"; a completion without a number scores 0.
    """
    out = []
    for c, a in zip(completions, answer, strict=True):
        found = _NUMBER.findall(c.replace(",", ""))
        if not found:
            out.append(0.0)
            continue
        got, want = float(found[-1]), float(str(a).replace(",", ""))
        out.append(float(math.isclose(got, want, rel_tol=tol, abs_tol=tol)))
    return out


@on_text
def numeric_closeness(
    prompts: list[Any], completions: list[str], *, answer: list[Any], scale: float = 10.0, **_: Any
) -> list[float]:
    """Partial credit max(0, 1 − |x − answer| / scale) for the last number x in the completion (0 without one):
    a dense shaping term next to an exact-match reward."""
    out = []
    for c, a in zip(completions, answer, strict=True):
        found = _NUMBER.findall(c.replace(",", ""))
        out.append(max(0.0, 1.0 - abs(float(found[-1]) - float(str(a).replace(",", ""))) / scale) if found else 0.0)
    return out


@on_text
def regex_format(
    prompts: list[Any], completions: list[str], *, pattern: str = r"-?\d+", search: bool = False, **_: Any
) -> list[float]:
    """1.0 where the stripped completion matches ``pattern`` (``re.fullmatch``; ``search=True``: anywhere)."""
    rx = re.compile(pattern, re.DOTALL)
    test = rx.search if search else rx.fullmatch
    return [float(test(c.strip()) is not None) for c in completions]


@on_text
def length_penalty(
    prompts: list[Any], completions: list[str], *, max_chars: int = 200, scale: int | None = None, **_: Any
) -> list[float]:
    """−min(1, max(0, len − max_chars) / scale) in [−1, 0]: 0 up to ``max_chars`` characters, −1 at
    ``max_chars + scale`` (default scale = max_chars) and beyond."""
    scale = scale or max_chars
    return [-min(1.0, max(0, len(c) - max_chars) / scale) for c in completions]


@on_text
def repetition_penalty(prompts: list[Any], completions: list[str], *, n: int = 3, **_: Any) -> list[float]:
    """−(share of repeated word n-grams) in [−1, 0]: −(1 − #distinct / #total n-grams); 0 for text under n words."""
    out = []
    for c in completions:
        words = c.split()
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        out.append(-(1.0 - len(set(grams)) / len(grams)) if grams else 0.0)
    return out


def reward_model(
    prompts: list[Any], completions: list[str], *, path: str, device: str = "auto", **_: Any
) -> list[float]:
    """Reward-model score of each completion (``rewards.model.RewardModelScorer``; loaded once, cached). The same
    scorer a ``{model: path}`` reward spec uses."""
    from rewardloop.rewards.model import cached_scorer

    return cached_scorer(path, device)(prompts, completions)
