"""Reward-model fairness on matched pairs: does a reward model score the same text differently when only a group
attribute changes?

A matched pair is one (prompt, response) scored twice, once with the attribute's value ``a`` and once with ``b``
(``"mainstream viewer"`` ↔ ``"niche viewer"`` in the persona for user groups, ``"creator p0"`` ↔ ``"creator p5"``
in the item for providers) — everything else equal, so any score difference is the attribute's. Per pair
d_j = r(x_j^a, y_j^a) − r(x_j^b, y_j^b); the report gives the mean gap d̄ with a normal 95 % interval
d̄ ± z·sd(d)/√n, the share of pairs where ``a`` scores higher, and how many texts held the attribute at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

# the attributes a feed text carries: name → (value a, value b), swapped as whole phrases
FEED_ATTRIBUTES: dict[str, tuple[str, str]] = {
    "user_group": ("(mainstream viewer)", "(niche viewer)"),
    "provider": ("by creator p0", "by creator p5"),
}


@dataclass
class Disparity:
    """Mean score gap r(a) − r(b) over matched pairs with its interval, and the share of pairs where a scores more."""

    attribute: str
    a: str
    b: str
    gap: float
    lo: float
    hi: float
    share_a_higher: float
    n: int

    def significant(self) -> bool:
        """The interval excludes 0."""
        return self.lo > 0 or self.hi < 0


def swap(text: str, a: str, b: str) -> tuple[str, str]:
    """(the text with ``a``, the text with ``b``): both phrases set to one value, so either input gives the pair."""
    neutral = text.replace(a, "\0").replace(b, "\0")
    return neutral.replace("\0", a), neutral.replace("\0", b)


def matched_pairs(
    prompts: Sequence[str], responses: Sequence[str], a: str, b: str
) -> tuple[list[str], list[str], list[str], list[str]]:
    """The (prompt, response) rows mentioning ``a`` or ``b``, as (prompts_a, responses_a, prompts_b, responses_b)."""
    if len(prompts) != len(responses):
        raise ValueError(f"matched_pairs: {len(prompts)} prompts for {len(responses)} responses")
    out: tuple[list[str], ...] = ([], [], [], [])
    for p, r in zip(prompts, responses, strict=True):
        if any(v in p or v in r for v in (a, b)):
            (pa, pb), (ra, rb) = swap(p, a, b), swap(r, a, b)
            for lst, x in zip(out, (pa, ra, pb, rb), strict=True):
                lst.append(x)
    return out  # type: ignore[return-value]


def paired_gap(scores_a: Sequence[float], scores_b: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean d, lo, hi) of d = a − b with a normal ``level`` interval."""
    d = np.asarray(scores_a, dtype=float) - np.asarray(scores_b, dtype=float)
    if len(d) == 0:
        raise ValueError("paired_gap: no matched pairs")
    half = NormalDist().inv_cdf(0.5 + level / 2) * (d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else 0.0)
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)


def score_disparity(
    reward_fn: Callable[..., list[float]],
    prompts: Sequence[str],
    responses: Sequence[str],
    attribute: str,
    values: tuple[str, str],
    level: float = 0.95,
) -> Disparity:
    """The matched-pair disparity of ``reward_fn`` (any RewardFn: ``fn(prompts=, completions=) → list[float]``, e.g.
    ``rewards.model.RewardModelScorer``) for one attribute."""
    a, b = values
    pa, ra, pb, rb = matched_pairs(prompts, responses, a, b)
    if not pa:
        raise ValueError(f"score_disparity: no prompt or response mentions {a!r} or {b!r} (attribute {attribute!r})")
    sa = np.asarray(reward_fn(prompts=pa, completions=ra), dtype=float)
    sb = np.asarray(reward_fn(prompts=pb, completions=rb), dtype=float)
    gap, lo, hi = paired_gap(sa, sb, level)
    return Disparity(attribute, a, b, gap, lo, hi, float(np.mean(sa > sb)), len(pa))


def fairness_report(
    reward_fn: Callable[..., list[float]],
    prompts: Sequence[str],
    responses: Sequence[str],
    attributes: dict[str, tuple[str, str]] = FEED_ATTRIBUTES,
) -> list[dict]:
    """One ``Disparity`` (as a dict) per attribute."""
    return [asdict(score_disparity(reward_fn, prompts, responses, k, v)) for k, v in attributes.items()]
