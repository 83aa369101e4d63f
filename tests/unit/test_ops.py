"""ops.py against hand-computed examples (the arithmetic is written out in the comments)."""

from __future__ import annotations

import math

import pytest
import torch

from rewardloop.ops import (
    accumulation_weight,
    aggregate_loss,
    clipped_policy_loss,
    clipped_value_loss,
    discounted_returns,
    entropy_from_logits,
    explained_variance,
    gae,
    kl_estimate,
    logprobs_from_logits,
    masked_mean,
    masked_sum,
    masked_var,
    masked_whiten,
)

LN2 = math.log(2.0)

# Masked entries are 1, 2, 4 (the 99s are padding): mean 7/3; squared deviations 16/9 + 1/9 + 25/9 = 14/3.
X = torch.tensor([[1.0, 2.0, 99.0], [4.0, 99.0, 99.0]])
M = torch.tensor([[1, 1, 0], [1, 0, 0]])


def close(actual, expected, atol: float = 1e-6) -> None:
    torch.testing.assert_close(torch.as_tensor(actual).float(), torch.as_tensor(expected).float(), atol=atol, rtol=0)


def test_masked_sum_and_mean():
    close(masked_sum(X, M), 7.0)
    close(masked_mean(X, M), 7.0 / 3.0)
    close(masked_mean(X, M, dim=1), [1.5, 4.0])
    close(masked_mean(X, torch.zeros_like(M)), 0.0)  # empty mask → 0, not NaN
    close(masked_mean(X, torch.tensor([[1, 1, 0], [0, 0, 0]]), dim=1), [1.5, 0.0])


def test_masked_var_biased_and_unbiased():
    close(masked_var(X, M, unbiased=False), (14.0 / 3.0) / 3.0)  # 14/9
    close(masked_var(X, M), (14.0 / 3.0) / 2.0)  # Bessel: 7/3


def test_masked_whiten():
    std = math.sqrt(7.0 / 3.0)
    expected = torch.tensor([[(1 - 7 / 3) / std, (2 - 7 / 3) / std, 0.0], [(4 - 7 / 3) / std, 0.0, 0.0]])
    close(masked_whiten(X, M), expected, atol=1e-5)  # -0.8729, -0.2182, 1.0911; padding stays 0
    close(masked_whiten(X, M, shift_mean=False), (expected + 7 / 3) * M, atol=1e-5)


def test_logprobs_from_logits():
    # probabilities [1/4, 1/2, 1/4] and [1/3, 1/3, 1/3]
    logits = torch.log(torch.tensor([[[1.0, 2.0, 1.0], [5.0, 5.0, 5.0]]]))  # [1, 2, 3]
    tokens = torch.tensor([[1, 2]])
    close(logprobs_from_logits(logits, tokens), [[math.log(0.5), math.log(1 / 3)]])
    # shifting all logits changes nothing; bf16 input is computed in float32
    close(logprobs_from_logits(logits + 100.0, tokens), [[math.log(0.5), math.log(1 / 3)]], atol=1e-5)
    assert logprobs_from_logits(logits.bfloat16(), tokens).dtype == torch.float32


def test_entropy_from_logits():
    logits = torch.log(torch.tensor([[[1.0, 1.0, 1.0, 1.0], [2.0, 1.0, 1.0, 1e-30]]]))
    # uniform over 4: ln 4;  [1/2, 1/4, 1/4, 0]: ½ ln 2 + 2 · ¼ ln 4 = 1.5 ln 2
    close(entropy_from_logits(logits), [[2 * LN2, 1.5 * LN2]], atol=1e-5)
    close(entropy_from_logits(torch.tensor([[[50.0, 0.0, 0.0]]])), [[0.0]], atol=1e-5)


def test_kl_estimators_by_hand():
    # π(x) = 1/2, π_ref(x) = 1/4 → log r = ln(1/4) − ln(1/2) = −ln 2, r = 1/2
    logp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    close(kl_estimate(logp, ref, "k1"), [LN2])
    close(kl_estimate(logp, ref, "k2"), [0.5 * LN2**2])  # 0.2402
    close(kl_estimate(logp, ref, "k3"), [0.5 - 1.0 + LN2])  # 0.1931
    # swapped: log r = +ln 2, r = 2
    close(kl_estimate(ref, logp, "k1"), [-LN2])  # k1 can be negative
    close(kl_estimate(ref, logp, "k2"), [0.5 * LN2**2])
    close(kl_estimate(ref, logp, "k3"), [2.0 - 1.0 - LN2])  # 0.3069
    same = kl_estimate(logp, logp, "k3")
    close(same, [0.0])
    with pytest.raises(ValueError, match=r"k1.*k2.*k3"):
        kl_estimate(logp, ref, "k4")


