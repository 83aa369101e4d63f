"""`reviews`: write a positive, on-topic product review. ``Review of the blender:`` → `` the motor is great. ...``

Reviews are generated from the review grammar of ``rewardloop.rewards.reviews`` (products and their aspects, sentence
templates per sentiment, adjective banks, connectives) — lowercase, 2–3 sentences, about 8–25 words. The SFT split
mixes sentiments (mostly not positive), so a model trained on it is far from what the task rewards; RL from the
annotator's preferences (PPO on a reward model, DPO on its pairs) has to move it toward positive, on-topic, fluent
text.

``SimulatedAnnotator`` stands in for human raters: a latent, noiseless utility (``rewards.reviews.score_review``)
decides its preferences, and each label flips with probability ``noise``. ``reviews_reward`` (same module) exposes
the same utility as a RewardFn scaled to [-1, 1] (the gold reward, for evaluation or as a verifiable-reward baseline).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from rewardloop.envs.base import DatasetEnv, Example
from rewardloop.rewards.reviews import (
    ADJECTIVES,
    CONNECTIVES,
    PRODUCTS,
    SENTIMENTS,
    STOPWORDS,
    TEMPLATES,
    product_of,
    review_prompt,
    reviews_reward,
    score_review,
    template_tokens,
    tokenize,
    vocabulary,
)
from rewardloop.types import Observation

# ---------------------------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------------------------


def _content_words(template: str) -> set[str]:
    return {t for t in template_tokens(template) if t.isalpha() and t not in STOPWORDS}


def _sentence(rng: random.Random, product: str, sentiment: str, state: dict[str, Any]) -> str | None:
    """One sentence that repeats no product, aspect, adjective or template word already in the review.

    ``state["used"]``: content words so far; ``state["off_topic"]``: swap the next aspect for another product's.
    """
    aspects_left = [a for a in PRODUCTS[product] if a not in state["used"]]
    adjectives_left = [x for x in ADJECTIVES[sentiment] if x not in state["used"]]
    options = [
        t
        for t in TEMPLATES[sentiment]
        if not _content_words(t) & state["used"]
        and not ("{p}" in t and product in state["used"])
        and len(aspects_left) >= ("{a}" in t) + ("{b}" in t)
        and (adjectives_left or "{x}" not in t)
    ]
    if not options:
        return None
    template = rng.choice(options)
    aspects = rng.sample(aspects_left, ("{a}" in template) + ("{b}" in template))
    if state["off_topic"] and aspects:
        state["off_topic"] = False
        other = rng.choice([p for p in PRODUCTS if p != product])
        aspects[0] = rng.choice(PRODUCTS[other])
    fill = {"p": product, "x": rng.choice(adjectives_left) if adjectives_left else ""}
    fill.update(zip("ab", aspects, strict=False))
    text = template.format(**fill) if "{" in template else template
    state["used"].update(w for w in tokenize(text) if w not in STOPWORDS)
    return text


def make_review(rng: random.Random, product: str, sentiment: str, *, off_topic_rate: float = 0.1) -> str:
    """A 2–3 sentence template review of ``product`` (no leading space) with the given sentiment.

    ``mixed`` is a positive and a negative sentence joined by ", but" (plus maybe a neutral one). With probability
    ``off_topic_rate`` one aspect is taken from another product. No content word is repeated within a review.
    """
    if product not in PRODUCTS:
        raise ValueError(f"unknown product {product!r}; known: {sorted(PRODUCTS)}")
    if sentiment not in SENTIMENTS:
        raise ValueError(f"unknown sentiment {sentiment!r}; allowed: {list(SENTIMENTS)}")
    state: dict[str, Any] = {"used": set(), "off_topic": rng.random() < off_topic_rate}
    if sentiment == "mixed":
        # With nothing used yet, a positive and a negative sentence always exist.
        pair = [_sentence(rng, product, s, state) or "" for s in ("positive", "negative")]
        rng.shuffle(pair)
        sentences = [f"{pair[0].removesuffix('.')}, but {pair[1]}"]
        if rng.random() < 0.4:
            sentences.append(_sentence(rng, product, "neutral", state))
    else:
        n = rng.choice((2, 2, 3))
        sentences = [_sentence(rng, product, sentiment, state) for _ in range(n)]
    sentences = [s for s in sentences if s]
    if len(sentences) > 1 and rng.random() < 0.35:  # at most one connective, "overall" only on the last sentence
        connective = rng.choice(CONNECTIVES)
        i = len(sentences) - 1 if connective == "overall" else rng.randrange(1, len(sentences))
        sentences[i] = f"{connective}, {sentences[i]}"
    return " ".join(sentences)


# Sentiment mix of the SFT split: mostly not positive, so the SFT model is far from what the task rewards.
SPLIT_SENTIMENT_WEIGHTS = {"negative": 0.35, "neutral": 0.25, "mixed": 0.15, "positive": 0.25}


def _example(rng: random.Random, weights: dict[str, float]) -> Example:
    product = rng.choice(list(PRODUCTS))
    sentiment = rng.choices(list(weights), weights=list(weights.values()))[0]
    review = make_review(rng, product, sentiment)
    # The completion starts with a space: prompt + answer is the full text "Review of the blender: the motor ...".
    return Example(review_prompt(product), " " + review, {"product": product, "sentiment": sentiment})


def make_reviews_splits(
    seed: int = 0, n_train: int = 2000, n_test: int = 200, sentiment_weights: dict[str, float] | None = None
) -> tuple[list[Example], list[Example]]:
    """SFT rows ``Example(prompt, answer=" <review>", columns={"product", "sentiment"})`` for train and test.

    Deterministic for ``seed``. Both splits cover all products (the prompt *is* the product, so prompts are shared);
    test reviews come from their own random stream and never occur in the train split.
    """
    if n_train < 0 or n_test < 0:
        raise ValueError(f"n_train and n_test must be >= 0, got n_train={n_train}, n_test={n_test}")
    weights = dict(SPLIT_SENTIMENT_WEIGHTS if sentiment_weights is None else sentiment_weights)
    bad = {k: v for k, v in weights.items() if k not in SENTIMENTS or v < 0}
    if bad or not sum(weights.values()) > 0:
        raise ValueError(f"sentiment_weights {weights} invalid: keys in {list(SENTIMENTS)}, values >= 0, sum > 0")
    train_rng, test_rng = random.Random(f"reviews/train/{seed}"), random.Random(f"reviews/test/{seed}")
    train = [_example(train_rng, weights) for _ in range(n_train)]
    seen = {e.answer for e in train}
    test: list[Example] = []
    for _ in range(100 * n_test + 100):
        if len(test) == n_test:
            break
        example = _example(test_rng, weights)
        if example.answer not in seen:
            seen.add(example.answer)
            test.append(example)
    if len(test) < n_test:
        raise ValueError(f"could only draw {len(test)} test reviews not in the train split (asked {n_test})")
    return train, test


def reviews_prompts(rows: Sequence[Example | dict[str, Any]]) -> list[dict[str, str]]:
    """RL prompt rows ``{"prompt", "product"}`` (one per split row, order kept) from Examples or row dicts."""
    out = []
    for i, row in enumerate(rows):
        data = row.as_row() if isinstance(row, Example) else row
        if "prompt" not in data:
            raise ValueError(f"reviews row {i}: missing field 'prompt' (got fields {sorted(data)})")
        out.append({"prompt": data["prompt"], "product": data.get("product") or product_of(data["prompt"])})
    return out


def reviews_corpus() -> list[str]:
    """Text covering every word of the task (prompts, every template, every aspect and adjective), deterministic."""
    lines = [review_prompt(p) for p in PRODUCTS]
    words = [w for ws in ADJECTIVES.values() for w in ws]
    for product, aspects in PRODUCTS.items():
        lines += [f"the {a} is {w}." for a in aspects for w in words]
        for sentiment, templates in TEMPLATES.items():
            for t in templates:
                fill = {"p": product, "a": aspects[0], "b": aspects[1], "x": ADJECTIVES[sentiment][0]}
                lines.append(t.format(**fill) if "{" in t else t)
    rng = random.Random("reviews/corpus")
    for _ in range(300):
        product = rng.choice(list(PRODUCTS))
        lines.append(review_prompt(product) + " " + make_review(rng, product, rng.choice(SENTIMENTS)))
    lines += [f"{c}, the {PRODUCTS['blender'][0]} is fine, but the jar is weak." for c in CONNECTIVES]
    return lines


# ---------------------------------------------------------------------------------------------------------------
# Simulated annotator
# ---------------------------------------------------------------------------------------------------------------


class SimulatedAnnotator:
    """A rater whose preferences follow ``utility`` but flip with probability ``noise`` (seeded)."""

    def __init__(self, noise: float = 0.1, seed: int = 0) -> None:
        if not 0.0 <= noise <= 1.0:
            raise ValueError(f"noise must be in [0, 1], got {noise}")
        self.noise = noise
        self._rng = random.Random(seed)

    def utility(self, prompt: Observation, text: Observation) -> float:
        """Latent, noiseless quality of ``text`` for ``prompt`` (``score_review(prompt, text).total``)."""
        return score_review(prompt, text).total

    def gold_prefer(self, prompt: Observation, a: Observation, b: Observation) -> float:
        """Noiseless judgement in ``prefer``'s index convention: 0.0 if a is better, 1.0 if b is, 0.5 on a tie."""
        ua, ub = self.utility(prompt, a), self.utility(prompt, b)
        return 0.5 if ua == ub else float(ub > ua)

    def prefer(self, prompt: Observation, a: Observation, b: Observation) -> int:
        """Index of the preferred text (0 → a, 1 → b): utility decides, ties at random, then a flip w.p. noise."""
        gold = self.gold_prefer(prompt, a, b)
        choice = self._rng.randrange(2) if gold == 0.5 else int(gold)
        return 1 - choice if self._rng.random() < self.noise else choice

    def preference_pairs(
        self, prompts: Sequence[Observation], texts_a: Sequence[Observation], texts_b: Sequence[Observation]
    ) -> list[dict[str, Any]]:
        """TRL-style rows ``{"prompt", "chosen", "rejected"}`` labelled by ``prefer``; pairs with a == b are skipped."""
        if not len(prompts) == len(texts_a) == len(texts_b):
            raise ValueError(f"lengths differ: {len(prompts)} prompts, {len(texts_a)} texts_a, {len(texts_b)} texts_b")
        rows = []
        for prompt, a, b in zip(prompts, texts_a, texts_b, strict=True):
            if a == b:
                continue
            chosen, rejected = (a, b) if self.prefer(prompt, a, b) == 0 else (b, a)
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
        return rows


