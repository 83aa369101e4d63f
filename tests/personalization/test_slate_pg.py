"""The slate policy-gradient maths by hand: Plackett–Luce log-probabilities in torch, the top-K off-policy correction
(Chen et al. 2019), the ε-mixed behaviour probabilities, the losses' gradient directions; the head starts as the LM."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from rewardloop.algorithms.bandits import n_slates
from rewardloop.algorithms.slate_pg import LOSSES, ItemFeatures, ScoringHead, SlatePGConfig, plackett_luce_sample
from rewardloop.ops import item_entropy, item_probs, pl_log_probs, plackett_luce_log_prob, topk_multiplier, topk_weights


def test_pl_log_probs_by_hand_and_as_the_numpy_version():
    scores = torch.log(torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]))
    got = pl_log_probs(scores, torch.tensor([[2, 1], [0, 1]])).exp()
    assert got.tolist() == pytest.approx([3 / 6 * 2 / 3, 1 / 6 * 2 / 5])
    s = np.array([0.3, -1.0, 2.0, 0.5])
    t = pl_log_probs(torch.tensor(s[None]), torch.tensor([[3, 0, 2]]), temperature=0.7)
    assert t.item() == pytest.approx(plackett_luce_log_prob(s, np.array([3, 0, 2]), temperature=0.7))


def test_topk_correction_by_hand():
    # λ_L = L (1 − π)^(L−1): π = 0.5, L = 3 → 3 · 0.25; L = 1 is plain REINFORCE (λ = 1)
    assert topk_multiplier(torch.tensor(0.5), 3).item() == pytest.approx(0.75)
    assert topk_multiplier(torch.tensor(0.9), 1).item() == pytest.approx(1.0)
    # weight = min(π/β, c̄) · λ: π = 0.2, β = 0.01 → ratio 20 capped at 10, λ = 3 · 0.8² = 1.92
    w = topk_weights(torch.tensor([[0.2, 0.2]]), torch.tensor([[0.01, 0.4]]), 3, cap=10.0)
    assert w.tolist()[0] == pytest.approx([10 * 1.92, 0.5 * 1.92])
    # the multiplier is the derivative of α = 1 − (1 − π)^L, the chance a is among L draws
    pi = torch.tensor(0.3, requires_grad=True)
    (1 - (1 - pi) ** 4).backward()
    assert pi.grad.item() == pytest.approx(topk_multiplier(torch.tensor(0.3), 4).item())


def test_epsilon_mixed_behaviour_probabilities():
    assert item_probs(np.array([0.0, math.log(3.0)]), epsilon=0.5).tolist() == pytest.approx([0.375, 0.625])
    assert item_entropy(torch.zeros(1, 4)).item() == pytest.approx(math.log(4))
    s, rng = np.array([0.3, -1.0, 2.0, 0.5]), np.random.default_rng(1)
    draws = [plackett_luce_sample(s, 2, rng, epsilon=0.3) for _ in range(20000)]
    freq = Counter(tuple(slate.tolist()) for slate, _ in draws)
    props = {tuple(slate.tolist()): p for slate, p in draws}
    assert len(freq) == n_slates(4, 2)  # ε reaches every slate
    for slate, count in freq.items():
        expected = 0.7 * math.exp(plackett_luce_log_prob(s, np.array(slate))) + 0.3 / 12
        assert props[slate] == pytest.approx(expected)
        assert count / len(draws) == pytest.approx(expected, abs=0.01), slate


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_each_loss_raises_the_score_of_a_rewarded_item(loss):
    """One logged slate [0, 1] from a uniform behaviour policy; item 0 was rewarded (A > 0), item 1 not (A < 0)."""
    scores = torch.zeros(1, 4, requires_grad=True)
    batch = {
        "slates": torch.tensor([[0, 1]]),
        "log_beta_slate": torch.log(torch.tensor([1 / 12])),
        "beta": torch.tensor([[0.25, 0.25]]),
        "adv": torch.tensor([[1.0, -0.5]]),
        "adv_slate": torch.tensor([0.5]),
    }
    LOSSES[loss](scores, batch, SlatePGConfig()).backward()
    grad = scores.grad[0]
    assert grad[0] < 0 and grad[0] < grad[2]  # gradient descent raises s_0 the most
    if loss == "topk":
        assert grad[1] > 0  # the unrewarded shown item goes down


def test_head_starts_as_the_plain_lm_scores():
    f = ItemFeatures(np.array([-1.0, -2.0, -0.5]), np.ones(4, dtype=np.float32), np.ones((3, 4), dtype=np.float32))
    assert ScoringHead(4, 2).score(f).tolist() == pytest.approx(f.logp.tolist())


@pytest.mark.slow
def test_training_raises_the_exact_expected_reward_over_the_untrained_lm_policy():
    """``rewardloop personalize`` with ``policies=[lm-untrained, lm]``: the head trained on 1600 feed steps of
    training users (seeds 10000+) lowers the exact normalised regret on evaluation users (seed 0) well below the
    untrained LM policy's (the collection rounds themselves explore at T = 1, ε = 0.1, so their reward is noisy)."""
    from rewardloop.personalize import PersonalizeConfig, compare

    train = SlatePGConfig(rounds=4, steps_per_round=400, rank=32, lr=1e-2, epochs=2)
    result = compare(PersonalizeConfig(env="feed", steps=300, seeds=1, policies=["lm-untrained", "lm"], train=train))
    s, history = result["summary"], result["train"]["history"]
    assert s["lm"]["regret"][0] < s["lm-untrained"]["regret"][0] - 0.2
    assert len(history) == 4 and all(np.isfinite(h["loss"]) for h in history)
    assert result["train"]["steps"] == 1600 and result["train"]["cpu_s"] > 0
