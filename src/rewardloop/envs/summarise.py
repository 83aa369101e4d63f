"""`summarise`: pick the key fact out of a short document and state it in one short sentence.

    summarise: the spout feels cheap . overall the kettle is great . my old lamp was weak . summary:
    → the kettle is great

A document is ``n_sentences`` sentences about one product: exactly one verdict sentence (``overall the {p} is
{v}``) at a random position, the others distractors — the product's parts with their own adjectives, other products
with theirs — so the summary needs the right product *and* the verdict's adjective, not any adjective seen. Words
come from the review grammar (``rewards.reviews``: products, their parts, sentiment adjectives), each one token of
the built-in tokenizer. Seeded train/test splits share no document.

Reward: ROUGE-L F1 of the summary against the reference (``rewards.text_metrics.rouge_l``, Lin 2004); a reward of 1
(what ``eval/accuracy`` counts) is an exact summary, ``eval/reward`` the mean ROUGE-L F1.
"""

from __future__ import annotations

import random

from rewardloop.envs.base import Example
from rewardloop.rewards.reviews import ADJECTIVES, PRODUCTS

VERDICT = "overall the {p} is {v}"
DISTRACTORS = (
    "the {a} is {x}",  # a part of the product, with an adjective that is not the verdict
    "the {a} feels {x}",
    "my old {q} was {x}",  # another product
    "the {q} is {x} too",
)
ALL_ADJECTIVES = tuple(x for xs in ADJECTIVES.values() for x in xs)


def _document(rng: random.Random, n: int) -> Example:
    p, v = rng.choice(list(PRODUCTS)), rng.choice(ALL_ADJECTIVES)
    sentences = [VERDICT.format(p=p, v=v)]
    for template in rng.sample(DISTRACTORS * 2, n - 1):
        fill = {
            "a": rng.choice(PRODUCTS[p]),
            "q": rng.choice([q for q in PRODUCTS if q != p]),
            "x": rng.choice([x for x in ALL_ADJECTIVES if x != v]),
        }
        sentences.append(template.format(**fill))
    rng.shuffle(sentences)
    answer = f"the {p} is {v}"
    prompt = "summarise: " + " . ".join(sentences) + " . summary:"
    return Example(prompt=prompt, answer=answer, columns={"completion": " " + answer})


def make_summarise_splits(
    seed: int = 0, n_train: int = 4000, n_test: int = 200, n_sentences: tuple[int, int] = (3, 5)
) -> tuple[list[Example], list[Example]]:
    """Disjoint train/test documents of ``n_sentences[0]``..``n_sentences[1]`` sentences (one verdict, the rest
    distractors)."""
    lo, hi = n_sentences
    if not 1 <= lo <= hi <= 2 * len(DISTRACTORS) + 1:
        raise ValueError(
            f"task.n_sentences must satisfy 1 <= min <= max <= {2 * len(DISTRACTORS) + 1}, got {n_sentences}"
        )
    rng = random.Random(seed)
    seen: set[str] = set()
    docs: list[Example] = []
    tries = 50 * (n_train + n_test)  # bounded: small settings have few distinct documents
    for _ in range(tries):
        doc = _document(rng, rng.randint(lo, hi))
        if doc.prompt not in seen:
            seen.add(doc.prompt)
            docs.append(doc)
        if len(docs) == n_train + n_test:
            break
    if len(docs) < n_train + n_test:
        raise ValueError(
            f"could not draw {n_train + n_test} distinct documents in {tries} tries (n_sentences={n_sentences})"
        )
    return docs[n_test:], docs[:n_test]
