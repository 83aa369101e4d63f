"""`reviews`: write a positive, on-topic product review. ``Review of the blender:`` → `` the motor is great. ...``

Reviews are generated from a small grammar: 14 products with 4 aspects each, sentence templates per sentiment
(positive / neutral / negative; "mixed" joins a positive and a negative sentence with ", but"), adjective banks and
a few connectives — lowercase, 2–3 sentences, about 8–25 words. The SFT split mixes sentiments (mostly not
positive), so a model trained on it is far from what the task rewards; RL from the annotator's preferences (PPO on
a reward model, DPO on its pairs) has to move it toward positive, on-topic, fluent text.

``SimulatedAnnotator`` stands in for human raters: a latent, noiseless utility (formula in ``score_review``) decides
its preferences, and each label flips with probability ``noise``. ``reviews_reward`` exposes the same utility as a
RewardFn scaled to [-1, 1] (the gold reward, for evaluation or as a verifiable-reward baseline).
"""

from __future__ import annotations

import itertools
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from rewardloop.envs.base import DatasetEnv, Example, Observation

# ---------------------------------------------------------------------------------------------------------------
# Vocabulary and grammar
# ---------------------------------------------------------------------------------------------------------------

# Every aspect belongs to exactly one product, so a mentioned aspect is either on- or off-topic for a prompt.
PRODUCTS: dict[str, tuple[str, ...]] = {
    "blender": ("motor", "jar", "blade", "lid"),
    "toaster": ("slot", "lever", "timer", "tray"),
    "kettle": ("spout", "handle", "switch", "filter"),
    "headset": ("sound", "bass", "cushion", "microphone"),
    "backpack": ("zipper", "pocket", "fabric", "padding"),
    "lamp": ("bulb", "shade", "base", "dimmer"),
    "keyboard": ("layout", "backlight", "cord", "spacebar"),
    "umbrella": ("canopy", "frame", "grip", "clasp"),
    "blanket": ("stitching", "warmth", "softness", "weight"),
    "mug": ("glaze", "rim", "ceramic", "capacity"),
    "camera": ("lens", "shutter", "battery", "flash"),
    "jacket": ("hood", "sleeve", "lining", "collar"),
    "speaker": ("volume", "bluetooth", "charger", "grille"),
    "watch": ("strap", "dial", "crown", "buckle"),
}
SENTIMENTS = ("positive", "neutral", "negative", "mixed")
ADJECTIVES: dict[str, tuple[str, ...]] = {
    "positive": ("great", "excellent", "solid", "sturdy", "reliable", "perfect", "impressive", "superb"),
    "neutral": ("okay", "average", "fine", "acceptable", "ordinary", "standard"),
    "negative": ("terrible", "awful", "flimsy", "weak", "useless", "disappointing", "poor", "cheap"),
}
# Slots: {p} product, {a}/{b} two different aspects, {x} an adjective of the template's sentiment.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "positive": (
        "the {a} is {x}.",
        "the {a} and the {b} are {x}.",
        "the {a} feels {x}.",
        "i love the {a}.",
        "this {p} works perfectly.",
        "the {p} is {x} for the price.",
        "i would buy this {p} again.",
        "highly recommend this {p}.",
    ),
    "neutral": (
        "the {a} is {x}.",
        "the {a} and the {b} are {x}.",
        "the {a} feels {x}.",
        "the {p} does the job.",
        "the {a} works as expected.",
        "nothing special about the {a}.",
        "i use the {p} every day.",
    ),
    "negative": (
        "the {a} is {x}.",
        "the {a} and the {b} are {x}.",
        "the {a} feels {x}.",
        "i hate the {a}.",
        "the {p} stopped working after a week.",
        "i would not buy this {p} again.",
        "do not buy this {p}.",
        "the {p} is a waste of money.",
    ),
}
CONNECTIVES = ("also", "overall")  # sentence openers: "also, the jar is solid."
# Sentiment lexicon: phrase (as words) → +1 / -1; longest match wins, so "would not buy" is not read as "would buy".
LEXICON: dict[tuple[str, ...], int] = {
    **{(w,): 1 for w in ADJECTIVES["positive"]},
    **{(w,): -1 for w in ADJECTIVES["negative"]},
    ("love",): 1,
    ("works", "perfectly"): 1,
    ("would", "buy"): 1,
    ("highly", "recommend"): 1,
    ("hate",): -1,
    ("stopped", "working"): -1,
    ("would", "not", "buy"): -1,
    ("do", "not", "buy"): -1,
    ("waste", "of", "money"): -1,
}
NEGATIONS = frozenset({"not", "never"})  # "not great" scores -1
# Function words: repeating them is not repetition ("the motor is great. the jar is solid.").
STOPWORDS = frozenset(
    {"the", "a", "an", "is", "are", "this", "i", "and", "but", "of", "for", "it", "after", "about", "every", "as"}
    | {"also", "overall", "not", "do", "does", "would"}
)

