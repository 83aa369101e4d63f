"""Simulated users: hidden interests over topics, a text persona, and how they respond to an item.

A user has interests ``u`` (a distribution over topics, hidden), a favourite tone, a group (``mainstream`` users like
the well-stocked topics, ``niche`` users the rare ones), a session time budget, and ``trust`` in the platform (starts
at 1). The persona shows the top two topics and the tone — not the full interests, which also drift:

    affinity a_i = u[topic_i] / max(u)                                     ∈ [0, 1]
    click utility v_i = β·a_i + τ·[tone_i = tone] + h_i − λ·(1 − trust),   no-click utility v_0
    watch fraction f_i = σ(α·a_i + ω·(q_i − ½) + h_i − 1)                (watch time f_i · length_i)
    like ~ Bern(0.6·q_i·a_i·trust),  share ~ Bern(0.25·q_i²·a_i·trust),  skip if f_i < skip_below
    after a click: u ← (1 − η f) u + η f · onehot(topic_i) (renormalised),  trust ← clip(trust + κ f (q_i − ½))

``h_i`` is the clickbait hook: ``hook`` for clickbait items when ``Behaviour.clickbait`` is on, else 0 — clickbait
then earns clicks and watch time now, while its low quality erodes trust (fewer clicks, likes and shares later) and
pulls interests toward whatever was consumed (as in RecSim NG's interest-evolution / clickbait examples).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import Field

from rewardloop.config import Section
from rewardloop.envs.personalization.catalogue import TONES, TOPICS, Catalogue, zipf_shares

GROUPS = ("mainstream", "niche")
_NAMES = ("Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Goran", "Hana", "Ivo", "Jun", "Kofi", "Lea", "Mo", "Nia")


class Behaviour(Section):
    """Parameters of the user model (symbols as in the module docstring)."""

    beta: float = Field(3.0, description="β: click utility per unit affinity")
    tone_bonus: float = Field(0.5, description="τ: click utility of the favourite tone")
    no_click_utility: float = Field(1.5, description="v_0: utility of not clicking (MNL outside option)")
    trust_penalty: float = Field(2.0, description="λ: click utility lost per unit of lost trust")
    alpha: float = Field(3.0, description="α: watch-fraction logit per unit affinity")
    omega: float = Field(2.0, description="ω: watch-fraction logit per unit quality")
    skip_below: float = Field(0.3, description="watch fraction under which a click also logs a skip")
    drift: float = Field(0.1, ge=0.0, le=1.0, description="η: interest drift toward a consumed topic")
    trust_rate: float = Field(0.3, ge=0.0, description="κ: trust change per unit of (quality − ½) watched")
    min_trust: float = Field(0.2, ge=0.0, le=1.0)
    clickbait: bool = Field(False, description="clickbait switch: clickbait items get the hook h (clicks, watch)")
    hook: float = Field(1.5, description="h: the clickbait hook, in click utility and in the watch-fraction logit")


@dataclass
class User:
    """A simulated user; ``interests`` and ``trust`` are hidden state that changes as the user consumes items."""

    id: str
    name: str
    group: str
    interests: np.ndarray  # [T] on the simplex
    tone: int
    budget_s: float
    trust: float = 1.0

    def top_topics(self, n: int = 2) -> list[int]:
        return [int(t) for t in np.argsort(-self.interests, kind="stable")[:n]]

    def persona(self) -> str:
        likes = " and ".join(TOPICS[t] for t in self.top_topics())
        return f"{self.name} ({self.group} viewer) enjoys {likes}, prefers a {TONES[self.tone]} tone."


def make_user(rng: np.random.Generator) -> User:
    """A user with Dirichlet(0.5) interests tilted toward popular (mainstream) or rare (niche) topics."""
    index = int(rng.integers(10**6))
    group = GROUPS[int(rng.integers(len(GROUPS)))]
    prior = zipf_shares(len(TOPICS), 1.0)
    tilt = prior if group == "mainstream" else prior[::-1]
    interests = rng.dirichlet(np.full(len(TOPICS), 0.5)) * tilt
    return User(
        id=f"u{index:06d}",
        name=_NAMES[index % len(_NAMES)],
        group=group,
        interests=interests / interests.sum(),
        tone=int(rng.integers(len(TONES))),
        budget_s=float(rng.uniform(600.0, 1200.0)),
    )


def affinity(user: User, catalogue: Catalogue, idx: np.ndarray) -> np.ndarray:
    """a_i = u[topic_i] / max(u) for item indices ``idx`` (any shape)."""
    return user.interests[catalogue.topics[idx]] / user.interests.max()


@dataclass
class Response:
    """The user's response parameters for items ``idx`` (arrays of the same shape as ``idx``)."""

    utility: np.ndarray
    watch_fraction: np.ndarray
    watch_s: np.ndarray
    p_like: np.ndarray
    p_share: np.ndarray
    skip: np.ndarray


def respond(user: User, catalogue: Catalogue, idx: np.ndarray, b: Behaviour) -> Response:
    """The click utility, watch time and like / share probabilities of items ``idx`` for this user now."""
    idx = np.asarray(idx)
    a = affinity(user, catalogue, idx)
    items = [catalogue.items[i] for i in idx.ravel()]
    q = np.array([it.quality for it in items]).reshape(idx.shape)
    hook = b.hook * np.array([b.clickbait and it.clickbait for it in items], dtype=float).reshape(idx.shape)
    tone = np.array([it.tone == user.tone for it in items], dtype=float).reshape(idx.shape)
    length = np.array([it.length_s for it in items]).reshape(idx.shape)
    utility = b.beta * a + b.tone_bonus * tone + hook - b.trust_penalty * (1.0 - user.trust)
    f = 1.0 / (1.0 + np.exp(-(b.alpha * a + b.omega * (q - 0.5) + hook - 1.0)))
    return Response(
        utility=utility,
        watch_fraction=f,
        watch_s=f * length,
        p_like=0.6 * q * a * user.trust,
        p_share=0.25 * q**2 * a * user.trust,
        skip=f < b.skip_below,
    )


def consume(user: User, catalogue: Catalogue, item: int, watch_fraction: float, b: Behaviour) -> None:
    """Drift after watching ``watch_fraction`` of ``item``: interests toward its topic, trust by its quality."""
    it = catalogue.items[item]
    step = b.drift * watch_fraction
    interests = (1.0 - step) * user.interests + step * catalogue.topic_onehot[item]
    user.interests = interests / interests.sum()
    user.trust = float(np.clip(user.trust + b.trust_rate * watch_fraction * (it.quality - 0.5), b.min_trust, 1.0))
