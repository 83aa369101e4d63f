"""Training the LM's own weights with the slate policy gradient (``algorithms.slate_lm``): the text rows by hand, the
tuner's scores equal to the frozen reading, gradient reaching the LM, the logged features read again; and (slow) that
``lm-tuned`` training moves the LM's weights and lowers the exact regret."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rewardloop.algorithms.slate_lm import LMTuner, text_index
from rewardloop.algorithms.slate_pg import LMSlatePolicy, LoggedStep, ScoringHead, lm_states

CONTEXT = "User: Ann likes chess.\nRecent:\n- (new session)"
ITEMS = ["[i001] chess, calm", "[i002] jazz, funny", "[i003] golf, calm"]


def test_text_index_by_hand():
    texts, contexts, items = text_index([("a", ["x", "y"]), ("b", ["y", "a"]), ("a", ["x", "z"])])
    assert texts == ["a", "b", "x", "y", "z"]  # the contexts first, then the items' new texts
    assert contexts.tolist() == [0, 1, 0]
    assert items.tolist() == [[2, 3], [3, 0], [2, 4]]


def logged_steps(model, tokenizer, n: int = 3) -> list[LoggedStep]:
    policy = LMSlatePolicy(model, tokenizer, read="towers", context="persona", record=True)
    for t in range(n):
        policy.select_text(CONTEXT, ITEMS[t % 2 :] + ITEMS[: t % 2], 2, np.random.default_rng(t))
        policy.update(None, None, None, np.array([1.0, 0.0]))
    return policy.steps


def test_tuner_scores_match_the_frozen_reading_and_reach_the_lm(tiny_model, tokenizer):
    model = tiny_model("llama-1m", seed=3)
    steps = logged_steps(model, tokenizer)
    assert steps[0].texts == ("User: Ann likes chess.", ITEMS)  # the persona line: what the LM read
    head = ScoringHead(model.config.hidden_size, 2)
    head.fit_projection(torch.randn(8, model.config.hidden_size), torch.randn(8, 3, model.config.hidden_size))
    with torch.no_grad():
        head.W.copy_(torch.tensor([[1.0, -2.0], [0.5, 1.0]])), head.v.copy_(torch.tensor([0.3, -0.7]))
    tuner = LMTuner(model, tokenizer, lm_states)
    batch = tuner.index(steps)
    scores = tuner.scores(head, batch)  # [3, 3]
    frozen = np.stack([head.score(s.features) for s in steps])
    assert scores.detach().numpy() == pytest.approx(frozen, abs=1e-4)
    scores[:, 0].sum().backward()
    assert all(p.grad is not None for p in model.get_input_embeddings().parameters())
    with pytest.raises(ValueError, match="logged step 1 has no texts"):
        tuner.index([steps[0], LoggedStep(steps[0].features, *[getattr(steps[0], k) for k in ("slate", "propensity", "beta", "rewards")])])  # fmt: skip


def test_refresh_reads_the_logged_texts_with_the_moved_lm(tiny_model, tokenizer):
    model = tiny_model("llama-1m", seed=4)
    steps = logged_steps(model, tokenizer)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.1)
    before = steps[1].features.h_items.copy()
    LMTuner(model, tokenizer, lm_states).refresh(steps)
    moved = lm_states(model, tokenizer, [steps[1].texts[0], *steps[1].texts[1]])
    assert not np.allclose(before, steps[1].features.h_items, atol=1e-4)
    assert steps[1].features.h_context == pytest.approx(moved[0], abs=1e-4)
    assert steps[1].features.h_items == pytest.approx(moved[1:], abs=1e-4)


@pytest.mark.slow
def test_lm_tuned_training_moves_the_lm_weights_and_lowers_the_exact_regret(tokenizer):
    """``lm-tuned`` on a short budget: 3 rounds × 300 feed steps of training users (persona context), the top-K
    policy gradient flowing into the LM's weights; then 600 steps of evaluation user 0 with the neural-linear layer
    (prior from the re-read training logs, online updates). The LM's weights move, and the trained policy's exact
    regret is far below random level (1; the untrained LM policy scores ≈ 0.99). Measured: weights moved by 0.63
    (sum of per-tensor norms), regret 0.503. (The exploring rounds' own regret, at T = 1, stays ≈ 1.0 this early.)"""
    from rewardloop.algorithms.slate_pg import NeuralLinearConfig, SlatePGConfig, load_lm
    from rewardloop.personalize import PersonalizeConfig, run_policy, train_lm

    train = SlatePGConfig(
        rounds=3, steps_per_round=300, rank=16, epochs=1, batch_size=256, lm_lr=3e-5, context="persona"
    )
    cfg = PersonalizeConfig(steps=600, seeds=1, policies=["lm-tuned"], train=train, online=NeuralLinearConfig(rank=16))
    lm = train_lm(cfg)
    before = load_lm(train, tokenizer).state_dict()
    moved = sum(float((p - before[k]).norm()) for k, p in lm["tuned"]["model"].state_dict().items())
    tuned = run_policy("feed", "lm-tuned", 600, 0, lm)["regret"]
    assert moved > 0.1
    assert tuned < 0.7
