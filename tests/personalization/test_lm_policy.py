"""The language-model slate policy's maths: Plackett–Luce probabilities by hand, Gumbel-top-k draws at the logged
propensity, and LM item scores that do not depend on the padding of the batch."""

from __future__ import annotations

from collections import Counter
from itertools import permutations

import numpy as np
import pytest
import torch

from rewardloop.algorithms.slate_pg import LMSlatePolicy, lm_item_scores, plackett_luce_sample
from rewardloop.ops import plackett_luce_log_prob


def test_plackett_luce_by_hand_and_normalised():
    scores = np.log([1.0, 2.0, 3.0])
    assert np.exp(plackett_luce_log_prob(scores, np.array([2, 1]))) == pytest.approx(3 / 6 * 2 / 3)
    assert np.exp(plackett_luce_log_prob(scores, np.array([0, 1, 2]))) == pytest.approx(1 / 6 * 2 / 5)
    s = np.array([0.3, -1.0, 2.0, 0.5])
    total = sum(np.exp(plackett_luce_log_prob(s, np.array(p), temperature=0.7)) for p in permutations(range(4), 2))
    assert total == pytest.approx(1.0)


def test_gumbel_top_k_draws_match_the_logged_propensity():
    s, rng = np.array([0.3, -1.0, 2.0, 0.5]), np.random.default_rng(0)
    draws = [plackett_luce_sample(s, 2, rng) for _ in range(20000)]
    freq = Counter(tuple(slate.tolist()) for slate, _ in draws)
    props = {tuple(slate.tolist()): p for slate, p in draws}
    for slate, count in freq.items():
        assert count / len(draws) == pytest.approx(props[slate], abs=0.01), slate


def test_lm_item_scores_ignore_padding(tiny_llama, tokenizer):
    context = "User likes chess."
    items = ["[i001] chess tricks", "[i002] A quiet look at cooking today", "[i003] jazz"]
    batched = lm_item_scores(tiny_llama, tokenizer, context, items, normalise=False)
    for item, score in zip(items, batched, strict=True):
        prompt = tokenizer(context, add_special_tokens=False)["input_ids"]
        text = tokenizer("\n" + item, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = tiny_llama(torch.tensor([prompt + text])).logits[0, len(prompt) - 1 : -1]  # predicts the item
        alone = torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(text)[:, None]).sum().item()
        assert score == pytest.approx(alone, abs=1e-4)
    choice = LMSlatePolicy(tiny_llama, tokenizer).select_text(context, items, 2, np.random.default_rng(0))
    assert len(set(choice.slate.tolist())) == 2
    scores = lm_item_scores(tiny_llama, tokenizer, context, items)
    assert choice.propensity == pytest.approx(np.exp(plackett_luce_log_prob(scores, choice.slate)))


def test_lm_policy_runs_on_the_feed_through_run_bandit(tiny_llama, tokenizer):
    """The LM policy scores persona + history against each candidate and logs its propensities; a context longer
    than the model's positions is an error."""
    from rewardloop.algorithms.bandits import run_bandit
    from rewardloop.envs.personalization import FeedEnv

    with pytest.raises(ValueError, match="exceeds the model's 512 positions"):
        lm_item_scores(tiny_llama, tokenizer, "x " * 600, ["[i001] chess"])
    env = FeedEnv()
    log = run_bandit(env, LMSlatePolicy(tiny_llama, tokenizer), 8, seed=0)
    assert len(log) == 8
    assert all(0.0 < r["propensity"] <= 1.0 and len(set(r["slate"].tolist())) == 3 for r in log)
    head, items = env.context()
    assert head.startswith("User: ") and len(items) == env.cfg.n_candidates and items[0] in env.observation()
