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


@dataclass
class Choice:
    slate: np.ndarray  # [L] candidate positions, best first
    propensity: float  # P(this ordered slate | context) under the policy


def n_slates(k: int, size: int) -> int:
    """Ordered slates of ``size`` out of ``k``: k! / (k − size)!."""
    return math.perm(k, size)


def top(scores: np.ndarray, size: int) -> np.ndarray:
    """The ``size`` best positions, best first; ties go to the lower position (stable). [K] → [L]"""
    return np.argsort(-scores, kind="stable")[:size]


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
        for phi, r in zip(
            joint_features(np.asarray(context), np.asarray(features)), np.asarray(rewards, dtype=float), strict=True
        ):
            a_phi = self.a_inv @ phi  # Sherman–Morrison: (A + φφᵀ)⁻¹ = A⁻¹ − A⁻¹φφᵀA⁻¹ / (1 + φᵀA⁻¹φ)
            self.a_inv -= np.outer(a_phi, a_phi) / (1.0 + phi @ a_phi)
            self.b += r * phi


class LinUCB(_Linear):
    """Score θ̂ᵀφ + α √(φᵀ A⁻¹ φ); deterministic top-L: propensity 1. ``dim`` = Du·Di + Di."""

    def __init__(self, dim: int, alpha: float = 1.0, lam: float = 1.0) -> None:
        super().__init__(dim, lam)
        self.alpha = alpha

    def select(self, context, features, arms, size, rng) -> Choice:
        phi = joint_features(np.asarray(context), np.asarray(features))  # [K, d]
        width = np.sqrt(np.einsum("kd,de,ke->k", phi, self.a_inv, phi))
        return Choice(top(phi @ self.theta + self.alpha * width, size), 1.0)


class LinTS(_Linear):
    """θ̃ ~ N(θ̂, v² A⁻¹), top-L of θ̃ᵀφ; propensity by ``mc`` posterior re-draws."""

    def __init__(self, dim: int, v: float = 0.5, lam: float = 1.0, mc: int = 200) -> None:
        super().__init__(dim, lam)
        self.v, self.mc = v, mc

    def select(self, context, features, arms, size, rng) -> Choice:
        phi = joint_features(np.asarray(context), np.asarray(features))  # [K, d]
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


def position_rewards(reward: float, info: dict, size: int) -> np.ndarray:
    """The step reward credited to each shown position: the clicked one (feed), the clicks in equal shares
    (search), or the single track (playlist). [L]"""
    out = np.zeros(size)
    if info.get("position") is not None:
        out[info["position"]] = reward
    elif "clicks" in info and sum(info["clicks"]) > 0:
        clicks = np.asarray(info["clicks"], dtype=float)
        out = reward * clicks / clicks.sum()
    elif size == 1:
        out[0] = reward
    return out


def run_bandit(env, policy, steps: int, seed: int = 0) -> list[dict]:
    """Drive ``policy`` on ``env`` for ``steps`` steps (new users as sessions end), updating it online.

    One record per step: the logged context, candidate features and arms, the shown slate and its propensity, the
    reward, and the simulator's exact expected reward of the shown, the oracle's and the random slate.
    """
    rng = np.random.default_rng([seed, 1])  # the policy's own stream: never the environment's (seeded with ``seed``)
    env.reset(seed=seed)
    size = env.slates.shape[1]
    log = []
    for _ in range(steps):
        context, features = env.numeric()
        arms = np.asarray(env.candidates)
        if hasattr(policy, "select_text"):  # a language-model policy reads the text: context and candidates
            choice = policy.select_text(*env.context(), size, rng)
        else:
            choice = policy.select(context, features, arms, size, rng)
        _, reward, done, info = env.step(" ".join(env.candidate_ids[i] for i in choice.slate))
        per_position = position_rewards(reward, info, size)
        policy.update(context, features[choice.slate], arms[choice.slate], per_position)
        log.append(
            {"context": context, "features": features, "arms": arms, "slate": choice.slate, "propensity": choice.propensity,
             "reward": reward, **{k: info[k] for k in ("expected_reward", "oracle_reward", "random_reward", "group", "items")},
             "clicked": info.get("clicked"), "events": info["events"], "done": done}
        )  # fmt: skip
        if done:
            env.reset()
    return log


