"""The `reviews` task: template splits, the annotator's utility and noisy preferences, the gold reward and env."""

from __future__ import annotations

import random

import pytest

from rewardloop.envs.base import Environment
from rewardloop.envs.reviews import (
    ReviewsEnv,
    SimulatedAnnotator,
    annotator_pairs_from_templates,
    degrade_review,
    gold_win_rate,
    make_review,
    make_reviews_splits,
    reviews_corpus,
    reviews_prompts,
)
from rewardloop.rewards.reviews import (
    PRODUCTS,
    SENTIMENTS,
    U_MAX,
    U_MIN,
    review_prompt,
    reviews_reward,
    score_review,
    tokenize,
    vocabulary,
)

BLENDER = "Review of the blender:"
GOOD = " highly recommend this blender. the motor and the jar are superb. the lid feels perfect."


def _reviews(sentiment: str, n: int, seed: int = 0, **kwargs) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    products = [rng.choice(list(PRODUCTS)) for _ in range(n)]
    return [review_prompt(p) for p in products], [" " + make_review(rng, p, sentiment, **kwargs) for p in products]


# --- splits and generation ---------------------------------------------------------------------------------------


def test_splits_are_deterministic_and_test_reviews_are_held_out():
    train, test = make_reviews_splits(seed=3, n_train=400, n_test=200)
    again = make_reviews_splits(seed=3, n_train=400, n_test=200)
    assert (train, test) == again
    assert make_reviews_splits(seed=4, n_train=400, n_test=200)[0] != train
    assert len(train) == 400 and len(test) == 200
    assert not {e.answer for e in train} & {e.answer for e in test}
    assert len({e.answer for e in test}) == len(test)
    for e in train + test:
        assert e.prompt == review_prompt(e.columns["product"])
        assert e.columns["sentiment"] in SENTIMENTS
        assert e.answer.startswith(" ") and not e.answer.startswith("  ")
    assert {e.columns["product"] for e in test} == set(PRODUCTS) == {e.columns["product"] for e in train}
    positive_share = sum(e.columns["sentiment"] == "positive" for e in train) / len(train)
    assert 0.15 < positive_share < 0.4  # the SFT data is mostly not what the task rewards


def test_split_arguments_are_validated():
    with pytest.raises(ValueError, match="n_train"):
        make_reviews_splits(n_train=-1)
    with pytest.raises(ValueError, match="sentiment_weights"):
        make_reviews_splits(sentiment_weights={"happy": 1.0})


def test_template_reviews_are_fluent_unrepeated_and_sized():
    train, _ = make_reviews_splits(seed=0, n_train=1000, n_test=0)
    for e in train:
        score = score_review(e.prompt, e.answer)
        tokens = tokenize(e.answer)
        assert set(tokens) <= vocabulary(), e.answer
        assert score.repetition == 0.0, e.answer
        assert score.fluency == 2.5, e.answer  # every bigram is in the grammar and it ends with "."
        assert 6 <= sum(t.isalpha() for t in tokens) <= 35, e.answer


@pytest.mark.parametrize(("sentiment", "sign"), [("positive", 1), ("negative", -1), ("neutral", 0), ("mixed", 0)])
def test_make_review_sentiment_sets_positivity(sentiment, sign):
    prompts, texts = _reviews(sentiment, 200, off_topic_rate=0.0)
    for prompt, text in zip(prompts, texts, strict=True):
        positivity = score_review(prompt, text).positivity
        assert (positivity > 0) - (positivity < 0) == sign, text


def test_make_review_rejects_unknown_product_and_sentiment():
    with pytest.raises(ValueError, match="toothbrush"):
        make_review(random.Random(0), "toothbrush", "positive")
    with pytest.raises(ValueError, match="ecstatic"):
        make_review(random.Random(0), "blender", "ecstatic")


def test_off_topic_rate_adds_other_products_aspects():
    prompts, texts = _reviews("positive", 100, off_topic_rate=1.0)
    assert all(score_review(p, t).topic < 2.0 for p, t in zip(prompts, texts, strict=True))
    prompts, texts = _reviews("positive", 100, off_topic_rate=0.0)
    assert all(score_review(p, t).topic >= 1.5 for p, t in zip(prompts, texts, strict=True))


def test_corpus_covers_the_vocabulary_and_prompts():
    corpus = reviews_corpus()
    assert reviews_corpus() == corpus
    assert vocabulary() <= {t for line in corpus for t in tokenize(line)}
    assert {review_prompt(p) for p in PRODUCTS} <= set(corpus)


