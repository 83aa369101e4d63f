"""The reviews task's language and its gold reward: what a good review of a product is, as a number.

Reviews are written in a small grammar: 14 products with 4 aspects each, sentence templates per sentiment (positive /
neutral / negative; "mixed" joins a positive and a negative sentence with ", but"), adjective banks and a few
connectives — lowercase, 2–3 sentences. ``score_review`` is the latent, noiseless utility of a text as a review for a
prompt (positivity, topic, fluency against the grammar, repetition); ``reviews_reward`` exposes it as a RewardFn
scaled to [-1, 1] (reward name ``reviews_gold``). The task itself (generation, splits, the simulated annotator, the
environment) is ``rewardloop.envs.reviews``.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from rewardloop.types import Observation

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


def template_tokens(template: str) -> list[str]:
    """A template's tokens with its slots kept whole: ``"the {a} is {x}."`` → ``["the", "{a}", "is", "{x}", "."]``."""
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
        toks = template_tokens(template)
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


def product_of(prompt: Observation) -> str:
    """The product a reviews prompt asks about (``"Review of the blender:"`` → ``"blender"``); ValueError if none."""
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
    product = product_of(prompt)
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
