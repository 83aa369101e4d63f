"""`translate`: English-like sentences → a rule-based target language.

    translate: the cheap kettle loves the great lamp =>
    → val occ wors non ran

The source is ``the [ADJ] NOUN VERBs the [ADJ] NOUN`` (adjectives optional). The target language is a deterministic
transform of it, three rules:

1. lexicon: every content word has one target word (``LEXICON``); articles have none;
2. word order: subject – object – verb (SOV), adjectives after their noun;
3. inflection: the object noun takes the accusative suffix ``-s``.

Words on both sides are one token each of the built-in tokenizer (the suffix is a second token). Seeded train/test
splits share no source sentence. Reward: sentence chrF (``rewards.text_metrics.chrf``: character n-grams, so a
missing suffix costs little and a wrong word more); ``bleu`` is the word-level alternative. A reward of 1
(``eval/accuracy``) is an exact translation.
"""

from __future__ import annotations

import random

from rewardloop.envs.base import Example

NOUNS = {
    "blender": "ket", "toaster": "mon", "kettle": "val", "headset": "sec", "backpack": "ter", "lamp": "wor",
    "keyboard": "fab", "umbrella": "cla", "mug": "dic", "camera": "rep", "jacket": "sle", "speaker": "mot",
    "watch": "targ", "blanket": "pri",
}  # fmt: skip
ADJECTIVES = {
    "great": "non", "cheap": "occ", "solid": "imp", "weak": "ign", "soft": "fra", "poor": "umb", "perfect": "stur",
    "fine": "bul",
}  # fmt: skip
VERBS = {"love": "ran", "hate": "rot", "use": "dig", "buy": "mid", "clean": "tex"}  # source form: stem + "s"
LEXICON = NOUNS | ADJECTIVES | VERBS
ACCUSATIVE = "s"


def translate(subject: tuple[str | None, str], verb: str, obj: tuple[str | None, str]) -> str:
    """The target sentence for (adjective or None, noun) subject, verb stem and object, by the three rules."""

    def phrase(adj: str | None, noun: str, suffix: str = "") -> list[str]:
        return [NOUNS[noun] + suffix] + ([ADJECTIVES[adj]] if adj else [])  # rule 2: adjective after the noun

    return " ".join([*phrase(*subject), *phrase(*obj, ACCUSATIVE), VERBS[verb]])  # rules 2 (SOV) and 3


def _source(subject: tuple[str | None, str], verb: str, obj: tuple[str | None, str]) -> str:
    def phrase(adj: str | None, noun: str) -> str:
        return f"the {adj} {noun}" if adj else f"the {noun}"

    return f"{phrase(*subject)} {verb}s {phrase(*obj)}"


def make_translate_splits(
    seed: int = 0, n_train: int = 4000, n_test: int = 200, adjective_rate: float = 0.5
) -> tuple[list[Example], list[Example]]:
    """Disjoint train/test sentence pairs; each noun has an adjective with probability ``adjective_rate``."""
    if not 0.0 <= adjective_rate <= 1.0:
        raise ValueError(f"task.adjective_rate must be in [0, 1], got {adjective_rate}")
    rng = random.Random(seed)

    def noun_phrase() -> tuple[str | None, str]:
        return (rng.choice(list(ADJECTIVES)) if rng.random() < adjective_rate else None), rng.choice(list(NOUNS))

    seen: set[str] = set()
    pairs: list[Example] = []
    tries = 50 * (n_train + n_test)  # bounded: adjective_rate 0 or 1 leaves fewer distinct sentences
    for _ in range(tries):
        subject, verb, obj = noun_phrase(), rng.choice(list(VERBS)), noun_phrase()
        source = _source(subject, verb, obj)
        if source not in seen:
            seen.add(source)
            answer = translate(subject, verb, obj)
            pairs.append(Example(f"translate: {source} =>", answer, {"completion": " " + answer}))
        if len(pairs) == n_train + n_test:
            break
    if len(pairs) < n_train + n_test:
        raise ValueError(f"could not draw {n_train + n_test} distinct sentences in {tries} tries")
    return pairs[n_test:], pairs[:n_test]
