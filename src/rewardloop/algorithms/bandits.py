"""Bandit baselines for slates: random, popularity, ε-greedy, UCB1, Thompson sampling, LinUCB, LinTS (pure numpy).

Each step a policy sees the user context x [Du], the K candidates' features [K, Di] and their catalogue ids ("arms",
[K]), and returns a slate of L candidate positions, best first, with the **propensity** of that ordered slate under
the policy — what off-policy evaluation (``rewardloop.eval.ope``) needs from the logs. Feedback is one reward per
shown position (the engagement reward of the clicked item, 0 for the others).

Non-contextual policies keep statistics per arm; the linear ones share one weight vector over the joint features
φ(x, i) = [vec(x ⊗ z_i), z_i]. References: Auer, Cesa-Bianchi & Fischer 2002 (UCB1); Li, Chu, Langford & Schapire
2010, Algorithm 1 (LinUCB, one shared model); Agrawal & Goyal 2013 (Thompson sampling for linear payoffs).
Deterministic rankings break ties by candidate position, so their propensity is exactly 1; Thompson sampling's has
no closed form and is estimated by re-drawing the posterior ``mc`` times (``(1 + hits) / (1 + mc)``, which counts
the draw that produced the slate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from rewardloop.envs.personalization.harness import Choice, n_slates, position_rewards, run_bandit, top

__all__ = ["Choice", "n_slates", "position_rewards", "run_bandit", "top"]  # re-exported: the harness the baselines use


def joint_features(context: np.ndarray, features: np.ndarray) -> np.ndarray:
    """φ(x, i) = [vec(x ⊗ z_i), z_i]: [Du], [K, Di] → [K, Du·Di + Di]."""
    outer = context[None, :, None] * features[:, None, :]  # [K, Du, Di]
    return np.concatenate([outer.reshape(len(features), -1), features], axis=1)


def sampled_propensity(draw_scores: np.ndarray, slate: np.ndarray) -> float:
    """Monte-Carlo propensity of ``slate`` given posterior score draws [M, K]: (1 + #draws ranking it first) / (1 + M)."""
    ranked = np.argsort(-draw_scores, axis=1, kind="stable")[:, : len(slate)]  # [M, L]
    hits = int(np.all(ranked == slate[None, :], axis=1).sum())
    return (1 + hits) / (1 + len(draw_scores))


class RandomPolicy:
    """A uniformly random ordered slate: propensity (K − L)! / K!."""

    def select(self, context, features, arms, size, rng) -> Choice:
        return Choice(rng.choice(len(arms), size=size, replace=False), 1.0 / n_slates(len(arms), size))

    def update(self, context, features, arms, rewards) -> None:
        pass


@dataclass
class ArmStats:
    """Per-arm counts n_i, reward sums s_i and positive-engagement counts (arms are catalogue ids)."""

    n: dict[int, int] = field(default_factory=dict)
    total: dict[int, float] = field(default_factory=dict)
    hits: dict[int, int] = field(default_factory=dict)
    t: int = 0

    def update(self, arms: np.ndarray, rewards: np.ndarray) -> None:
        self.t += 1
        for a, r in zip(arms.tolist(), rewards.tolist(), strict=True):
            self.n[a] = self.n.get(a, 0) + 1
            self.total[a] = self.total.get(a, 0.0) + r
            self.hits[a] = self.hits.get(a, 0) + int(r > 0)

    def counts(self, arms: np.ndarray) -> np.ndarray:
        return np.array([self.n.get(a, 0) for a in arms.tolist()], dtype=float)

    def means(self, arms: np.ndarray) -> np.ndarray:
        return np.array([self.total.get(a, 0.0) for a in arms.tolist()]) / np.maximum(self.counts(arms), 1.0)


class _PerArm:
    """Shared update of the non-contextual policies (statistics per shown arm)."""

    def __init__(self) -> None:
        self.stats = ArmStats()

    def update(self, context, features, arms, rewards) -> None:
        self.stats.update(np.asarray(arms), np.asarray(rewards, dtype=float))


class Popularity(_PerArm):
    """The items with the most positive engagements so far (global, not personal); propensity 1."""

    def select(self, context, features, arms, size, rng) -> Choice:
        hits = np.array([self.stats.hits.get(a, 0) for a in np.asarray(arms).tolist()], dtype=float)
        return Choice(top(hits, size), 1.0)


class EpsilonGreedy(_PerArm):
    """With probability 1 − ε the top-L arms by mean reward, else a uniformly random slate.

    propensity = (1 − ε)·[slate = greedy] + ε · (K − L)! / K!.
    """

    def __init__(self, epsilon: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        self.epsilon = epsilon

    def select(self, context, features, arms, size, rng) -> Choice:
        greedy = top(self.stats.means(np.asarray(arms)), size)
        slate = rng.choice(len(arms), size=size, replace=False) if rng.random() < self.epsilon else greedy
        uniform = self.epsilon / n_slates(len(arms), size)
        return Choice(slate, (1.0 - self.epsilon) * float(np.array_equal(slate, greedy)) + uniform)


class UCB1(_PerArm):
    """Mean reward + c·√(2 ln t / n_i); arms never shown first. Deterministic: propensity 1."""

    def __init__(self, c: float = 1.0) -> None:
        super().__init__()
        self.c = c

    def select(self, context, features, arms, size, rng) -> Choice:
        arms = np.asarray(arms)
        n = self.stats.counts(arms)
        bonus = self.c * np.sqrt(2.0 * math.log(max(self.stats.t, 1)) / np.maximum(n, 1.0))
        return Choice(top(np.where(n > 0, self.stats.means(arms) + bonus, np.inf), size), 1.0)


class Thompson(_PerArm):
    """Gaussian Thompson sampling per arm: μ̃_i ~ N(s_i / (n_i + 1), σ² / (n_i + 1)) (prior N(0, σ²)), top-L of μ̃."""

    def __init__(self, sigma: float = 1.0, mc: int = 200) -> None:
        super().__init__()
        self.sigma, self.mc = sigma, mc

    def _draw(self, arms: np.ndarray, rng: np.random.Generator, m: int) -> np.ndarray:
        n = self.stats.counts(arms)
        mean = self.stats.means(arms) * n / (n + 1.0)
        return mean + self.sigma / np.sqrt(n + 1.0) * rng.standard_normal((m, len(arms)))  # [m, K]

    def select(self, context, features, arms, size, rng) -> Choice:
        arms = np.asarray(arms)
        slate = top(self._draw(arms, rng, 1)[0], size)
        return Choice(slate, sampled_propensity(self._draw(arms, rng, self.mc), slate))


class _Linear:
    """Ridge statistics of the shared linear model r ≈ θᵀφ: A = λI + Σ φφᵀ (kept as A⁻¹), b = Σ r φ."""

    def __init__(self, dim: int, lam: float = 1.0) -> None:
        self.a_inv = np.eye(dim) / lam  # [d, d]
        self.b = np.zeros(dim)  # [d]

    @property
    def theta(self) -> np.ndarray:
        return self.a_inv @ self.b

    def update(self, context, features, arms, rewards) -> None:
        self.add(joint_features(np.asarray(context), np.asarray(features)), rewards)

    def add(self, phis: np.ndarray, rewards) -> None:
        """One observation per row: φ [n, d], r [n]."""
        for phi, r in zip(phis, np.asarray(rewards, dtype=float), strict=True):
            a_phi = self.a_inv @ phi  # Sherman–Morrison: (A + φφᵀ)⁻¹ = A⁻¹ − A⁻¹φφᵀA⁻¹ / (1 + φᵀA⁻¹φ)
            self.a_inv -= np.outer(a_phi, a_phi) / (1.0 + phi @ a_phi)
            self.b += r * phi

    def add_batch(self, phis: np.ndarray, rewards) -> None:
        """Many observations at once (a prior from logs): A ← A + ΦᵀΦ (one inversion), b ← b + Φᵀr. [n, d], [n]"""
        a = np.linalg.inv(self.a_inv) + phis.T @ phis
        self.a_inv = np.linalg.inv(a)
        self.b += phis.T @ np.asarray(rewards, dtype=float)


class LinUCB(_Linear):
    """Score θ̂ᵀφ + α √(φᵀ A⁻¹ φ); deterministic top-L: propensity 1. ``dim`` = Du·Di + Di."""

    def __init__(self, dim: int, alpha: float = 1.0, lam: float = 1.0) -> None:
        super().__init__(dim, lam)
        self.alpha = alpha

    def select(self, context, features, arms, size, rng) -> Choice:
        return self.select_phi(joint_features(np.asarray(context), np.asarray(features)), size, rng)

    def select_phi(self, phi: np.ndarray, size: int, rng) -> Choice:
        """Top-L of θ̂ᵀφ_k + α √(φ_kᵀ A⁻¹ φ_k) over the candidates' features φ [K, d]."""
        width = np.sqrt(((phi @ self.a_inv) * phi).sum(1))  # [K]
        return Choice(top(phi @ self.theta + self.alpha * width, size), 1.0)


class LinTS(_Linear):
    """θ̃ ~ N(θ̂, v² A⁻¹), top-L of θ̃ᵀφ; propensity by ``mc`` posterior re-draws."""

    def __init__(self, dim: int, v: float = 0.5, lam: float = 1.0, mc: int = 200) -> None:
        super().__init__(dim, lam)
        self.v, self.mc = v, mc

    def select(self, context, features, arms, size, rng) -> Choice:
        return self.select_phi(joint_features(np.asarray(context), np.asarray(features)), size, rng)

    def select_phi(self, phi: np.ndarray, size: int, rng) -> Choice:
        """A posterior draw's top-L over the candidates' features φ [K, d], with its Monte-Carlo propensity."""
        # scores θ̃ᵀφ_k are jointly Gaussian: mean φθ̂ [K], covariance v² φ A⁻¹ φᵀ [K, K] — sample them directly
        cov = self.v**2 * phi @ self.a_inv @ phi.T
        chol = np.linalg.cholesky(cov + 1e-9 * np.eye(len(phi)))
        mean = phi @ self.theta
        draws = mean + rng.standard_normal((1 + self.mc, len(phi))) @ chol.T  # [1 + mc, K]
        slate = top(draws[0], size)
        return Choice(slate, sampled_propensity(draws[1:], slate))


BASELINES = ("random", "popularity", "epsilon-greedy", "ucb1", "thompson", "linucb", "lints")


def make_policy(name: str, dim: int) -> object:
    """A baseline by name (``BASELINES``) with default settings; ``dim`` is the joint feature size for linear ones."""
    makers = {
        "random": RandomPolicy,
        "popularity": Popularity,
        "epsilon-greedy": EpsilonGreedy,
        "ucb1": UCB1,
        "thompson": Thompson,
        "linucb": lambda: LinUCB(dim),
        "lints": lambda: LinTS(dim),
    }
    if name not in makers:
        raise ValueError(f"unknown bandit policy {name!r}; allowed: {list(makers)}")
    return makers[name]()


class OraclePolicy:
    """The simulator's best slate for the current state (reads ``env.slate_values()``): the regret reference."""

    def __init__(self, env) -> None:
        self.env = env

    def select(self, context, features, arms, size, rng) -> Choice:
        return Choice(self.env.slates[int(np.argmax(self.env.slate_values()))], 1.0)

    def update(self, context, features, arms, rewards) -> None:
        pass