_TOKEN = re.compile(r"[a-z]+|\S")  # words, and every other non-space character as its own token
_SLOT = re.compile(r"\{[a-z]\}")
_PROMPT = re.compile(r"review of the ([a-z]+)\s*:", re.IGNORECASE)


def tokenize(text: str) -> list[str]:
    """Lowercased word and punctuation tokens: ``"The jar, ok."`` → ``["the", "jar", ",", "ok", "."]``."""
    return _TOKEN.findall(text.lower())


def review_prompt(product: str) -> str:
    """The task prompt for ``product``: ``"Review of the blender:"``."""
    if product not in PRODUCTS:
        raise ValueError(f"unknown product {product!r}; known: {sorted(PRODUCTS)}")
    return f"Review of the {product}:"


def _slot_fillers(slot: str) -> tuple[str, ...]:
    """Every word a template slot can hold (any sentiment's adjective, any product's aspect)."""
    if slot == "{p}":
        return tuple(PRODUCTS)
    if slot in ("{a}", "{b}"):
        return tuple(a for aspects in PRODUCTS.values() for a in aspects)
    return tuple(w for words in ADJECTIVES.values() for w in words)


def _template_tokens(template: str) -> list[str]:
    return re.findall(r"\{[a-z]\}|[a-z]+|\S", template)


def _expand(token: str) -> tuple[str, ...]:
    return _slot_fillers(token) if _SLOT.fullmatch(token) else (token,)


@lru_cache(maxsize=1)
def grammar_bigrams() -> frozenset[tuple[str, str]]:
    """Every adjacent token pair the review grammar can produce (the fluency reference)."""
    pairs: set[tuple[str, str]] = set()
    starts: set[str] = set()
    ends: set[str] = set()  # the word before a sentence's final "."
    for template in {t for ts in TEMPLATES.values() for t in ts}:
        toks = _template_tokens(template)
        starts.update(_expand(toks[0]))
        ends.update(_expand(toks[-2]))
        for left, right in itertools.pairwise(toks):
            pairs.update((x, y) for x in _expand(left) for y in _expand(right))
    # Joins: ". <start>", ". also , <start>", "<end> , but <start>".
    pairs.update((".", s) for s in starts)
    pairs.update((".", c) for c in CONNECTIVES)
    pairs.update((c, ",") for c in CONNECTIVES)
    pairs.update((",", s) for s in starts)
    pairs.update((e, ",") for e in ends)
    pairs.update({(",", "but")} | {("but", s) for s in starts})
    return frozenset(pairs)


@lru_cache(maxsize=1)
def vocabulary() -> frozenset[str]:
    """Every token a review can contain; anything else is an unknown token to the annotator."""
    return frozenset(tok for pair in grammar_bigrams() for tok in pair)


# ---------------------------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------------------------


def _content_words(template: str) -> set[str]:
    return {t for t in _template_tokens(template) if t.isalpha() and t not in STOPWORDS}


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
        out.append({"prompt": data["prompt"], "product": data.get("product") or _product_of(data["prompt"])})
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
# Utility (the annotator's latent, noiseless quality)
# ---------------------------------------------------------------------------------------------------------------

MIN_WORDS, MAX_WORDS = 6, 35  # reviews outside this length lose fluency
U_MAX = 7.5  # positivity 3 + topic 2 + fluency 2.5 + repetition 0
U_MIN = -14.0  # positivity -3 + topic -3 + fluency -4 + repetition -4; also the utility of empty text


@dataclass(frozen=True)
class ReviewScore:
    """The four utility components (see ``score_review``) and their sum."""

    positivity: float
    topic: float
    fluency: float
    repetition: float

    @property
    def total(self) -> float:
        return self.positivity + self.topic + self.fluency + self.repetition


def _clip(x: float, lo: float, hi: float) -> float:
    return max(lo, min(hi, x))


def _sentiment_count(words: list[str]) -> int:
    """Σ lexicon polarity over a greedy longest-match scan; a phrase right after "not"/"never" flips sign."""
    longest = max(len(k) for k in LEXICON)
    total, i = 0, 0
    while i < len(words):
        for n in range(min(longest, len(words) - i), 0, -1):
            polarity = LEXICON.get(tuple(words[i : i + n]))
            if polarity is not None:
                total += -polarity if i > 0 and words[i - 1] in NEGATIONS else polarity
                i += n
                break
        else:
            i += 1
    return total