def test_reviews_prompts_keeps_order_and_products():
    train, _ = make_reviews_splits(seed=0, n_train=20, n_test=0)
    rows = reviews_prompts(train)
    assert rows == [{"prompt": e.prompt, "product": e.columns["product"]} for e in train]
    assert reviews_prompts([{"prompt": BLENDER}]) == [{"prompt": BLENDER, "product": "blender"}]
    with pytest.raises(ValueError, match="row 0"):
        reviews_prompts([{"text": "x"}])


# --- utility ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "worse",
    [
        " the motor is terrible. i hate the jar.",  # negative
        " the lens is great. i love the shutter.",  # another product's aspects
        " the toaster is great. i love the slot.",  # another product
        " the motor is great. the motor is great. the motor is great.",  # repeated sentence
        " the motor is great great great great great.",  # stutter
        " jar the great motor is love i.",  # shuffled
        " great excellent superb perfect love motor jar blender.",  # word salad
        " xq zzv qqq blorp.",  # unknown words
        " #### !!!",
        "",
        "   ",
    ],
)
def test_positive_on_topic_review_beats_worse_text(worse):
    better = " the motor is great. i love the jar."
    assert score_review(BLENDER, better).total > score_review(BLENDER, worse).total


def test_utility_bounds_and_empty_text():
    assert score_review(BLENDER, GOOD).total == U_MAX
    assert score_review(BLENDER, "").total == U_MIN
    assert score_review(BLENDER, " ...").total == U_MIN
    prompts, texts = _reviews("positive", 100)
    assert all(U_MIN < score_review(p, t).total <= U_MAX for p, t in zip(prompts, texts, strict=True))


def test_negation_flips_and_longest_phrase_wins():
    assert score_review(BLENDER, " the motor is not great.").positivity == -1
    assert score_review(BLENDER, " i would not buy this blender again.").positivity == -1
    assert score_review(BLENDER, " i would buy this blender again.").positivity == 1


def test_template_sentiments_are_ordered_on_average():
    mean = {}
    for sentiment in SENTIMENTS:
        prompts, texts = _reviews(sentiment, 300)
        mean[sentiment] = sum(score_review(p, t).total for p, t in zip(prompts, texts, strict=True)) / len(texts)
    assert mean["positive"] > mean["neutral"] > mean["negative"]
    assert mean["positive"] > mean["mixed"] > mean["negative"]


def test_unknown_prompt_raises_with_the_prompt():
    with pytest.raises(ValueError, match="Review of the toothbrush"):
        score_review("Review of the toothbrush:", " nice.")


def test_chat_messages_are_accepted():
    messages = [{"role": "user", "content": BLENDER}]
    answer = [{"role": "assistant", "content": GOOD}]
    assert score_review(messages, answer) == score_review(BLENDER, GOOD)


# --- annotator ----------------------------------------------------------------------------------------------------


def _distinct_utility_pairs(n: int) -> tuple[list[str], list[str], list[str]]:
    """n (prompt, a, b) with u(a) != u(b); a and b are template reviews of the same product."""
    rng, gold = random.Random(7), SimulatedAnnotator(noise=0.0)
    prompts, texts_a, texts_b = [], [], []
    while len(prompts) < n:
        product = rng.choice(list(PRODUCTS))
        a, b = (" " + make_review(rng, product, rng.choice(SENTIMENTS)) for _ in range(2))
        if gold.gold_prefer(review_prompt(product), a, b) != 0.5:
            prompts.append(review_prompt(product))
            texts_a.append(a)
            texts_b.append(b)
    return prompts, texts_a, texts_b


def test_noiseless_annotator_agrees_with_utility():
    annotator = SimulatedAnnotator(noise=0.0, seed=1)
    for prompt, a, b in zip(*_distinct_utility_pairs(500), strict=True):
        expected = 0 if annotator.utility(prompt, a) > annotator.utility(prompt, b) else 1
        assert annotator.prefer(prompt, a, b) == expected


def test_noisy_annotator_flips_about_noise_share():
    prompts, texts_a, texts_b = _distinct_utility_pairs(2000)
    annotator = SimulatedAnnotator(noise=0.2, seed=0)
    flips = sum(
        annotator.prefer(p, a, b) != annotator.gold_prefer(p, a, b)
        for p, a, b in zip(prompts, texts_a, texts_b, strict=True)
    )
    assert 0.17 < flips / 2000 < 0.23  # binomial sd ≈ 0.009


def test_ties_are_broken_at_random():
    annotator = SimulatedAnnotator(noise=0.0, seed=0)
    a, b = " the motor is great. i love the jar.", " the jar is great. i love the motor."
    assert annotator.gold_prefer(BLENDER, a, b) == 0.5
    picks = [annotator.prefer(BLENDER, a, b) for _ in range(200)]
    assert 50 < sum(picks) < 150