def gold_win_rate(
    annotator: SimulatedAnnotator,
    prompts: Sequence[Observation],
    policy_texts: Sequence[Observation],
    baseline_texts: Sequence[Observation],
) -> float:
    """Mean over pairs of 1 (policy text better), 0.5 (tie) or 0 (baseline better), by noiseless utility."""
    if not len(prompts) == len(policy_texts) == len(baseline_texts) or not prompts:
        raise ValueError(
            f"need equal, non-zero lengths: {len(prompts)} prompts, {len(policy_texts)} policy_texts, "
            f"{len(baseline_texts)} baseline_texts"
        )
    wins = [1.0 - annotator.gold_prefer(p, a, b) for p, a, b in zip(prompts, policy_texts, baseline_texts, strict=True)]
    return sum(wins) / len(wins)


def degrade_review(rng: random.Random, text: str, product: str) -> str:
    """A worse version of a review: shuffled words, a stutter, truncation, word salad or an off-topic sentence."""
    words = text.split()
    kind = rng.choice(("shuffle", "stutter", "truncate", "salad", "off_topic"))
    if kind == "shuffle":
        rng.shuffle(words)
    elif kind == "stutter":
        i = rng.randrange(len(words))
        words[i:i] = [words[i]] * rng.randint(2, 3)
    elif kind == "truncate":
        words = words[: rng.randint(1, max(1, len(words) - 2))]
    elif kind == "salad":
        words = rng.sample(sorted(vocabulary()), rng.randint(4, 12))
    else:
        other = rng.choice([p for p in PRODUCTS if p != product])
        words += f"the {other} is {rng.choice(ADJECTIVES['neutral'])}.".split()
    return " ".join(words)


