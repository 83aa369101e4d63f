"""`playlist`: sequential listening. Each step the policy picks the next track (one id) out of K candidates.

The user plays the track to the end with probability

    P(through) = σ(α·a_i + ω·(q_i − ½) + τ·[tone_i = tone] − φ·repeats_i − 1)

where ``repeats_i`` counts tracks of the same topic among the last three (listening fatigue); otherwise they skip
after ``skip_fraction`` of it. Events: ``listen_through`` + the seconds played (``watch_time``), or ``skip`` + the
seconds played. Interests and trust drift as in the feed (``users.consume``). The session ends after ``max_tracks``,
on the time budget, or when the user leaves (``leave_after_skip`` per skip). Each candidate's expected reward is
exact, so ``info`` carries the oracle's and the random pick's expected reward as in the feed.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from rewardloop.config import Section
from rewardloop.envs.personalization.catalogue import Catalogue, make_catalogue
from rewardloop.envs.personalization.common import (
    all_slates,
    clip,
    numeric_view,
    parse_slate,
    sample_candidates,
)
from rewardloop.envs.personalization.users import Behaviour, User, affinity, consume, make_user
from rewardloop.rewards.engagement import EngagementWeights, engagement_score


class PlaylistConfig(Section):
    n_items: int = Field(200, ge=2)
    n_providers: int = Field(6, ge=1)
    catalogue_seed: int = 0
    n_candidates: int = Field(6, ge=1)
    fatigue: float = Field(1.0, ge=0.0, description="φ: logit lost per same-topic track among the last three")
    skip_fraction: float = Field(0.15, ge=0.0, le=1.0, description="share of a track played before a skip")
    leave_after_skip: float = Field(0.1, ge=0.0, le=1.0)
    max_tracks: int = Field(30, ge=1)
    history: int = Field(5, ge=0)
    behaviour: Behaviour = Field(default_factory=Behaviour)
    weights: EngagementWeights = Field(default_factory=EngagementWeights)


class PlaylistEnv:
    """The playlist environment (see the module docstring); the action is one track id."""

    slate_size = 1

    def __init__(self, config: PlaylistConfig | None = None, *, catalogue: Catalogue | None = None) -> None:
        self.cfg = cfg = config or PlaylistConfig()
        self.catalogue = catalogue or make_catalogue(cfg.n_items, cfg.n_providers, 0.0, seed=cfg.catalogue_seed)
        self.slates = all_slates(cfg.n_candidates, 1)  # [K, 1]
        self.rng = np.random.default_rng()
        self.user: User | None = None

    def reset(self, *, seed: int | None = None) -> str:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.user = make_user(self.rng)
        self.time_s, self.played = 0.0, []
        self.candidates = sample_candidates(self.rng, len(self.catalogue), self.cfg.n_candidates)
        return self.observation()

    @property
    def candidate_ids(self) -> list[str]:
        return [self.catalogue.items[i].id for i in self.candidates]

    def _user(self) -> User:
        if self.user is None:
            raise RuntimeError("call reset() before step()")
        return self.user

    def numeric(self) -> tuple[np.ndarray, np.ndarray]:
        return numeric_view(self._user(), self.catalogue, self.candidates)

    def p_through(self, idx: np.ndarray) -> np.ndarray:
        """P(listen through) of catalogue items ``idx`` now. [K]"""
        user, b = self._user(), self.cfg.behaviour
        items = [self.catalogue.items[i] for i in idx]
        recent = [self.catalogue.items[i].topic for i, _ in self.played[-3:]]
        repeats = np.array([recent.count(it.topic) for it in items], dtype=float)
        q = np.array([it.quality for it in items])
        tone = np.array([it.tone == user.tone for it in items], dtype=float)
        logit = b.alpha * affinity(user, self.catalogue, idx) + b.omega * (q - 0.5) + b.tone_bonus * tone
        return 1.0 / (1.0 + np.exp(-(logit - self.cfg.fatigue * repeats - 1.0)))

    def outcome_rewards(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(reward if played through, reward if skipped) for items ``idx``. [K], [K]"""
        w = self.cfg.weights
        length = np.array([self.catalogue.items[i].length_s for i in idx])
        through = w.listen_through + w.watch_time * length / w.watch_time_scale
        skipped = w.skip + w.watch_time * self.cfg.skip_fraction * length / w.watch_time_scale
        return clip(through, w), clip(skipped, w)

    def slate_values(self, slates: np.ndarray | None = None) -> np.ndarray:
        """Exact expected reward of playing each candidate (rows of one position). [S]"""
        slates = self.slates if slates is None else np.asarray(slates)
        idx = self.candidates[slates[:, 0]]
        p = self.p_through(idx)
        through, skipped = self.outcome_rewards(idx)
        return p * through + (1.0 - p) * skipped

    def step(self, action: str) -> tuple[str | None, float, bool, dict]:
        user, cfg = self._user(), self.cfg
        (pos,) = parse_slate(action, self.candidate_ids, 1)
        values = self.slate_values()  # [K]
        item = int(self.candidates[pos])
        length = self.catalogue.items[item].length_s
        through = bool(self.rng.random() < self.p_through(np.array([item]))[0])
        fraction = 1.0 if through else cfg.skip_fraction
        events = [{"type": "listen_through" if through else "skip"}, {"type": "watch_time", "value": fraction * length}]
        consume(user, self.catalogue, item, fraction, cfg.behaviour)
        self.played.append((item, through))
        self.time_s += fraction * length
        reward = engagement_score(events, cfg.weights)
        left = (not through) and bool(self.rng.random() < cfg.leave_after_skip)
        done = left or self.time_s >= user.budget_s or len(self.played) >= cfg.max_tracks
        info = {
            "slate": [self.catalogue.items[item].id],
            "items": [item],
            "clicked": self.catalogue.items[item].id if through else None,
            "events": events,
            "expected_reward": float(values[pos]),
            "oracle_reward": float(values.max()),
            "random_reward": float(values.mean()),
            "user": user.id,
            "group": user.group,
            "left": left,
        }
        if done:
            return None, reward, True, info
        self.candidates = sample_candidates(self.rng, len(self.catalogue), cfg.n_candidates)
        return self.observation(), reward, False, info

    def context(self) -> tuple[str, list[str]]:
        """(persona + recently played, the candidate tracks' texts)."""
        user = self._user()
        lines = [f"Listener: {user.persona()}", "Recently played:"]
        recent = self.played[-self.cfg.history :] if self.cfg.history else []
        lines += [
            f"- {self.catalogue.items[i].id} ({self.catalogue.items[i].title}): {'played through' if t else 'skipped'}"
            for i, t in recent
        ] or ["- (new session)"]
        return "\n".join(lines), [self.catalogue.items[i].text() for i in self.candidates]

    def observation(self) -> str:
        head, items = self.context()
        return "\n".join([head, "Next track (answer with one id):", *items])
