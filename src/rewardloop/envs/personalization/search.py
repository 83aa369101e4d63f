"""`search`: the user types a query; the policy ranks L of K candidate documents; a click model decides the clicks.

A query names a topic (drawn from the user's interests) and a tone. Graded relevance of document d:

    g_d = 2·[topic_d = topic_q] + [tone_d = tone_q] ∈ {0, 1, 2, 3}

attractiveness α_d = (2^g − 1) / 2^3 + 0.02, satisfaction σ_d = q_d · g_d / 3 (hidden quality), dwell time
10 + 50·σ_d seconds. Clicks follow the configured click model (``pbm`` with θ_k = (k + 1)^−decay, ``cascade``, or
``dbn`` with persistence γ); each click logs ``click`` and its ``dwell``. Half of the K candidates share the query's
topic. The expected reward of a ranking is exact (Σ_k P(C_k) · (w_click + w_dwell · dwell_k / dwell_scale)), which
needs the clip not to bind; the constructor checks that.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from rewardloop.config import Section
from rewardloop.envs.personalization.catalogue import TONES, TOPICS, Catalogue, make_catalogue
from rewardloop.envs.personalization.click_models import click_probs, sample_clicks
from rewardloop.envs.personalization.common import all_slates, numeric_view, parse_slate
from rewardloop.envs.personalization.users import User, make_user
from rewardloop.rewards.engagement import EngagementWeights, engagement_score

MAX_GRADE = 3


class SearchConfig(Section):
    n_items: int = Field(200, ge=2)
    n_providers: int = Field(6, ge=1)
    catalogue_seed: int = 0
    n_candidates: int = Field(8, ge=2)
    slate_size: int = Field(4, ge=1)
    click_model: Literal["pbm", "cascade", "dbn"] = "dbn"
    position_decay: float = Field(0.7, ge=0.0, description="PBM examination θ_k = (k + 1)^−decay")
    gamma: float = Field(0.9, ge=0.0, le=1.0, description="DBN persistence γ")
    queries: int = Field(5, ge=1, description="queries per session")
    weights: EngagementWeights = Field(default_factory=EngagementWeights)


def relevance(catalogue: Catalogue, idx: np.ndarray, topic: int, tone: int) -> np.ndarray:
    """Graded relevance g ∈ {0..3} of items ``idx`` for a query (topic, tone)."""
    idx = np.asarray(idx)
    return 2 * (catalogue.topics[idx] == topic) + (catalogue.tones[idx] == tone)


class SearchEnv:
    """The search environment (see the module docstring); the action is a ranking of ``slate_size`` ids."""

    def __init__(self, config: SearchConfig | None = None, *, catalogue: Catalogue | None = None) -> None:
        self.cfg = cfg = config or SearchConfig()
        if cfg.slate_size > cfg.n_candidates:
            raise ValueError(f"slate_size={cfg.slate_size} exceeds n_candidates={cfg.n_candidates}")
        w = cfg.weights
        most = cfg.slate_size * (w.click + w.dwell * 60.0 / w.dwell_scale)
        if w.clip is not None and not (w.clip[0] <= 0.0 and most <= w.clip[1]):
            raise ValueError(
                f"weights.clip={w.clip} could bind (rewards span [0, {most:.2f}]): expectations would be inexact"
            )
        self.catalogue = catalogue or make_catalogue(cfg.n_items, cfg.n_providers, 0.0, seed=cfg.catalogue_seed)
        self.examination = (np.arange(cfg.slate_size) + 1.0) ** -cfg.position_decay
        self.slates = all_slates(cfg.n_candidates, cfg.slate_size)
        self.rng = np.random.default_rng()
        self.user: User | None = None

    def reset(self, *, seed: int | None = None) -> str:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.user = make_user(self.rng)
        self.asked = 0
        self._new_query()
        return self.observation()

    def _new_query(self) -> None:
        user, k = self._user(), self.cfg.n_candidates
        self.topic = int(self.rng.choice(len(TOPICS), p=user.interests))
        self.tone = int(self.rng.integers(len(TONES)))
        on_topic = np.flatnonzero(self.catalogue.topic_onehot[:, self.topic])
        n_on = min(k // 2, len(on_topic))
        first = self.rng.choice(on_topic, size=n_on, replace=False)
        rest = self.rng.choice(np.setdiff1d(np.arange(len(self.catalogue)), first), size=k - n_on, replace=False)
        self.candidates = self.rng.permutation(np.concatenate([first, rest]))

    def _user(self) -> User:
        if self.user is None:
            raise RuntimeError("call reset() before step()")
        return self.user

    @property
    def candidate_ids(self) -> list[str]:
        return [self.catalogue.items[i].id for i in self.candidates]

    def numeric(self) -> tuple[np.ndarray, np.ndarray]:
        """(query + user context [Du + T + tones], candidate features [K, Di])."""
        user_ctx, feats = numeric_view(self._user(), self.catalogue, self.candidates)
        query = np.concatenate([np.eye(len(TOPICS))[self.topic], np.eye(len(TONES))[self.tone]])
        return np.concatenate([user_ctx, query]), feats

    def grades(self) -> np.ndarray:
        """Relevance of every candidate to the current query. [K]"""
        return relevance(self.catalogue, self.candidates, self.topic, self.tone)

    def _params(self, idx: np.ndarray) -> tuple[np.ndarray, dict, np.ndarray]:
        """(attractiveness, click-model parameters, reward per click) for ranked catalogue indices ``idx`` [..., L]."""
        g = relevance(self.catalogue, idx, self.topic, self.tone)
        q = self.catalogue.quality[idx]
        attract = (2.0**g - 1.0) / 2.0**MAX_GRADE + 0.02
        sat = q * g / MAX_GRADE
        w = self.cfg.weights
        per_click = w.click + w.dwell * (10.0 + 50.0 * sat) / w.dwell_scale
        params = {"examination": self.examination, "satisfaction": sat, "gamma": self.cfg.gamma}
        return attract, params, per_click

    def slate_values(self, slates: np.ndarray | None = None) -> np.ndarray:
        """Exact expected reward of each ranking (rows of candidate positions). [S]"""
        slates = self.slates if slates is None else np.asarray(slates)
        attract, params, per_click = self._params(self.candidates[slates])
        return (click_probs(self.cfg.click_model, attract, **params) * per_click).sum(axis=-1)

    def step(self, action: str) -> tuple[str | None, float, bool, dict]:
        user, cfg = self._user(), self.cfg
        ranking = parse_slate(action, self.candidate_ids, cfg.slate_size)
        values = self.slate_values()
        idx = self.candidates[ranking]
        attract, params, _ = self._params(idx)
        clicks = sample_clicks(cfg.click_model, attract, self.rng, **params)
        dwell = 10.0 + 50.0 * params["satisfaction"]
        events = [e for k in np.flatnonzero(clicks) for e in ({"type": "click"}, {"type": "dwell", "value": dwell[k]})]
        reward = engagement_score(events, cfg.weights)
        info = {
            "slate": [self.catalogue.items[i].id for i in idx],
            "items": idx.tolist(),
            "clicks": clicks.tolist(),
            "events": events,
            "relevance": relevance(self.catalogue, idx, self.topic, self.tone).tolist(),
            "candidate_relevance": self.grades().tolist(),
            "expected_reward": float(self.slate_values(np.array([ranking]))[0]),
            "oracle_reward": float(values.max()),
            "random_reward": float(values.mean()),
            "user": user.id,
            "group": user.group,
        }
        self.asked += 1
        if self.asked >= cfg.queries:
            return None, reward, True, info
        self._new_query()
        return self.observation(), reward, False, info

    def context(self) -> tuple[str, list[str]]:
        """(persona + query, the candidate documents' texts)."""
        head = f"User: {self._user().persona()}\nQuery: {TONES[self.tone]} {TOPICS[self.topic]}"
        return head, [self.catalogue.items[i].text() for i in self.candidates]

    def observation(self) -> str:
        head, items = self.context()
        return "\n".join([head, f"Documents (answer with {self.cfg.slate_size} ids, most relevant first):", *items])
