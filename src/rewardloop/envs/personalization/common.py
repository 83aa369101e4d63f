"""What the feed, playlist and search environments share: parsing a text slate, the public numeric features,
enumerating slates, and the exact expectation of a clipped engagement reward."""

from __future__ import annotations

import re
from itertools import permutations, product

import numpy as np

from rewardloop.envs.personalization.catalogue import TONES, TOPICS, Catalogue
from rewardloop.envs.personalization.users import GROUPS, User
from rewardloop.rewards.engagement import EngagementWeights

_ID = re.compile(r"[,\s]+")


def parse_slate(action: str, candidate_ids: list[str], size: int) -> list[int]:
    """``"i012, i004 i077"`` → positions of those ids among ``candidate_ids``, in the order given.

    Errors name the offending value: an id that is not a candidate, a duplicate, or the wrong number of ids.
    """
    if not isinstance(action, str):
        raise TypeError(f"action must be a string of item ids, got {type(action).__name__}: {action!r}")
    ids = [tok for tok in _ID.split(action.strip()) if tok]
    where = {c: i for i, c in enumerate(candidate_ids)}
    for tok in ids:
        if tok not in where:
            raise ValueError(f"unknown item id {tok!r} in action {action!r}; this step's candidates: {candidate_ids}")
    seen = set()
    for tok in ids:
        if tok in seen:
            raise ValueError(f"duplicate item id {tok!r} in action {action!r}: a slate shows each item once")
        seen.add(tok)
    if len(ids) != size:
        raise ValueError(f"action {action!r} has {len(ids)} item ids; this environment's slate size is {size}")
    return [where[tok] for tok in ids]


def all_slates(n_candidates: int, size: int) -> np.ndarray:
    """Every ordered slate of ``size`` distinct positions out of ``n_candidates``: [S, size], S = K!/(K−L)!."""
    return np.array(list(permutations(range(n_candidates), size)), dtype=int).reshape(-1, size)


def user_features(user: User) -> np.ndarray:
    """What the persona shows, as numbers: top-2 topics (multi-hot), tone and group (one-hot). [T + tones + groups]."""
    topics = np.zeros(len(TOPICS))
    topics[user.top_topics()] = 1.0
    return np.concatenate([topics, np.eye(len(TONES))[user.tone], np.eye(len(GROUPS))[GROUPS.index(user.group)]])


def numeric_view(user: User, catalogue: Catalogue, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(context [Du], candidate features [K, Di]) — the public information of the text observation, as numbers."""
    return user_features(user), catalogue.features[candidates]


def clip(total: np.ndarray, weights: EngagementWeights) -> np.ndarray:
    return total if weights.clip is None else np.clip(total, weights.clip[0], weights.clip[1])


def expected_clipped(
    base: np.ndarray, bernoullis: list[tuple[np.ndarray, float]], weights: EngagementWeights
) -> np.ndarray:
    """E[clip(base + Σ_j w_j B_j)] with independent B_j ~ Bern(p_j), exactly, by summing over the 2^m outcomes.

    ``base``: the deterministic part of the weighted event sum (any shape); ``bernoullis``: (p_j, w_j) pairs with
    p_j of the same shape.
    """
    out = np.zeros_like(np.asarray(base, dtype=float))
    for outcome in product((0, 1), repeat=len(bernoullis)):
        prob = np.ones_like(out)
        total = np.asarray(base, dtype=float).copy()
        for hit, (p, w) in zip(outcome, bernoullis, strict=True):
            prob = prob * (p if hit else 1.0 - p)
            total = total + hit * w
        out = out + prob * clip(total, weights)
    return out


def sample_candidates(rng: np.random.Generator, n_items: int, k: int) -> np.ndarray:
    """``k`` distinct catalogue indices, uniformly. [K]"""
    if k > n_items:
        raise ValueError(f"n_candidates={k} exceeds the catalogue size {n_items}")
    return rng.choice(n_items, size=k, replace=False)