def test_annotator_is_seeded_and_validates_noise():
    pairs = list(zip(*_distinct_utility_pairs(200), strict=True))

    def labels(seed: int) -> list[int]:
        annotator = SimulatedAnnotator(noise=0.3, seed=seed)
        return [annotator.prefer(*pair) for pair in pairs]

    assert labels(5) == labels(5)
    assert labels(5) != labels(6)
    with pytest.raises(ValueError, match="noise"):
        SimulatedAnnotator(noise=1.5)


def test_preference_pairs_format_and_duplicates():
    annotator = SimulatedAnnotator(noise=0.0)
    bad = " the motor is terrible. i hate the jar."
    rows = annotator.preference_pairs([BLENDER, BLENDER, BLENDER], [GOOD, bad, GOOD], [bad, GOOD, GOOD])
    assert rows == [{"prompt": BLENDER, "chosen": GOOD, "rejected": bad}] * 2  # a == b is skipped
    with pytest.raises(ValueError, match="lengths differ"):
        annotator.preference_pairs([BLENDER], [GOOD], [])


def test_gold_win_rate():
    annotator = SimulatedAnnotator(noise=0.5)  # the gold judgement ignores label noise
    prompts, positive = _reviews("positive", 300, seed=1)
    _, negative = _reviews("negative", 300, seed=1)  # same seed → same products
    assert gold_win_rate(annotator, prompts, positive, negative) > 0.9
    assert gold_win_rate(annotator, prompts, negative, positive) < 0.1
    assert gold_win_rate(annotator, prompts, positive, positive) == 0.5
    with pytest.raises(ValueError, match="lengths"):
        gold_win_rate(annotator, prompts, positive, negative[:-1])


def test_degraded_reviews_usually_lose():
    rng, gold = random.Random(0), SimulatedAnnotator(noise=0.0)
    prompts, originals, degraded = [], [], []
    for _ in range(300):
        product = rng.choice(list(PRODUCTS))
        text = make_review(rng, product, rng.choice(SENTIMENTS))
        prompts.append(review_prompt(product))
        originals.append(text)
        degraded.append(degrade_review(rng, text, product))
    assert gold_win_rate(gold, prompts, originals, degraded) > 0.9


def test_annotator_pairs_from_templates():
    rows = annotator_pairs_from_templates(seed=2, n=300, noise=0.0)
    assert rows == annotator_pairs_from_templates(seed=2, n=300, noise=0.0)
    assert len(rows) == 300
    gold = SimulatedAnnotator(noise=0.0)
    for row in rows:
        assert set(row) == {"prompt", "chosen", "rejected"}
        assert row["chosen"] != row["rejected"] and row["chosen"].startswith(" ")
        assert gold.gold_prefer(row["prompt"], row["chosen"], row["rejected"]) <= 0.5
    noisy = annotator_pairs_from_templates(seed=2, n=1000, noise=0.3)
    wrong = sum(gold.gold_prefer(r["prompt"], r["chosen"], r["rejected"]) == 1.0 for r in noisy) / len(noisy)
    assert 0.2 < wrong < 0.35


# --- reward and environment ---------------------------------------------------------------------------------------


def test_reviews_reward_is_scaled_utility():
    rewards = reviews_reward([BLENDER] * 3, [GOOD, " the motor is terrible. i hate the jar.", ""], answer=["x"] * 3)
    assert rewards[0] == 1.0 and rewards[2] == -1.0
    assert rewards[1] == pytest.approx(score_review(BLENDER, " the motor is terrible. i hate the jar.").total / U_MAX)
    prompts, texts = _reviews("neutral", 100)
    assert all(-1.0 <= r <= 1.0 for r in reviews_reward(prompts, texts))


def test_reviews_env_contract():
    env = ReviewsEnv(seed=0)
    assert isinstance(env, Environment)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(GOOD)
    prompts = [env.reset() for _ in range(50)]
    assert set(prompts) <= {review_prompt(p) for p in PRODUCTS} and len(set(prompts)) > 5
    assert env.reset(seed=11) == ReviewsEnv(seed=0).reset(seed=11)

    env = ReviewsEnv(["blender"], seed=0)
    assert env.reset() == BLENDER
    obs, reward, done, info = env.step(GOOD)
    assert obs is None and done is True
    assert reward == reviews_reward([BLENDER], [GOOD])[0] == 1.0
    assert info["utility"] == U_MAX and info["score"].topic == 2.0 and info["row"]["product"] == "blender"
    env.reset()
    assert env.step("")[1] == -1.0
    with pytest.raises(ValueError, match="toothbrush"):
        ReviewsEnv(["toothbrush"])
