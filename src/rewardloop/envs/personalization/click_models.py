"""Click models: the probability that a user clicks each position of a ranked list, exactly, and samplers.

Every function takes arrays with any leading batch shape ``[..., L]`` (``L`` positions, top first), so an oracle can
score every candidate slate in one call. References: Chuklin, Markov & de Rijke, *Click Models for Web Search*
(2015) — PBM §3.3, cascade §3.4, DBN §3.8; the feed's choice model is the multinomial logit with an outside option
(no click) restricted to the positions the user examined.
"""

from __future__ import annotations

from itertools import product

import numpy as np


def pbm_click_probs(attractiveness: np.ndarray, examination: np.ndarray) -> np.ndarray:
    """Position-based model: P(C_k) = θ_k · α_k (examination and attraction independent). [..., L] → [..., L]."""
    return np.asarray(examination) * np.asarray(attractiveness)


def cascade_click_probs(attractiveness: np.ndarray) -> np.ndarray:
    """Cascade model: the user scans top-down and clicks the first attractive item, then stops.

    P(C_k) = α_k · Π_{j<k} (1 − α_j). [..., L] → [..., L]; at most one click, so Σ_k P(C_k) ≤ 1.
    """
    a = np.asarray(attractiveness, dtype=float)
    not_before = np.cumprod(1.0 - a, axis=-1)  # [..., L]  Π_{j≤k}(1 − α_j)
    reach = np.concatenate([np.ones_like(a[..., :1]), not_before[..., :-1]], axis=-1)  # Π_{j<k}
    return a * reach


def dbn_click_probs(attractiveness: np.ndarray, satisfaction: np.ndarray, gamma: float) -> np.ndarray:
    """Dynamic Bayesian network model (Chapelle & Zhang 2009): examine → click w.p. α_k → satisfied w.p. σ_k (stop);
    otherwise continue to the next position w.p. γ.

    P(E_1) = 1,  P(E_{k+1}) = γ · P(E_k) · (1 − α_k σ_k),  P(C_k) = P(E_k) · α_k. [..., L] → [..., L].
    """
    a = np.asarray(attractiveness, dtype=float)
    s = np.asarray(satisfaction, dtype=float)
    stay = gamma * (1.0 - a * s)  # [..., L]  P(E_{k+1} | E_k)
    examined = np.concatenate([np.ones_like(a[..., :1]), np.cumprod(stay, axis=-1)[..., :-1]], axis=-1)
    return examined * a


def _subsets(n: int) -> np.ndarray:
    """All 2^n examination patterns as a [2^n, n] 0/1 matrix."""
    return np.array(list(product((0, 1), repeat=n)), dtype=float)


def mnl_examination_choice_probs(utility: np.ndarray, examination: np.ndarray, no_click_utility: float) -> np.ndarray:
    """The feed's choice model: each position k is examined independently w.p. θ_k; among the examined items the user
    picks one by a multinomial logit with an outside option of utility v_0 (no click).

    P(choose k) = Σ_{S ∋ k} P(S) · exp(v_k) / (exp(v_0) + Σ_{j∈S} exp(v_j)),  P(S) = Π_{j∈S} θ_j Π_{j∉S} (1 − θ_j),
    summed exactly over the 2^L examination patterns S. utility [..., L], examination [L] → [..., L] (the rest of
    the mass, 1 − Σ_k, is the no-click outcome).
    """
    v = np.asarray(utility, dtype=float)
    theta = np.asarray(examination, dtype=float)
    patterns = _subsets(v.shape[-1])  # [S, L]
    p_pattern = np.prod(np.where(patterns == 1, theta, 1.0 - theta), axis=-1)  # [S]
    shift = np.maximum(v.max(axis=-1, keepdims=True), no_click_utility)  # [..., 1] for a stable exp
    ev = np.exp(v - shift)[..., None, :] * patterns  # [..., S, L] exp(v_j) on examined positions only
    denom = np.exp(no_click_utility - shift)[..., None, :] + ev.sum(axis=-1, keepdims=True)  # [..., S, 1]
    return ((ev / denom) * p_pattern[:, None]).sum(axis=-2)  # [..., L]


def sample_examination_choice(
    utility: np.ndarray, examination: np.ndarray, no_click_utility: float, rng: np.random.Generator
) -> int | None:
    """One draw of the feed's choice model for a single slate ([L] utilities): the chosen position or None."""
    v = np.asarray(utility, dtype=float)
    examined = rng.random(v.shape[0]) < np.asarray(examination)
    weights = np.concatenate([[np.exp(no_click_utility)], np.exp(v) * examined])
    pick = int(rng.choice(len(weights), p=weights / weights.sum()))
    return None if pick == 0 else pick - 1


def sample_clicks(model: str, attractiveness: np.ndarray, rng: np.random.Generator, **params: object) -> np.ndarray:
    """One draw of a search click model over a single ranked list ([L]) → a 0/1 click vector [L].

    ``model``: "pbm" (needs ``examination``), "cascade", or "dbn" (needs ``satisfaction``, ``gamma``).
    """
    a = np.asarray(attractiveness, dtype=float)
    clicks = np.zeros_like(a)
    if model == "pbm":
        return (rng.random(a.shape) < np.asarray(params["examination"]) * a).astype(float)
    if model == "cascade":
        for k, a_k in enumerate(a):
            if rng.random() < a_k:
                clicks[k] = 1.0
                break
        return clicks
    if model == "dbn":
        sat, gamma = np.asarray(params["satisfaction"], dtype=float), float(params["gamma"])  # type: ignore[arg-type]
        for k, a_k in enumerate(a):
            if rng.random() < a_k:
                clicks[k] = 1.0
                if rng.random() < sat[k]:
                    break
            if rng.random() >= gamma:
                break
        return clicks
    raise ValueError(f"unknown click model {model!r}; allowed: ['pbm', 'cascade', 'dbn']")


def click_probs(model: str, attractiveness: np.ndarray, **params: object) -> np.ndarray:
    """Exact per-position click probabilities for ``model`` (see ``sample_clicks`` for the parameters)."""
    if model == "pbm":
        return pbm_click_probs(attractiveness, np.asarray(params["examination"]))
    if model == "cascade":
        return cascade_click_probs(attractiveness)
    if model == "dbn":
        return dbn_click_probs(attractiveness, np.asarray(params["satisfaction"]), float(params["gamma"]))  # type: ignore[arg-type]
    raise ValueError(f"unknown click model {model!r}; allowed: ['pbm', 'cascade', 'dbn']")


CLICK_MODELS = ("pbm", "cascade", "dbn")