def test_kl_k1_and_k3_are_unbiased_for_the_true_kl():
    # π = [½, ½], π_ref = [0.9, 0.1]: KL(π‖π_ref) = ½ ln(0.5/0.9) + ½ ln(0.5/0.1) = 0.5108
    true_kl = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    pi, ref = torch.tensor([0.5, 0.5]), torch.tensor([0.9, 0.1])
    x = torch.multinomial(pi, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    logp, ref_logp = pi.log()[x], ref.log()[x]
    assert abs(kl_estimate(logp, ref_logp, "k1").mean().item() - true_kl) < 0.01
    assert abs(kl_estimate(logp, ref_logp, "k3").mean().item() - true_kl) < 0.01
    assert (kl_estimate(logp, ref_logp, "k3") >= 0).all()


def test_gae_hand_worked_with_a_padded_row():
    gamma, lam = 0.9, 0.8  # γλ = 0.72
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 5.0]])  # the 5.0 sits on padding and must be ignored
    values = torch.tensor([[0.5, 0.6, 0.7], [1.0, 0.5, 9.0]])  # so must the 9.0
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma, lam)
    # row 0: δ2 = 1 − 0.7 = 0.3 → Â2 = 0.3
    #        δ1 = 0.9·0.7 − 0.6 = 0.03 → Â1 = 0.03 + 0.72·0.3 = 0.246
    #        δ0 = 0.9·0.6 − 0.5 = 0.04 → Â0 = 0.04 + 0.72·0.246 = 0.21712
    # row 1: the episode ends at t=1 (bootstrap 0): δ1 = 2 − 0.5 = 1.5 → Â1 = 1.5
    #        δ0 = 0.9·0.5 − 1.0 = −0.55 → Â0 = −0.55 + 0.72·1.5 = 0.53
    close(adv, [[0.21712, 0.246, 0.3], [0.53, 1.5, 0.0]], atol=1e-6)
    close(ret, [[0.71712, 0.846, 1.0], [1.53, 2.0, 0.0]], atol=1e-6)


