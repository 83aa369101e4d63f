"""Hand-computed checks of the policy-gradient family's pure maths (algorithms/grpo.py)."""

from __future__ import annotations

import math

import pytest
import torch

from rewardloop.algorithms import grpo
from rewardloop.algorithms.grpo import (
    ESTIMATORS,
    EstimatorInputs,
    GRPOConfig,
    grpo_advantages,
    overlong_penalty,
    pg_loss,
    reinforce_pp_advantages,
    rloo_advantages,
    zero_variance,
)
from rewardloop.types import Rollout

R = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0])  # two groups of G = 4
GID = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])


def test_grpo_advantages_group_mean_over_unbiased_std():
    # group 1: mean 0.25, std = sqrt((0.75² + 3·0.25²)/3) = 0.5 → [1.5, −0.5, −0.5, −0.5]
    # group 2: mean 0.5, std = sqrt(4·0.25/3) = 1/sqrt(3) → ±0.5·sqrt(3)
    h = 0.5 * math.sqrt(3)
    expected = torch.tensor([1.5, -0.5, -0.5, -0.5, h, h, -h, -h])
    torch.testing.assert_close(grpo_advantages(R, GID, eps=0.0), expected)


def test_dr_grpo_is_mean_centred_without_std():
    expected = torch.tensor([0.75, -0.25, -0.25, -0.25, 0.5, 0.5, -0.5, -0.5])
    torch.testing.assert_close(grpo_advantages(R, GID, scale_std=False), expected)


def test_rloo_leave_one_out_baseline():
    # r_i − mean of the other three
    expected = torch.tensor([1.0, -1 / 3, -1 / 3, -1 / 3, 2 / 3, 2 / 3, -2 / 3, -2 / 3])
    torch.testing.assert_close(rloo_advantages(R, GID), expected)


def test_zero_variance_group_has_zero_advantage_everywhere():
    r = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    g = torch.tensor([0, 0, 0, 1, 1, 1])
    for a in (grpo_advantages(r, g), grpo_advantages(r, g, scale_std=False), rloo_advantages(r, g)):
        assert a[:3].abs().max() == 0 and a[3:].abs().max() == 0
    assert zero_variance(r, g).tolist() == [True] * 6
    assert zero_variance(R, GID).tolist() == [False] * 8


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo"])
def test_estimators_group_by_id_not_row_order(name):
    """A shuffled batch, or one with a group filtered out, gives every sample the same advantage as before."""
    torch.manual_seed(0)
    r, gid = torch.rand(12), torch.tensor([7, 7, 7, 2, 2, 2, 9, 9, 9, 4, 4, 4])
    mask = torch.ones(12, 2)

    def adv(idx):
        x = EstimatorInputs(r=r[idx], mask=mask[idx], kl=torch.zeros(len(idx), 2), group_ids=gid[idx],
                            kl_reward_coef=0.0, eps=1e-6)  # fmt: skip
        return ESTIMATORS[name](x)[:, 0]

    base = adv(torch.arange(12))
    perm = torch.randperm(12)
    torch.testing.assert_close(adv(perm), base[perm])  # shuffled rows, interleaved groups
    kept = (gid != 2).nonzero().squeeze(1)
    torch.testing.assert_close(adv(kept), base[kept])  # one group filtered out
    # And grouping really is by id: treating the batch as consecutive groups of 3 after shuffling would differ.
    assert not torch.allclose(adv(perm), base)