def _topic(words: list[str], product: str) -> float:
    own = set(PRODUCTS[product]) & set(words)
    other_products = {p for p in PRODUCTS if p != product} & set(words)
    off_aspects = {a for p, aspects in PRODUCTS.items() if p != product for a in aspects} & set(words)
    mentioned = product in words or bool(own)
    score = (1.0 if mentioned else -1.0) + 0.5 * min(len(own), 2) - 1.0 * len(other_products) - 0.5 * len(off_aspects)
    return _clip(score, -3.0, 2.0)


def _fluency(tokens: list[str], n_words: int) -> float:
    bigrams = list(itertools.pairwise(tokens))
    coverage = sum(b in grammar_bigrams() for b in bigrams) / len(bigrams) if bigrams else 0.0
    unknown = sum(t not in vocabulary() for t in tokens)
    length_penalty = 0.25 * max(0, MIN_WORDS - n_words) + 0.1 * max(0, n_words - MAX_WORDS)
    # Centred and weighted so word salad or shuffled text (coverage ≈ 0.1–0.65) loses about what positivity gains.
    score = 0.5 * (tokens[-1] == ".") + 4.0 * coverage - 2.0 - 0.5 * unknown - length_penalty
    return _clip(score, -4.0, 2.5)


def _repetition(tokens: list[str], words: list[str]) -> float:
    content = Counter(w for w in words if w not in STOPWORDS)
    trigrams = Counter(zip(tokens, tokens[1:], tokens[2:], strict=False))
    repeats = sum(c - 1 for c in content.values()) + sum(c - 1 for c in trigrams.values())
    return _clip(-0.5 * repeats, -4.0, 0.0)


def _text_of(value: Observation) -> str:
    """Plain text of a prompt/completion; conversational values use the last message's content."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and isinstance(value[-1], dict) and "content" in value[-1]:
        return str(value[-1]["content"])
    raise ValueError(f"reviews: expected a string or a list of chat messages, got {value!r}")


def _product_of(prompt: Observation) -> str:
    text = _text_of(prompt)
    match = _PROMPT.search(text)
    if match is None or match.group(1).lower() not in PRODUCTS:
        raise ValueError(
            f"reviews: no known product in prompt {text!r}; expected 'Review of the <product>:' "
            f"with <product> one of {sorted(PRODUCTS)}"
        )
    return match.group(1).lower()


def score_review(prompt: Observation, text: Observation) -> ReviewScore:
    """The latent utility of ``text`` as a review for ``prompt``, by component (``.total`` in [U_MIN, U_MAX]).

    Tokens are lowercased words and single punctuation characters; n = number of words.

    - positivity = clip(#positive − #negative lexicon phrases, −3, 3); "not"/"never" before a phrase flips it
    - topic = clip(±1 (+1 if the prompt's product or one of its aspects is named, else −1)
      + 0.5·min(#own aspects, 2) − 1·#other products − 0.5·#other products' aspects, −3, 2)
    - fluency = clip(0.5·[ends with "."] + 4·(share of token bigrams the grammar can produce) − 2
      − 0.5·#unknown tokens − 0.25·max(0, 6 − n) − 0.1·max(0, n − 35), −4, 2.5)
    - repetition = clip(−0.5·(#repeated content words + #repeated token trigrams), −4, 0)

    Text with no words (empty, whitespace or punctuation only) gets every component's minimum, so total = U_MIN.
    """
    product = _product_of(prompt)
    tokens = tokenize(_text_of(text))
    words = [t for t in tokens if t.isalpha()]
    if not words:
        return ReviewScore(positivity=-3.0, topic=-3.0, fluency=-4.0, repetition=-4.0)
    return ReviewScore(
        positivity=_clip(float(_sentiment_count(words)), -3.0, 3.0),
        topic=_topic(words, product),
        fluency=_fluency(tokens, len(words)),
        repetition=_repetition(tokens, words),
    )


def reviews_reward(prompts: list[Any], completions: list[Any], **_: Any) -> list[float]:
    """Gold reward (RewardFn): utility / U_MAX clipped to [-1, 1]; 1 = best review, ≤ -1 for garbage or empty text."""
    return [_clip(score_review(p, c).total / U_MAX, -1.0, 1.0) for p, c in zip(prompts, completions, strict=True)]


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
