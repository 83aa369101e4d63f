"""Hand-computed checks of the PPO maths: GAE, clipped losses, entropy, KL controller, reward shaping, diagnostics."""

from __future__ import annotations

import math

import pytest
import torch

from rewardloop import diagnostics
from rewardloop.algorithms.ppo import (
    PPOConfig,
    RunningMoments,
    ScoreConfig,
    adaptive_kl_update,
    packed_gae,
    ppo_loss,
    process_scores,
    shape_rewards,
)
from rewardloop.ops import clipped_policy_loss, clipped_value_loss, entropy_from_logits, gae, kl_estimate
from rewardloop.types import Rollout


def test_gae_hand_computed():
    # γ = 0.9, λ = 0.5, two tokens then padding. δ_1 = 1 + 0 − 0.5 = 0.5; δ_0 = 0 + 0.9·0.5 − 0.2 = 0.25;
    # Â_1 = 0.5, Â_0 = 0.25 + 0.9·0.5·0.5 = 0.475; R = Â + V.
    rewards = torch.tensor([[0.0, 1.0, 7.0]])
    values = torch.tensor([[0.2, 0.5, 9.0]])
    mask = torch.tensor([[1, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    assert torch.allclose(adv, torch.tensor([[0.475, 0.5, 0.0]]))
    assert torch.allclose(ret, torch.tensor([[0.675, 1.0, 0.0]]))


def test_packed_gae_equals_gae_single_turn_and_skips_env_tokens():
    torch.manual_seed(0)
    rewards, values = torch.randn(3, 5), torch.randn(3, 5)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    a1, r1 = gae(rewards, values, mask, 0.95, 0.9)
    a2, r2 = packed_gae(rewards, values, mask, 0.95, 0.9)
    assert torch.allclose(a1, a2) and torch.allclose(r1, r2)
    # Multi-turn: action, env token, action. The env token is skipped: the first action bootstraps from the second.
    r = torch.tensor([[0.0, 5.0, 1.0]])
    v = torch.tensor([[0.5, 3.0, 0.25]])
    m = torch.tensor([[1, 0, 1]])
    adv, ret = packed_gae(r, v, m, gamma=1.0, lam=1.0)
    # Â_2 = 1 − 0.25 = 0.75; Â_0 = 0 + 0.25 − 0.5 + 0.75 = 0.5 (the env token's reward 5 and value 3 are ignored).
    assert torch.allclose(adv, torch.tensor([[0.5, 0.0, 0.75]]))
    assert torch.allclose(ret, torch.tensor([[1.0, 0.0, 1.0]]))


def test_clipped_policy_loss_hand_computed():
    # ratio e^{0.5} ≈ 1.6487 > 1.2 with Â = 1: the clipped term −1.2 is the max of (−1.6487, −1.2) → loss −1.2.
    # ratio e^{−0.5} ≈ 0.6065 < 0.8 with Â = 1: max(−0.6065, −0.8) = −0.6065 (pessimistic, unclipped).
    logp = torch.tensor([[0.5, -0.5]])
    loss, clipped = clipped_policy_loss(logp, torch.zeros_like(logp), torch.ones_like(logp), 0.2)
    assert torch.allclose(loss, torch.tensor([[-1.2, -math.exp(-0.5)]]), atol=1e-6)
    assert clipped.tolist() == [[1.0, 0.0]]
    # Negative advantage: ratio 1.6487, Â = −2: max(3.2974, 2.4) = 3.2974 (not clipped).
    loss, _ = clipped_policy_loss(torch.tensor([[0.5]]), torch.zeros(1, 1), torch.tensor([[-2.0]]), 0.2)
    assert loss.item() == pytest.approx(2 * math.exp(0.5), rel=1e-6)


def test_clipped_value_loss_hand_computed():
    # V = 2, V_old = 1, R = 0, clip 0.5: unclipped (2−0)² = 4, clipped V = 1.5 → 2.25; ½·max = 2.
    loss, clipped = clipped_value_loss(torch.tensor([[2.0]]), torch.tensor([[1.0]]), torch.tensor([[0.0]]), 0.5)
    assert loss.item() == pytest.approx(2.0) and clipped.item() == 0.0
    # R = 3: unclipped (2−3)² = 1, clipped (1.5−3)² = 2.25 → ½·2.25 = 1.125, counted as clipped.
    loss, clipped = clipped_value_loss(torch.tensor([[2.0]]), torch.tensor([[1.0]]), torch.tensor([[3.0]]), 0.5)
    assert loss.item() == pytest.approx(1.125) and clipped.item() == 1.0


def test_entropy_hand_computed():
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]]])
    ent = entropy_from_logits(logits)
    assert ent[0, 0].item() == pytest.approx(math.log(4))
    assert ent[0, 1].item() == pytest.approx(0.0, abs=1e-6)