def test_reinforce_pp_kl_in_reward_then_batch_whitened():
    r = torch.tensor([1.0, 0.0])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    kl = torch.full((2, 3), 0.5)
    # token rewards −0.1·0.5 each, +r at the last real token; returns-to-go:
    # seq 1: [−0.05+0.95, 0.95] = [0.9, 0.95];  seq 2: [−0.15, −0.10, −0.05]
    returns = [0.9, 0.95, -0.15, -0.10, -0.05]
    mean = sum(returns) / 5
    std = math.sqrt(sum((x - mean) ** 2 for x in returns) / 4)  # Bessel, as ops.masked_var
    w = [(x - mean) / std for x in returns]
    expected = torch.tensor([[w[0], w[1], 0.0], [w[2], w[3], w[4]]])
    torch.testing.assert_close(reinforce_pp_advantages(r, kl, mask, beta=0.1), expected, atol=1e-5, rtol=1e-5)


def test_estimator_table_broadcasts_outcome_advantages_to_tokens():
    mask = torch.ones(8, 3)
    mask[0, 2] = 0
    x = EstimatorInputs(r=R, mask=mask, kl=torch.zeros(8, 3), group_ids=GID, kl_reward_coef=0.0, eps=1e-6)
    assert set(ESTIMATORS) == {"grpo", "dr_grpo", "rloo", "reinforce_pp"}
    adv = ESTIMATORS["dr_grpo"](x)
    assert adv.shape == (8, 3)
    torch.testing.assert_close(adv[0], torch.tensor([0.75, 0.75, 0.0]))
    torch.testing.assert_close(ESTIMATORS["rloo"](x)[5], torch.full((3,), 2 / 3))


def _cfg(**kw) -> GRPOConfig:
    return GRPOConfig(gen={"max_new_tokens": 4}, **kw)


ADV = torch.tensor([[1.0, 1.0, 0.0], [2.0, 2.0, 2.0]])
MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])


@pytest.mark.parametrize(
    "agg, expected",
    [
        ("token-mean", -8 / 5),  # Σ(−Â)/Σmask over the 5 real tokens
        ("seq-mean", -1.5),  # mean of the per-sequence means −1 and −2
        ("constant", -8 / (2 * 4)),  # Σ(−Â) / (B · max_new_tokens), Dr.GRPO
    ],
)
def test_loss_aggregation(agg, expected):
    logp = torch.zeros(2, 3)  # ρ = 1: the loss is −Â per token
    loss, stats = pg_loss(logp, logp, ADV, MASK, _cfg(loss_agg=agg))
    assert loss.item() == pytest.approx(expected)
    assert stats["clip_frac"] == 0.0


def test_clip_higher_uses_asymmetric_bounds():
    old = torch.zeros(1, 2)
    logp = torch.log(torch.tensor([[1.5, 0.5]]))  # ρ = 1.5 (Â = +1) and 0.5 (Â = −1)
    adv = torch.tensor([[1.0, -1.0]])
    mask = torch.ones(1, 2)
    sym, _ = pg_loss(logp, old, adv, mask, _cfg(clip_eps_low=0.2))
    high, stats = pg_loss(logp, old, adv, mask, _cfg(clip_eps_low=0.2, clip_eps_high=0.28))
    # token 1: −min(1.5, 1+ε_high)·1;  token 2: −min(−0.5, −0.8) = 0.8
    assert sym.item() == pytest.approx((-1.2 + 0.8) / 2)
    assert high.item() == pytest.approx((-1.28 + 0.8) / 2)
    assert stats["clip_frac"] == 1.0


def test_k3_kl_term_added_with_beta():
    logp = torch.zeros(1, 2)
    ref = torch.full((1, 2), math.log(2.0))  # π_ref/π = 2 → k3 = 2 − 1 − ln 2
    adv = torch.zeros(1, 2)
    loss, stats = pg_loss(logp, logp, adv, torch.ones(1, 2), _cfg(kl_coef=0.1), ref_logp=ref)
    k3 = 1 - math.log(2)
    assert stats["kl_k3"] == pytest.approx(k3, rel=1e-5)
    assert loss.item() == pytest.approx(0.1 * k3, rel=1e-5)


