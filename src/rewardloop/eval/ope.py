"""Off-policy evaluation: the value of a target policy π from logs collected by a logging policy μ.

Each logged step i has a context x_i, the shown action a_i (an item or a whole ordered slate), its reward r_i and
its logging propensity μ(a_i | x_i). With importance weights w_i = π(a_i | x_i) / μ(a_i | x_i) and a reward model
q̂(x, a):

    IPS   V = 1/n Σ w_i r_i                                       (Horvitz & Thompson 1952)
    SNIPS V = Σ w_i r_i / Σ w_i                                   (Swaminathan & Joachims 2015)
    DM    V = 1/n Σ q̂(x_i, π)         q̂(x, π) = Σ_a π(a | x) q̂(x, a)
    DR    V = 1/n Σ [ q̂(x_i, π) + w_i (r_i − q̂(x_i, a_i)) ]     (Dudík, Langford & Li 2011)

Confidence intervals: the normal approximation on the per-step terms (for SNIPS, on its linearisation
w_i (r_i − V) / mean(w)), or a percentile bootstrap. DM's interval reflects only sampling noise, not the reward
model's bias. Used by the personalization benchmark and by the feedback loop (pure numpy, no rewardloop imports).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np

CI = Literal["normal", "bootstrap"]


@dataclass(frozen=True)
class Estimate:
    """A value estimate with its confidence interval [lo, hi] at ``level``."""

    value: float
    lo: float
    hi: float
    n: int
    method: str
    level: float

    def covers(self, truth: float) -> bool:
        return self.lo <= truth <= self.hi


def _array(name: str, values: object) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D array, got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(f"{name}[{bad[0]}] = {arr[bad[0]]} is not finite")
    return arr


def _same_length(**arrays: np.ndarray) -> int:
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"arrays of different lengths: {lengths}")
    return next(iter(lengths.values()))


def importance_weights(target_probs: object, logging_probs: object) -> np.ndarray:
    """w_i = π(a_i | x_i) / μ(a_i | x_i); a logging propensity outside (0, 1] or a target probability outside [0, 1]
    is an error naming its row."""
    pi, mu = _array("target_probs", target_probs), _array("logging_probs", logging_probs)
    _same_length(target_probs=pi, logging_probs=mu)
    for name, arr, ok in (("logging_probs", mu, (mu > 0) & (mu <= 1)), ("target_probs", pi, (pi >= 0) & (pi <= 1))):
        bad = np.flatnonzero(~ok)
        if bad.size:
            raise ValueError(
                f"{name}[{bad[0]}] = {arr[bad[0]]} is not a probability" + (" > 0" if name[0] == "l" else "")
            )
    return pi / mu


def _interval(
    value: float,
    terms: np.ndarray,
    statistic: Callable[[np.ndarray], float],
    method: str,
    level: float,
    ci: CI,
    n_boot: int,
    seed: int,
) -> Estimate:
    """CI from per-step terms (normal: value ± z·sd/√n) or from ``statistic`` over bootstrap resamples of the rows."""
    n = len(terms)
    if ci == "normal":
        half = NormalDist().inv_cdf(0.5 + level / 2) * float(np.std(terms, ddof=1) if n > 1 else 0.0) / np.sqrt(n)
        return Estimate(value, value - half, value + half, n, method, level)
    if ci == "bootstrap":
        rng = np.random.default_rng(seed)
        stats = np.array([statistic(rng.integers(n, size=n)) for _ in range(n_boot)])
        lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
        return Estimate(value, float(lo), float(hi), n, method, level)
    raise ValueError(f"ci must be 'normal' or 'bootstrap', got {ci!r}")


def ips(rewards, weights, *, level: float = 0.95, ci: CI = "normal", n_boot: int = 1000, seed: int = 0) -> Estimate:
    """Inverse propensity scoring: V = mean(w r)."""
    r, w = _array("rewards", rewards), _array("weights", weights)
    _same_length(rewards=r, weights=w)
    terms = w * r  # [n]
    return _interval(float(terms.mean()), terms, lambda i: float(terms[i].mean()), "IPS", level, ci, n_boot, seed)


def snips(rewards, weights, *, level: float = 0.95, ci: CI = "normal", n_boot: int = 1000, seed: int = 0) -> Estimate:
    """Self-normalised IPS: V = Σ w r / Σ w (normal CI from the delta method)."""
    r, w = _array("rewards", rewards), _array("weights", weights)
    _same_length(rewards=r, weights=w)
    if w.sum() <= 0:
        raise ValueError("snips: every importance weight is 0 (the target never takes a logged action)")
    value = float((w * r).sum() / w.sum())
    terms = w * (r - value) / w.mean()  # [n] linearisation; its mean is 0, its spread gives the CI
    terms = terms - terms.mean() + value
    return _interval(
        value, terms, lambda i: float((w[i] * r[i]).sum() / max(w[i].sum(), 1e-300)), "SNIPS", level, ci, n_boot, seed
    )


def dm(q_target, *, level: float = 0.95, ci: CI = "normal", n_boot: int = 1000, seed: int = 0) -> Estimate:
    """Direct method: V = mean over logged contexts of q̂(x_i, π) (``q_target``)."""
    q = _array("q_target", q_target)
    return _interval(float(q.mean()), q, lambda i: float(q[i].mean()), "DM", level, ci, n_boot, seed)


def dr(
    rewards, weights, q_logged, q_target, *, level: float = 0.95, ci: CI = "normal", n_boot: int = 1000, seed: int = 0
) -> Estimate:
    """Doubly robust: V = mean(q̂(x, π) + w (r − q̂(x, a)))."""
    r, w = _array("rewards", rewards), _array("weights", weights)
    ql, qt = _array("q_logged", q_logged), _array("q_target", q_target)
    _same_length(rewards=r, weights=w, q_logged=ql, q_target=qt)
    terms = qt + w * (r - ql)  # [n]
    return _interval(float(terms.mean()), terms, lambda i: float(terms[i].mean()), "DR", level, ci, n_boot, seed)


def fit_ridge(features, targets, lam: float = 1.0) -> np.ndarray:
    """θ = (XᵀX + λI)⁻¹ Xᵀy: a linear reward model q̂(x, a) = θᵀφ(x, a) for DM / DR. [n, d], [n] → [d]"""
    x, y = np.asarray(features, dtype=float), _array("targets", targets)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"fit_ridge: features must be [n, d] with n = len(targets) = {len(y)}, got {x.shape}")
    return np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1]), x.T @ y)
