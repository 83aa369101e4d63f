"""`feed`: a short-video feed. Each step the policy sees the user's persona, recent history with engagement and K
candidates, and answers with a slate of L item ids (best first).

The user examines position k with probability θ_k = (k + 1)^−decay, picks one examined item by a multinomial logit
with a no-click option (``click_models.mnl_examination_choice_probs``), watches ``f · length`` seconds, may like /
share, logs a skip when f is small; interests and trust drift (``users``). The step reward is the engagement score
of its events (``EngagementWeights``). The session ends when the time budget is spent, when the user leaves (more
likely after a slate with no click, and with low trust), or after ``max_steps``.

The simulator knows every slate's expected reward in the current state exactly (``slate_values``), so each step's
info carries the chosen slate's, the best slate's (oracle) and the uniformly random slate's expected reward: regret
is exact, not estimated. The oracle is myopic (best immediate expected reward), so with the clickbait switch on a
policy that protects trust can beat it over a session.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from rewardloop.config import Section
from rewardloop.envs.personalization.catalogue import Catalogue, make_catalogue
from rewardloop.envs.personalization.click_models import mnl_examination_choice_probs, sample_examination_choice
from rewardloop.envs.personalization.common import (
    all_slates,
    expected_clipped,
    numeric_view,
    parse_slate,
    sample_candidates,
)
from rewardloop.envs.personalization.users import Behaviour, User, consume, make_user, respond
from rewardloop.rewards.engagement import EngagementWeights, engagement_score


class FeedConfig(Section):
    n_items: int = Field(200, ge=2)
    n_providers: int = Field(6, ge=1)
    clickbait_fraction: float = Field(0.15, ge=0.0, le=1.0)
    catalogue_seed: int = 0
    n_candidates: int = Field(8, ge=1, description="K: candidates shown to the policy each step")
    slate_size: int = Field(3, ge=1, description="L: items the policy puts in the slate")
    position_decay: float = Field(0.7, ge=0.0, description="θ_k = (k + 1)^−decay: examination of position k")
    browse_s: float = Field(10.0, ge=0.0, description="seconds each slate costs on top of watch time")
    leave_no_click: float = Field(0.1, ge=0.0, le=1.0, description="P(leave) after a slate with no click")
    leave_click: float = Field(0.02, ge=0.0, le=1.0, description="P(leave) after a click")
    leave_distrust: float = Field(0.3, ge=0.0, description="extra P(leave) per unit of lost trust")
    max_steps: int = Field(50, ge=1)
    history: int = Field(5, ge=0, description="steps of history in the observation")
    behaviour: Behaviour = Field(default_factory=Behaviour)
    weights: EngagementWeights = Field(default_factory=EngagementWeights)


class FeedEnv:
    """The feed environment (see the module docstring); ``reset(seed=)`` draws a new user."""

    def __init__(self, config: FeedConfig | None = None, *, catalogue: Catalogue | None = None) -> None:
        self.cfg = cfg = config or FeedConfig()
        if cfg.slate_size > cfg.n_candidates:
            raise ValueError(f"slate_size={cfg.slate_size} exceeds n_candidates={cfg.n_candidates}")
        self.catalogue = catalogue or make_catalogue(
            cfg.n_items, cfg.n_providers, cfg.clickbait_fraction, seed=cfg.catalogue_seed
        )
        self.examination = (np.arange(cfg.slate_size) + 1.0) ** -cfg.position_decay  # [L] θ_k
        self.slates = all_slates(cfg.n_candidates, cfg.slate_size)  # [S, L]
        self.rng = np.random.default_rng()
        self.user: User | None = None
        self.candidates = np.zeros(0, dtype=int)

    # -- state --------------------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None) -> str:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.user = make_user(self.rng)
        self.time_s, self.steps, self.log = 0.0, 0, []
        self.candidates = sample_candidates(self.rng, len(self.catalogue), self.cfg.n_candidates)
        return self.observation()

    @property
    def candidate_ids(self) -> list[str]:
        return [self.catalogue.items[i].id for i in self.candidates]

    def numeric(self) -> tuple[np.ndarray, np.ndarray]:
        """(context [Du], candidate features [K, Di]): the observation's public content as numbers."""
        return numeric_view(self._user(), self.catalogue, self.candidates)

    def _user(self) -> User:
        if self.user is None:
            raise RuntimeError("call reset() before step()")
        return self.user

    # -- exact expectations ---------------------------------------------------------------------------------------
    def click_values(self) -> tuple[np.ndarray, np.ndarray]:
        """(click utility v [K], expected reward given a click E[r | click i] [K]) for the current candidates."""
        r = respond(self._user(), self.catalogue, self.candidates, self.cfg.behaviour)
        w = self.cfg.weights
        base = w.click + w.watch_time * r.watch_s / w.watch_time_scale + w.skip * r.skip
        return r.utility, expected_clipped(base, [(r.p_like, w.like), (r.p_share, w.share)], w)

    def slate_values(self, slates: np.ndarray | None = None) -> np.ndarray:
        """Exact expected step reward of each slate (rows of candidate positions) in the current state. [S]"""
        slates = self.slates if slates is None else np.asarray(slates)
        v, value = self.click_values()  # [K], [K]
        p = mnl_examination_choice_probs(v[slates], self.examination, self.cfg.behaviour.no_click_utility)  # [S, L]
        return (p * value[slates]).sum(axis=-1)

    # -- one step -----------------------------------------------------------------------------------------------
    def step(self, action: str) -> tuple[str | None, float, bool, dict]:
        user, cfg = self._user(), self.cfg
        slate = parse_slate(action, self.candidate_ids, cfg.slate_size)
        values = self.slate_values()  # [S]
        expected = float(self.slate_values(np.array([slate]))[0])
        items = self.candidates[slate]  # [L] catalogue indices
        r = respond(user, self.catalogue, items, cfg.behaviour)
        k = sample_examination_choice(r.utility, self.examination, cfg.behaviour.no_click_utility, self.rng)
        events: list[dict] = []
        if k is None:
            self.time_s += cfg.browse_s
            p_leave = cfg.leave_no_click
        else:
            events = [{"type": "click"}, {"type": "watch_time", "value": float(r.watch_s[k])}]
            events += [{"type": "like"}] if self.rng.random() < r.p_like[k] else []
            events += [{"type": "share"}] if self.rng.random() < r.p_share[k] else []
            events += [{"type": "skip"}] if r.skip[k] else []
            consume(user, self.catalogue, int(items[k]), float(r.watch_fraction[k]), cfg.behaviour)
            self.time_s += cfg.browse_s + float(r.watch_s[k])
            p_leave = cfg.leave_click
        p_leave = min(1.0, p_leave + cfg.leave_distrust * (1.0 - user.trust))
        reward = engagement_score(events, cfg.weights)
        self.steps += 1
        clicked = None if k is None else self.catalogue.items[items[k]].id
        self.log.append((clicked, events))
        left = bool(self.rng.random() < p_leave)
        done = left or self.time_s >= user.budget_s or self.steps >= cfg.max_steps
        info = {
            "slate": [self.catalogue.items[i].id for i in items],
            "items": items.tolist(),
            "clicked": clicked,
            "position": k,
            "events": events,
            "expected_reward": expected,
            "oracle_reward": float(values.max()),
            "random_reward": float(values.mean()),
            "user": user.id,
            "group": user.group,
            "left": left,
            "trust": user.trust,
        }
        if done:
            return None, reward, True, info
        self.candidates = sample_candidates(self.rng, len(self.catalogue), cfg.n_candidates)
        return self.observation(), reward, False, info

    # -- text -----------------------------------------------------------------------------------------------------
    def context(self) -> tuple[str, list[str]]:
        """(persona + recent history, the candidates' texts): the observation in the two parts an item scorer uses."""
        user, cfg = self._user(), self.cfg
        lines = [f"User: {user.persona()}", "Recent:"]
        recent = self.log[-cfg.history :] if cfg.history else []
        lines += [f"- {describe(self.catalogue, c, ev)}" for c, ev in recent] or ["- (new session)"]
        return "\n".join(lines), [self.catalogue.items[i].text() for i in self.candidates]

    def observation(self) -> str:
        head, items = self.context()
        return "\n".join([head, f"Candidates (answer with {self.cfg.slate_size} item ids, best first):", *items])


def describe(catalogue: Catalogue, clicked: str | None, events: list[dict]) -> str:
    """One history line: what was watched and how the user engaged."""
    if clicked is None:
        return "scrolled past the slate"
    item = catalogue.items[catalogue.lookup(clicked)]
    seconds = next(e["value"] for e in events if e["type"] == "watch_time")
    extra = [e["type"] for e in events if e["type"] in ("like", "share", "skip")]
    return f"watched {item.id} ({item.title}) for {seconds:.0f} s" + (f", {', '.join(extra)}" if extra else "")
