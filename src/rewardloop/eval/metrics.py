"""Recommendation and fairness metrics over logged steps (pure numpy).

Value: normalised regret, CTR, mean watch time, session length. Ranking: nDCG@k. Beyond accuracy: intra-list
diversity, catalogue coverage, exposure Gini across providers. Fairness: per-group outcome disparity.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def normalised_regret(policy: float, oracle: float, random: float) -> float:
    """(V_oracle − V_π) / (V_oracle − V_random): 0 for the oracle, 1 for the uniformly random policy, < 0 only for a
    policy better than the (myopic) oracle. Its complement (V_π − V_random) / (V_oracle − V_random) is the share of
    the achievable gain a policy captures."""
    gap = oracle - random
    if not np.isfinite(gap) or gap <= 0:
        raise ValueError(f"normalised_regret needs oracle > random, got oracle={oracle}, random={random}")
    return (oracle - policy) / gap


def ctr(clicked: Sequence[object]) -> float:
    """Share of steps with a click (``clicked[i]`` is the clicked id, or None / False for no click)."""
    if len(clicked) == 0:
        raise ValueError("ctr: no steps")
    return float(np.mean([c is not None and c is not False for c in clicked]))


def mean_watch_time(events: Sequence[Iterable[dict]]) -> float:
    """Mean seconds of ``watch_time`` per step (0 for steps without one)."""
    if len(events) == 0:
        raise ValueError("mean_watch_time: no steps")
    return float(np.mean([sum(e.get("value", 0.0) for e in evs if e.get("type") == "watch_time") for evs in events]))


def session_lengths(done: Sequence[bool]) -> list[int]:
    """Steps per finished session, from the per-step ``done`` flags (an unfinished last session is left out)."""
    out, n = [], 0
    for d in done:
        n += 1
        if d:
            out.append(n)
            n = 0
    return out


def dcg(relevance: Sequence[float]) -> float:
    """Σ_k (2^g_k − 1) / log2(k + 2), positions k from 0."""
    g = np.asarray(relevance, dtype=float)
    return float(((2.0**g - 1.0) / np.log2(np.arange(len(g)) + 2.0)).sum())


def ndcg_at_k(ranked: Sequence[float], candidates: Sequence[float], k: int) -> float:
    """nDCG@k of a ranking's relevance grades against the ideal ordering of all candidates' grades (0 if none is
    relevant)."""
    if k < 1:
        raise ValueError(f"ndcg_at_k: k must be ≥ 1, got {k}")
    ideal = dcg(sorted(candidates, reverse=True)[:k])
    return dcg(list(ranked)[:k]) / ideal if ideal > 0 else 0.0


def intra_list_diversity(features: np.ndarray) -> float:
    """Mean pairwise cosine distance 1 − cos(z_i, z_j) between a slate's item features [L, D] (0 for L < 2)."""
    z = np.asarray(features, dtype=float)
    if len(z) < 2:
        return 0.0
    unit = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    cos = unit @ unit.T  # [L, L]
    iu = np.triu_indices(len(z), k=1)
    return float((1.0 - cos[iu]).mean())


def catalogue_coverage(shown: Iterable[Iterable[int]], n_items: int) -> float:
    """Share of the catalogue shown at least once."""
    seen = {int(i) for slate in shown for i in slate}
    bad = [i for i in seen if not 0 <= i < n_items]
    if bad:
        raise ValueError(f"catalogue_coverage: item index {bad[0]} outside [0, {n_items})")
    return len(seen) / n_items


def gini(values: Sequence[float]) -> float:
    """Gini coefficient of non-negative amounts: 0 = equal, (n − 1)/n = everything to one. G = Σ_i (2i − n − 1) x_(i)
    / (n Σ x), x sorted ascending, i from 1."""
    x = np.sort(np.asarray(values, dtype=float))
    if len(x) == 0 or (x < 0).any():
        raise ValueError(f"gini needs non-empty non-negative values, got {list(values)[:5]}...")
    if x.sum() == 0:
        return 0.0
    i = np.arange(1, len(x) + 1)
    return float(((2 * i - len(x) - 1) * x).sum() / (len(x) * x.sum()))


def provider_exposure(
    shown: Iterable[Sequence[int]], providers: np.ndarray, n_providers: int, examination: np.ndarray | None = None
) -> np.ndarray:
    """Exposure per provider: each shown item adds its position's examination probability (1 if not given). [P]"""
    out = np.zeros(n_providers)
    for slate in shown:
        weights = np.ones(len(slate)) if examination is None else np.asarray(examination)[: len(slate)]
        np.add.at(out, np.asarray(providers)[np.asarray(slate, dtype=int)], weights)
    return out


def group_disparity(outcomes: Sequence[float], groups: Sequence[str]) -> dict:
    """Mean outcome per group, the largest gap between groups, and the min / max ratio (1 = parity)."""
    y = np.asarray(outcomes, dtype=float)
    if len(y) != len(groups) or len(y) == 0:
        raise ValueError(f"group_disparity: {len(y)} outcomes for {len(groups)} group labels")
    labels = np.asarray(groups)
    means = {str(g): float(y[labels == g].mean()) for g in sorted(set(labels.tolist()))}
    lo, hi = min(means.values()), max(means.values())
    return {"means": means, "gap": hi - lo, "ratio": lo / hi if hi > 0 else float("nan")}