def test_adaptive_kl_controller():
    # KL 9 vs target 6: error clip(0.5, ±0.2) = 0.2; β ← 0.1·(1 + 0.2·64/1000) = 0.10128.
    assert adaptive_kl_update(0.1, 9.0, 6.0, 1000, 64) == pytest.approx(0.1 * (1 + 0.2 * 0.064))
    # KL 5.7 vs 6: error −0.05; β ← 0.1·(1 − 0.05·0.064).
    assert adaptive_kl_update(0.1, 5.7, 6.0, 1000, 64) == pytest.approx(0.1 * (1 - 0.05 * 0.064))
    # Exactly on target: unchanged.
    assert adaptive_kl_update(0.1, 6.0, 6.0, 1000, 64) == pytest.approx(0.1)


def test_kl_estimators_k1_negative_k3_nonnegative():
    logp, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-0.5, -2.5])
    assert kl_estimate(logp, ref, "k1").tolist() == pytest.approx([-0.5, 0.5])
    k3 = kl_estimate(logp, ref, "k3")
    assert k3.tolist() == pytest.approx([math.exp(0.5) - 1 - 0.5, math.exp(-0.5) - 1 + 0.5])
    assert (k3 >= 0).all()


def test_shape_rewards_places_score_on_last_action_token():
    score = torch.tensor([2.0, -1.0])
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    r = shape_rewards(score, kl, mask, beta=0.5)
    assert torch.allclose(r, torch.tensor([[-0.05, -0.1, -0.15 + 2.0], [-0.25 - 1.0, 0.0, 0.0]]))
    # Multi-turn: turn rewards stay in place; a penalty (score − Σ turn rewards) lands on the last action token.
    tok = torch.tensor([[1.0, 0.0, 0.5]])
    r = shape_rewards(torch.tensor([0.5]), torch.zeros(1, 3), torch.ones(1, 3), 0.1, tok)
    assert torch.allclose(r, torch.tensor([[1.0, 0.0, 0.5 - 1.0]]))


def test_process_scores_eos_penalty_normalisation_clip_and_invalid():
    cfg = ScoreConfig(missing_eos_penalty=1.0, normalize=True, clip=1.5)
    moments = RunningMoments()
    raw = torch.tensor([1.0, 3.0, 5.0, 100.0])
    finished = torch.tensor([True, False, True, True])
    valid = torch.tensor([True, True, True, False])
    out = process_scores(raw, finished, cfg, moments, valid)
    # After the penalty the valid scores are 1, 2, 5: mean 8/3, var (population) 26/9 (count ≈ 3 after 1e-4 prior).
    assert moments.mean == pytest.approx(8 / 3, rel=1e-3) and moments.var == pytest.approx(26 / 9, rel=1e-3)
    expected = ((torch.tensor([1.0, 2.0, 5.0]) - 8 / 3) / math.sqrt(26 / 9)).clamp(-1.5, 1.5)
    assert torch.allclose(out[:3], expected, atol=1e-3)
    assert out[3].item() == 0.0  # invalid (skipped) samples carry no score


def test_running_moments_matches_batch_statistics():
    torch.manual_seed(0)
    data = torch.randn(300) * 3 + 2
    m = RunningMoments(count=0.0, var=0.0)
    for chunk in data.split(37):
        m.update(chunk)
    assert m.mean == pytest.approx(float(data.mean()), rel=1e-5)
    assert m.var == pytest.approx(float(data.var(unbiased=False)), rel=1e-4)


