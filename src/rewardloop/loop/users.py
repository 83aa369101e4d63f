"""Simulated users: a population that chats with the served model through the real ``openai`` client and gives
feedback by hidden preferences, so the loop can be driven — and its effect measured — end to end.

Each request asks for two samples (``n=2``); the user compares them by their hidden utility (``utility(prompt,
text)``; by default the reviews task's gold score, ``rewards.reviews.score_review``), with a per-user chance of
choosing at random (``noise``), and posts the choice as pairwise feedback. ``flip=True`` makes a population that
reports the opposite of what it prefers (poisoned feedback). ``hidden_reward`` measures what the served model gives
them: the mean hidden reward of its samples.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from rewardloop.rewards.reviews import PRODUCTS, review_prompt, reviews_reward, score_review

Utility = Callable[[str, str], float]


def reviews_utility(prompt: str, text: str) -> float:
    return score_review(prompt, text).total


@dataclass
class UserPopulation:
    """``n_users`` simulated users of the server at ``base_url`` (its ``/v1``), seeded."""

    base_url: str
    model: str
    api_key: str = "unused"
    n_users: int = 8
    noise: float = 0.1
    flip: bool = False
    utility: Utility = reviews_utility
    prompts: list[str] = field(default_factory=lambda: [review_prompt(p) for p in PRODUCTS])
    max_tokens: int = 40
    seed: int = 0

    def __post_init__(self) -> None:
        import openai

        self.rng = random.Random(self.seed)
        self.client = openai.OpenAI(base_url=f"{self.base_url}/v1", api_key=self.api_key, max_retries=2, timeout=120)
        self.users = [f"user-{i}" for i in range(self.n_users)]

    def choose(self, prompt: str, a: str, b: str) -> float:
        """Pairwise value for (a, b): 1 = a better, 0 = b better — by utility, random w.p. ``noise``, flipped if
        poisoned."""
        ua, ub = self.utility(prompt, a), self.utility(prompt, b)
        better_a = self.rng.random() < 0.5 if ua == ub or self.rng.random() < self.noise else ua > ub
        return float(better_a != self.flip)

    def session(self, n_requests: int) -> int:
        """``n_requests`` two-sample requests, each answered with a pairwise choice; returns the feedback stored."""
        items = []
        for _ in range(n_requests):
            user, prompt = self.rng.choice(self.users), self.rng.choice(self.prompts)
            r = self.client.completions.create(
                model=self.model,
                prompt=prompt,
                n=2,
                max_tokens=self.max_tokens,
                temperature=1.0,
                stop=["\n"],
                user=user,
            )
            (a, b) = sorted(r.choices, key=lambda c: c.index)
            if a.text == b.text:
                continue
            ids = [c.model_extra["response_id"] for c in (a, b)]
            items.append(
                {
                    "response_id": ids[0],
                    "other_response_id": ids[1],
                    "kind": "pairwise",
                    "value": self.choose(prompt, a.text, b.text),
                    "user_id": user,
                    "idempotency_key": f"sim-{uuid.uuid4().hex}",
                }
            )
        if items:
            headers = {"Authorization": f"Bearer {self.api_key}"}
            r = httpx.post(f"{self.base_url}/v1/feedback/batch", json={"items": items}, headers=headers, timeout=60)
            r.raise_for_status()
        return len(items)

    def hidden_reward(self, n_samples: int = 64) -> float:
        """Mean hidden (gold) reward in [-1, 1] of the served model's samples on ``n_samples`` prompts."""
        prompts = [self.prompts[i % len(self.prompts)] for i in range(n_samples)]
        r = self.client.completions.create(
            model=self.model, prompt=prompts, max_tokens=self.max_tokens, temperature=1.0, stop=["\n"]
        )
        texts = [c.text for c in sorted(r.choices, key=lambda c: c.index)]
        return sum(reviews_reward(prompts, texts)) / len(prompts)