def test_overlong_penalty_soft_ramp_and_truncation():
    lengths = torch.tensor([3, 4, 5, 8])
    finished = torch.tensor([True, True, True, False])
    # L_max = 8, L_cache = 4: 0 up to 4 tokens, then (4 − |y|)/4 down to −1 at 8
    assert overlong_penalty(lengths, 8, 4, finished).tolist() == [0.0, 0.0, -0.25, -1.0]
    assert overlong_penalty(lengths, 8, 0, finished).tolist() == [0.0, 0.0, 0.0, -1.0]


def test_impute_invalid_uses_group_mean_of_valid_samples():
    r = torch.tensor([1.0, 0.0, 5.0, 0.0, 0.0, 0.0])
    valid = torch.tensor([True, True, False, False, False, False])
    g = torch.tensor([0, 0, 0, 1, 1, 1])
    assert grpo.impute_invalid(r, valid, g).tolist() == [1.0, 0.0, 0.5, 0.0, 0.0, 0.0]


def _fake_rollout(rewards: list[float], group_start: int = 0) -> Rollout:
    B = len(rewards)
    return Rollout(
        prompt_ids=torch.ones(B, 2, dtype=torch.long),
        prompt_mask=torch.ones(B, 2, dtype=torch.long),
        response_ids=torch.ones(B, 3, dtype=torch.long),
        response_mask=torch.ones(B, 3, dtype=torch.long),
        logprobs=torch.zeros(B, 3),
        finished=torch.ones(B, dtype=torch.bool),
        prompts=[f"p{i}" for i in range(B)],
        responses=[f"r{i}" for i in range(B)],
        rewards=torch.tensor(rewards),
        group_ids=group_start + torch.arange(B) // 2,
        valid=torch.ones(B, dtype=torch.bool),
        components={"task": torch.tensor(rewards)},
        rows=[{"prompt": f"p{i}"} for i in range(B)],
    )


def test_dynamic_sampling_drops_zero_variance_groups_and_refills(monkeypatch):
    batches = iter([[0.0, 0.0, 1.0, 0.0], [1.0, 1.0, 0.0, 1.0], [0.0, 1.0, 1.0, 1.0]])  # groups of G = 2
    calls = []

    def fake_collect(*args, **kwargs):
        calls.append(kwargs["samples_per_prompt"])
        return _fake_rollout(next(batches), kwargs["group_start"])

    monkeypatch.setattr(grpo, "collect_step", fake_collect)

    class Tok:
        pad_token_id = 0

    cfg = GRPOConfig(prompts_per_step=2, group_size=2, dynamic_sampling=True, max_sampling_tries=5)
    ro, stats = grpo.collect_groups(None, Tok(), lambda: [{"prompt": "x"}] * 2, None, None, cfg, None, [0])
    # round 1 keeps group [1, 0] (drops [0, 0]); round 2 keeps [0, 1] (drops [1, 1]); N = 2 reached
    assert len(calls) == 2 and stats["sampling_tries"] == 2
    assert stats["frac_zero_var_groups"] == pytest.approx(0.5)
    assert ro.rewards.tolist() == [1.0, 0.0, 0.0, 1.0]
    assert ro.responses == ["r2", "r3", "r2", "r3"]
    assert ro.group_ids.tolist() == [1, 1, 3, 3]  # round 2 drew groups 2 and 3: fresh ids, no collision

    cfg_off = GRPOConfig(prompts_per_step=2, group_size=2, dynamic_sampling=False)
    batches = iter([[0.0, 0.0, 1.0, 0.0]])
    ro, stats = grpo.collect_groups(None, Tok(), lambda: [{"prompt": "x"}] * 2, None, None, cfg_off, None, [0])
    assert len(ro) == 4 and stats["frac_zero_var_groups"] == 0.5


def test_config_rejects_overlong_buffer_not_below_max_tokens():
    with pytest.raises(ValueError, match="overlong_buffer"):
        GRPOConfig(gen={"max_new_tokens": 4}, overlong_buffer=4)