def test_gae_with_lambda_one_is_discounted_return_minus_value():
    rewards = torch.tensor([[0.5, -1.0, 2.0, 0.0]])
    values = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    mask = torch.tensor([[1, 1, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=1.0)
    close(ret, discounted_returns(rewards, mask, gamma=0.9), atol=1e-6)
    close(adv, (discounted_returns(rewards, mask, gamma=0.9) - values) * mask, atol=1e-6)


def test_discounted_returns():
    rewards = torch.tensor([[1.0, 0.0, 2.0], [1.0, 3.0, 7.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    # row 0 (γ = ½): G2 = 2, G1 = 0 + ½·2 = 1, G0 = 1 + ½·1 = 1.5;  row 1: G1 = 3, G0 = 1 + 1.5 = 2.5, pad → 0
    close(discounted_returns(rewards, mask, gamma=0.5), [[1.5, 1.0, 2.0], [2.5, 3.0, 0.0]])
    close(discounted_returns(rewards, mask), [[3.0, 2.0, 2.0], [4.0, 3.0, 0.0]])  # γ = 1


def test_clipped_policy_loss_cases():
    # (Â, ρ): the loss is −min(ρÂ, clip(ρ, 0.8, 1.2)Â)
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0, 2.0]])
    ratio = torch.tensor([[1.5, 0.5, 0.5, 1.5, 1.0]])
    old = torch.zeros_like(ratio)
    logp = ratio.log().requires_grad_(True)
    loss, clipped = clipped_policy_loss(logp, old, adv, eps_low=0.2)
    # Â>0, ρ=1.5 → −1.2 (clipped) · Â>0, ρ=0.5 → −0.5 · Â<0, ρ=0.5 → 0.8 (clipped) · Â<0, ρ=1.5 → 1.5 · ρ=1 → −2
    close(loss, [[-1.2, -0.5, 0.8, 1.5, -2.0]], atol=1e-6)
    close(clipped, [[1.0, 0.0, 1.0, 0.0, 0.0]])
    loss.sum().backward()
    # clipped tokens get no gradient; elsewhere ∂(−Âρ)/∂log π = −Âρ
    close(logp.grad, [[0.0, -0.5, 0.0, 1.5, -2.0]], atol=1e-6)


def test_clip_higher_only_moves_the_upper_bound():
    adv = torch.tensor([[1.0, 1.0, -1.0]])
    ratio = torch.tensor([[1.5, 1.25, 0.5]])
    old = torch.zeros_like(ratio)
    sym, _ = clipped_policy_loss(ratio.log(), old, adv, eps_low=0.2)
    high, clipped = clipped_policy_loss(ratio.log(), old, adv, eps_low=0.2, eps_high=0.28)
    close(sym, [[-1.2, -1.2, 0.8]], atol=1e-6)
    close(high, [[-1.28, -1.25, 0.8]], atol=1e-6)  # 1.25 < 1.28 is no longer clipped; the low side is unchanged
    close(clipped, [[1.0, 0.0, 1.0]])


def test_clipped_value_loss():
    values = torch.tensor([[1.0, 1.0, 0.0]])
    old = torch.tensor([[0.5, 0.9, 0.5]])
    returns = torch.tensor([[1.5, 0.0, 1.0]])
    loss, clipped = clipped_value_loss(values, old, returns, clip=0.2)
    # V=1, V_old=0.5, R=1.5: (1−1.5)² = 0.25; clip(V) = 0.7 → (0.7−1.5)² = 0.64 → ½·0.64 = 0.32 (clipped)
    # V=1, V_old=0.9, R=0: V within ±0.2 → ½·1 = 0.5;  V=0, V_old=0.5, R=1: (0−1)² = 1 > (0.3−1)² = 0.49 → 0.5
    close(loss, [[0.32, 0.5, 0.5]], atol=1e-6)
    close(clipped, [[1.0, 0.0, 0.0]])
    plain, none_clipped = clipped_value_loss(values, old, returns, clip=None)
    close(plain, [[0.125, 0.5, 0.5]])
    close(none_clipped, [[0.0, 0.0, 0.0]])


def test_aggregate_loss_modes():
    loss = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 50.0, 50.0, 50.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]])
    close(aggregate_loss(loss, mask, "token-mean"), 20.0 / 5.0)  # (1+2+3+4+10) / 5 tokens
    close(aggregate_loss(loss, mask, "seq-mean"), (2.5 + 10.0) / 2.0)  # mean of per-sequence means
    close(aggregate_loss(loss, mask, "constant"), 20.0 / (2 * 4))  # B · T
    close(aggregate_loss(loss, mask, "constant", max_len=8), 20.0 / (2 * 8))
    with pytest.raises(ValueError, match="token-mean"):
        aggregate_loss(loss, mask, "sum")


def test_explained_variance():
    returns = torch.tensor([[1.0, 2.0, 3.0, 4.0, 123.0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    assert explained_variance(returns, returns, mask) == pytest.approx(1.0)
    assert explained_variance(torch.full_like(returns, 2.5), returns, mask) == pytest.approx(0.0, abs=1e-6)
    # residual [0, 0, 0, −1]: unbiased var 0.25; Var[R] = 5/3 → 1 − 0.25 / (5/3) = 0.85
    values = torch.tensor([[1.0, 2.0, 3.0, 5.0, -7.0]])
    assert explained_variance(values, returns, mask) == pytest.approx(0.85, abs=1e-6)
    assert math.isnan(explained_variance(values, torch.ones_like(returns), mask))


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean", "constant"])
def test_accumulation_weights_make_micro_batches_sum_to_the_minibatch_loss(mode):
    torch.manual_seed(0)
    loss = torch.randn(6, 5)
    mask = (torch.rand(6, 5) > 0.3).float()
    mask[:, 0] = 1.0
    whole = aggregate_loss(loss, mask, mode, max_len=5)
    parts = [(loss[i : i + 4], mask[i : i + 4]) for i in (0, 4)]  # uneven micro-batches: 4 + 2 rows
    summed = sum(accumulation_weight(m, mask, mode) * aggregate_loss(x, m, mode, max_len=5) for x, m in parts)
    torch.testing.assert_close(summed, whole)