# -- the language-model slate policy: scores from a causal LM, a slate by Plackett–Luce -----------------------------
def plackett_luce_log_prob(scores: np.ndarray, slate: np.ndarray, temperature: float = 1.0) -> float:
    """log P(slate) = Σ_k [ s_{a_k}/T − log Σ_{j not yet placed} exp(s_j/T) ] (Plackett 1975; Luce 1959). [K], [L]"""
    s = np.asarray(scores, dtype=float) / temperature
    remaining = np.ones(len(s), dtype=bool)
    total = 0.0
    for a in np.asarray(slate, dtype=int):
        rest = s[remaining]
        total += s[a] - (rest.max() + np.log(np.exp(rest - rest.max()).sum()))
        remaining[a] = False
    return float(total)


def plackett_luce_sample(
    scores: np.ndarray, size: int, rng: np.random.Generator, temperature: float = 1.0
) -> tuple[np.ndarray, float]:
    """A Plackett–Luce slate by the Gumbel-top-k trick (top-L of s/T + Gumbel noise is an exact PL draw; Yellott
    1977) and its propensity exp(log P(slate)). [K] → ([L], float)"""
    s = np.asarray(scores, dtype=float) / temperature
    slate = top(s + rng.gumbel(size=len(s)), size)
    return slate, float(np.exp(plackett_luce_log_prob(scores, slate, temperature)))


def lm_item_scores(model, tokenizer, context: str, items: list[str], normalise: bool = True) -> np.ndarray:
    """s_i = log π_LM(item_i | context): the summed (``normalise``: mean per token) log-probability of each
    candidate's text after the context, by one teacher-forced forward pass. → [K]"""
    import torch

    from rewardloop.rollout.scoring import sequence_logprobs

    prompt = tokenizer(context, add_special_tokens=False)["input_ids"]
    texts = [tokenizer("\n" + item, add_special_tokens=False)["input_ids"] for item in items]
    r = max(len(t) for t in texts)
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and len(prompt) + r > limit:
        raise ValueError(
            f"context ({len(prompt)} tokens) + longest item ({r} tokens) exceeds the model's {limit} positions; "
            "shorten the context (e.g. FeedConfig(history=0))"
        )
    pad = tokenizer.pad_token_id or 0
    input_ids = torch.tensor([prompt + t + [pad] * (r - len(t)) for t in texts])  # [K, P + R], responses right-padded
    mask = torch.tensor([[1] * (len(prompt) + len(t)) + [0] * (r - len(t)) for t in texts])
    with torch.no_grad():
        logp, _ = sequence_logprobs(model, input_ids, mask, n_response=r)  # [K, R]
    item_mask = mask[:, -r:].float()
    total = (logp * item_mask).sum(-1)
    return (total / item_mask.sum(-1) if normalise else total).float().numpy()


class LMSlatePolicy:
    """A causal LM as a slate policy: score every candidate's text given the observation (``lm_item_scores``),
    sample an ordered slate by Plackett–Luce at ``temperature``, and log that slate's exact propensity."""

    def __init__(self, model, tokenizer, temperature: float = 1.0) -> None:
        self.model, self.tokenizer, self.temperature = model, tokenizer, temperature

    def select_text(self, context: str, items: list[str], size: int, rng: np.random.Generator) -> Choice:
        scores = lm_item_scores(self.model, self.tokenizer, context, items)
        slate, propensity = plackett_luce_sample(scores, size, rng, self.temperature)
        return Choice(slate, propensity)

    def update(self, context, features, arms, rewards) -> None:
        pass  # training the LM on these rewards is the RL trainers' job, not the bandit loop's
