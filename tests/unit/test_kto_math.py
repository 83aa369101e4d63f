"""Hand-computed KTO loss, reference point and mismatched pairs (algorithms/kto.py)."""

from __future__ import annotations

import math

import pytest
import torch

from rewardloop.algorithms.kto import (
    KTOConfig,
    check_balance,
    encode_thumbs,
    kl_reference_point,
    kto_loss,
    kto_step,
    mismatched_partners,
)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_reference_point_is_the_clamped_mean_log_ratio_without_gradient():
    pi = torch.tensor([-2.0, -4.0, -2.5], requires_grad=True)
    ref = torch.tensor([-3.0, -3.0, -4.0])
    # log-ratios 1, −1, 1.5 → mean 0.5
    z0 = kl_reference_point(pi, ref)
    assert z0.item() == pytest.approx(0.5) and not z0.requires_grad
    # a negative estimate is clamped to 0 (a KL is ≥ 0)
    assert kl_reference_point(torch.tensor([-5.0, -4.0]), torch.tensor([-3.0, -3.0])).item() == 0.0


def test_kto_loss_hand_computed():
    pi, ref = torch.tensor([-2.0, -2.0, -5.0]), torch.tensor([-3.0, -3.0, -4.0])  # r = 1, 1, −1
    desirable = torch.tensor([True, False, False])
    z0, beta, lam_d, lam_u = torch.tensor(0.5), 2.0, 1.0, 1.5
    loss = kto_loss(pi, ref, z0, desirable, beta, lam_d, lam_u)
    expected = [
        lam_d - lam_d * sigmoid(beta * (1 - 0.5)),  # desirable above z_0: σ(1)
        lam_u - lam_u * sigmoid(beta * (0.5 - 1)),  # undesirable above z_0: σ(−1), a large loss
        lam_u - lam_u * sigmoid(beta * (0.5 + 1)),  # undesirable below z_0: σ(3), a small loss
    ]
    torch.testing.assert_close(loss, torch.tensor(expected))


def test_at_the_reference_every_row_loses_half_its_weight():
    pi = torch.tensor([-3.0, -7.0])
    loss = kto_loss(pi, pi.clone(), torch.tensor(0.0), torch.tensor([True, False]), 0.1, 1.0, 1.33)
    torch.testing.assert_close(loss, torch.tensor([0.5, 0.665]))


def test_gradient_pushes_desirable_up_and_undesirable_down_but_not_through_z0():
    pi = torch.tensor([-3.0, -3.0], requires_grad=True)
    pi_kl = torch.tensor([-2.0, -2.0], requires_grad=True)
    z0 = kl_reference_point(pi_kl, torch.tensor([-3.0, -3.0]))  # 1.0
    kto_loss(pi, torch.tensor([-3.0, -3.0]), z0, torch.tensor([True, False]), 1.0).sum().backward()
    assert pi.grad[0] < 0 < pi.grad[1]  # descent raises log π of the desirable row, lowers the undesirable one
    assert pi_kl.grad is None  # z_0 carries no gradient
    # d/dr [1 − σ(r − z0)] = −σ'(r − z0) with r − z0 = −1
    assert pi.grad[0].item() == pytest.approx(-sigmoid(-1) * (1 - sigmoid(-1)))


def test_mismatched_partners_are_a_seeded_cycle_without_fixed_points():
    for n in (2, 3, 10):
        partner = mismatched_partners(n, seed=4)
        assert sorted(partner) == list(range(n)) and all(partner[i] != i for i in range(n))
        assert partner == mismatched_partners(n, seed=4)


class _Tok:
    """Characters as tokens; EOS = 0."""

    eos_token_id = 0

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [ord(c) for c in text]}


def test_encode_thumbs_pairs_each_prompt_with_another_rows_completion_and_truncates_it():
    rows = [{"prompt": "ab", "completion": "c"}, {"prompt": "d", "completion": "efghij"}]
    enc = encode_thumbs(_Tok(), rows, max_length=8, seed=0)
    (own0, other0), (own1, other1) = enc
    assert own0 == ([97, 98, 99, 0], [-100, -100, 99, 0])
    assert own1[0] == [100, 101, 102, 103, 104, 105, 106, 0]  # "d" + "efghij" + EOS: 8 tokens, fits
    assert other0[0] == [97, 98, 101, 102, 103, 104, 105, 106]  # "ab" + "efghij" + EOS cut to 8 (KL estimate only)
    assert other1 == ([100, 99, 0], [-100, 99, 0])  # "d" + "c" + EOS
    with pytest.raises(ValueError, match="thumbs row 1"):
        encode_thumbs(_Tok(), rows, max_length=7, seed=0)  # a row itself too long is an error


class _Fixed(torch.nn.Module):
    """log π of every sequence = its number of labelled tokens × log 0.5 (uniform over two tokens), plus a shift."""

    def __init__(self) -> None:
        super().__init__()
        self.shift = torch.nn.Parameter(torch.zeros(()))

    def forward(self, input_ids, attention_mask):
        logits = torch.zeros(*input_ids.shape, 128) - 1e4
        logits[..., :2] = 0.0
        logits[..., 1] = logits[..., 1] + self.shift
        return type("Out", (), {"logits": logits})()


def test_kto_step_metrics():
    model = _Fixed()
    seq = ([5, 1, 1], [-100, 1, 1])  # two completion tokens, each with log π = log ½ at shift 0
    enc = [(seq, seq), (seq, seq)]
    ref = torch.full((2, 2), 2 * math.log(0.5))
    cfg = KTOConfig(task={"name": "dataset", "path": "x.jsonl"}, beta=0.5)
    loss, row = kto_step(model, enc, ref, torch.tensor([True, False]), 0, "cpu", cfg)
    assert loss.item() == pytest.approx(0.5)
    assert row["kl"] == 0.0 and row["rewards/margin"] == 0.0 and row["rewards/accuracy"] == 0.5
    assert row["logps/desirable"] == pytest.approx(2 * math.log(0.5), abs=1e-5)


def test_balance_ratio_and_one_class():
    rows = [{"label": True}] * 3 + [{"label": False}] * 2
    cfg = KTOConfig(task={"name": "dataset", "path": "x.jsonl"}, undesirable_weight=1.5)
    assert check_balance(rows, cfg) == pytest.approx(1.0)  # 1·3 / (1.5·2)
    with pytest.raises(ValueError, match="0 undesirable"):
        check_balance([{"label": True}] * 2, cfg)