def test_ppo_loss_combines_terms():
    cfg = PPOConfig(vf_coef=0.5, entropy_coef=0.1, value_clip=None)
    z = torch.zeros(1, 2)
    mask = torch.ones(1, 2)
    loss, st = ppo_loss(z, z, torch.ones(1, 2), torch.ones(1, 2), z, torch.ones(1, 2), z, mask, cfg)
    # ratio 1, Â 1 → policy loss −1; value ½(1−0)² = 0.5; entropy 1 → total −1 + 0.25 − 0.1.
    assert st["loss/policy"].item() == pytest.approx(-1.0)
    assert st["loss/value"].item() == pytest.approx(0.5)
    assert loss.item() == pytest.approx(-0.85)
    assert st["approx_kl"].item() == pytest.approx(0.0)


def _rollout(rewards, lengths=(3, 3, 3, 3)):
    B = len(rewards)
    mask = torch.zeros(B, max(lengths), dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    return Rollout(
        prompt_ids=torch.ones(B, 2, dtype=torch.long),
        prompt_mask=torch.ones(B, 2, dtype=torch.long),
        response_ids=torch.ones(B, max(lengths), dtype=torch.long),
        response_mask=mask,
        logprobs=torch.zeros(B, max(lengths)),
        finished=torch.ones(B, dtype=torch.bool),
        prompts=[f"p{i}" for i in range(B)],
        responses=[f"r{i}" for i in range(B)],
        rewards=torch.tensor(rewards),
        components={"a": torch.tensor(rewards)},
        reward_errors=[{"index": 9, "error": "boom"}],
    )


def test_sample_table_best_worst_and_errors():
    table = diagnostics.sample_table(_rollout([0.5, 2.0, -1.0, 0.0]), k=1)
    ranks = [(r["rank"], r.get("response")) for r in table]
    assert ranks[0] == ("best", "r1") and ranks[1] == ("worst", "r2")
    assert table[0]["components"]["a"] == 2.0
    assert table[-1]["rank"] == "error" and table[-1]["error"] == "boom"


def test_degeneration_warnings_fire_on_each_signal():
    text = " ".join(
        diagnostics.check_degeneration(
            {"reward/std": 0.0, "reward/mean": 1.0, "kl": -0.5, "loss/policy": 0.0, "entropy": 0.01}, n_samples=8
        )
    )
    assert "all 8 rewards" in text and "negative" in text and "exactly zero" in text and "entropy collapsed" in text
    healthy = {"reward/std": 0.3, "reward/mean": 0.1, "kl": 0.02, "loss/policy": 0.1, "entropy": 1.0}
    assert diagnostics.check_degeneration(healthy) == []
    # Length doubles while reward rises: reward-hacking warning.
    hist = [{"response/length": 10.0, "reward/mean": 0.0}] * 10 + [{"response/length": 25.0, "reward/mean": 1.0}] * 9
    assert "longer" in " ".join(diagnostics.check_degeneration({"response/length": 25.0, "reward/mean": 1.0}, hist))
    # One component dominating the reward variance.
    shares = diagnostics.component_shares({"a": [0.0, 10.0, -10.0], "b": [0.0, 0.1, 0.0]})
    assert shares["reward_share/a"] > 0.99
    assert "'a' carries" in " ".join(diagnostics.check_degeneration(shares))


def test_emit_deduplicates_per_kind():
    seen: dict[str, int] = {}
    msg = ["entropy collapsed to 0.01 nats/token: ..."]
    assert diagnostics.emit(msg, 1, seen, every=50) == msg
    assert diagnostics.emit(["entropy collapsed to 0.02 nats/token: ..."], 2, seen, every=50) == []
    assert diagnostics.emit(msg, 60, seen, every=50) == msg


def test_config_rejects_a_minibatch_larger_than_the_batch():
    from rewardloop.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="mini_batch_size=64 must be ≤ batch_size=32"):
        load_config(PPOConfig, None, ["batch_size=32", "mini_batch_size=64"])
