"""A seeded catalogue of items described in text: topic, tone, length, provider and a title; quality stays hidden.

Topics are unevenly stocked (a few popular topics hold most items) and providers unevenly sized, so coverage,
exposure Gini and group disparity have something to measure. A fraction of items is *clickbait*: a hooky title and
low quality (see ``users.Behaviour.clickbait`` for what that does to a user).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

TOPICS = ("football", "cooking", "travel", "music", "finance", "astronomy", "gardening", "chess")
TONES = ("calm", "funny", "dramatic", "informative")
MAX_LENGTH_S = 180.0

_TITLES = {
    "calm": "A quiet look at {t}",
    "funny": "The funniest {t} moments of the week",
    "dramatic": "The {t} story nobody saw coming",
    "informative": "{T} explained in plain words",
}
_CLICKBAIT_TITLES = (
    "You won't BELIEVE this {t} trick!!",
    "{T} experts HATE this one secret",
    "This {t} video broke the internet",
)


@dataclass(frozen=True)
class Item:
    """One catalogue entry; ``quality`` in [0, 1] is hidden from policies (it is not in ``text``)."""

    id: str
    topic: int
    tone: int
    length_s: float
    quality: float
    provider: int
    clickbait: bool
    title: str

    def text(self) -> str:
        """The item as a policy sees it."""
        return (
            f"[{self.id}] {self.title} — {TOPICS[self.topic]}, {TONES[self.tone]}, {self.length_s:.0f} s, "
            f"by creator p{self.provider}"
        )


@dataclass
class Catalogue:
    """The items plus dense views of them: ``topic_onehot`` [N, T] and ``features`` [N, D] (public attributes only)."""

    items: list[Item]
    n_providers: int
    topics: np.ndarray = field(init=False)
    tones: np.ndarray = field(init=False)
    quality: np.ndarray = field(init=False)  # [N] hidden from policies
    providers: np.ndarray = field(init=False)  # [N]
    topic_onehot: np.ndarray = field(init=False)
    features: np.ndarray = field(init=False)
    index: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        n, n_topics, n_tones = len(self.items), len(TOPICS), len(TONES)
        self.topics = topic = np.array([it.topic for it in self.items])  # [N]
        self.tones = tone = np.array([it.tone for it in self.items])  # [N]
        self.quality = np.array([it.quality for it in self.items])
        self.providers = np.array([it.provider for it in self.items])
        self.topic_onehot = np.eye(n_topics)[topic]  # [N, T]
        self.features = np.concatenate(  # [N, T + tones + 2]
            [
                self.topic_onehot,
                np.eye(n_tones)[tone],
                np.array([[it.length_s / MAX_LENGTH_S, float(it.clickbait)] for it in self.items]).reshape(n, 2),
            ],
            axis=1,
        )
        self.index = {it.id: i for i, it in enumerate(self.items)}

    def __len__(self) -> int:
        return len(self.items)

    def lookup(self, item_id: str) -> int:
        if item_id not in self.index:
            raise ValueError(f"unknown item id {item_id!r} (catalogue has {len(self)} items, i000..)")
        return self.index[item_id]


def zipf_shares(n: int, s: float) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** s
    return w / w.sum()


def make_catalogue(
    n_items: int = 200, n_providers: int = 6, clickbait_fraction: float = 0.15, seed: int = 0
) -> Catalogue:
    """``n_items`` items; topics and providers drawn from Zipf(1) shares; quality ~ Beta(4, 2) (clickbait: U(0.05, 0.3))."""
    if n_items < 1 or n_providers < 1 or not 0.0 <= clickbait_fraction <= 1.0:
        raise ValueError(
            f"make_catalogue: need n_items ≥ 1, n_providers ≥ 1, 0 ≤ clickbait_fraction ≤ 1; got n_items={n_items}, "
            f"n_providers={n_providers}, clickbait_fraction={clickbait_fraction}"
        )
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n_items):
        topic = int(rng.choice(len(TOPICS), p=zipf_shares(len(TOPICS), 1.0)))
        tone = int(rng.integers(len(TONES)))
        clickbait = bool(rng.random() < clickbait_fraction)
        quality = float(rng.uniform(0.05, 0.3) if clickbait else rng.beta(4.0, 2.0))
        name = TOPICS[topic]
        template = _CLICKBAIT_TITLES[i % len(_CLICKBAIT_TITLES)] if clickbait else _TITLES[TONES[tone]]
        items.append(
            Item(
                id=f"i{i:03d}",
                topic=topic,
                tone=tone,
                length_s=float(rng.uniform(15.0, MAX_LENGTH_S)),
                quality=quality,
                provider=int(rng.choice(n_providers, p=zipf_shares(n_providers, 1.0))),
                clickbait=clickbait,
                title=template.format(t=name, T=name.capitalize()),
            )
        )
    return Catalogue(items=items, n_providers=n_providers)