def annotator_pairs_from_templates(seed: int = 0, n: int = 1000, *, noise: float = 0.1) -> list[dict[str, Any]]:
    """``n`` noisy preference rows ``{"prompt", "chosen", "rejected"}`` over template reviews (completions start
    with a space): half compare two sentiments for the same product, half a review with a degraded copy of it."""
    rng = random.Random(f"reviews/pairs/{seed}")
    annotator = SimulatedAnnotator(noise=noise, seed=seed)
    rows: list[dict[str, Any]] = []
    while len(rows) < n:
        product = rng.choice(list(PRODUCTS))
        sentiment = rng.choice(SENTIMENTS)
        a = make_review(rng, product, sentiment)
        if rng.random() < 0.5:
            b = make_review(rng, product, rng.choice([s for s in SENTIMENTS if s != sentiment]))
        else:
            b = degrade_review(rng, a, product)
        rows += annotator.preference_pairs([review_prompt(product)], [" " + a], [" " + b])
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------------------------------------------


class ReviewsEnv(DatasetEnv):
    """Single-step environment: observation ``"Review of the <product>:"``, action = the review, reward =
    ``reviews_reward`` (gold utility / U_MAX in [-1, 1]); ``info`` carries the raw utility and its components."""

    def __init__(self, products: Sequence[str] | None = None, *, seed: int = 0) -> None:
        chosen = list(PRODUCTS) if products is None else list(products)
        super().__init__([{"prompt": review_prompt(p), "product": p} for p in chosen], reviews_reward, seed=seed)

    def step(self, action: str) -> tuple[Observation | None, float, bool, dict]:
        obs, reward, done, info = super().step(action)
        score = score_review(info["row"]["prompt"], action)
        return obs, reward, done, {**info, "utility": score.total, "score": score}
