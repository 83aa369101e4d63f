"""Hand-computed DPO / cDPO / IPO losses and sequence log-probs (algorithms/dpo.py)."""

from __future__ import annotations

import math

import pytest
import torch

from rewardloop.algorithms.dpo import (
    DPO_LOSSES,
    DPOConfig,
    implicit_rewards,
    ipo_loss,
    preference_logits,
    sigmoid_loss,
)
from rewardloop.algorithms.preference import completion_logps
from rewardloop.data.tokenize import IGNORE

PI_C, PI_R = torch.tensor([-2.0, -5.0]), torch.tensor([-4.0, -3.0])
REF_C, REF_R = torch.tensor([-3.0, -5.0]), torch.tensor([-3.0, -4.0])


def test_preference_logits_and_implicit_rewards():
    # h = (π_c − ref_c) − (π_r − ref_r) = (1 − (−1), 0 − 1) = (2, −1)
    assert preference_logits(PI_C, PI_R, REF_C, REF_R).tolist() == [2.0, -1.0]
    assert implicit_rewards(PI_C, REF_C, 0.5).tolist() == [0.5, 0.0]


def test_sigmoid_loss_is_dpo():
    h = torch.tensor([2.0, -1.0, 0.0])
    # −log σ(βh) with β = 0.5: σ(1), σ(−0.5), σ(0) = ½ → ln 2 when the policy equals the reference
    expected = [math.log(1 + math.exp(-1.0)), math.log(1 + math.exp(0.5)), math.log(2.0)]
    torch.testing.assert_close(sigmoid_loss(h, 0.5), torch.tensor(expected))


def test_label_smoothing_is_conservative_dpo():
    h, beta, eps = torch.tensor([2.0]), 0.5, 0.2
    expected = (1 - eps) * math.log(1 + math.exp(-1.0)) + eps * math.log(1 + math.exp(1.0))
    assert sigmoid_loss(h, beta, eps).item() == pytest.approx(expected, rel=1e-6)
    # with ε > 0 the loss has a finite minimiser: it grows again for very large margins
    assert sigmoid_loss(torch.tensor([100.0]), beta, eps).item() > sigmoid_loss(torch.tensor([5.0]), beta, eps).item()


def test_ipo_loss_regresses_to_one_over_two_beta():
    h = torch.tensor([2.0, 5.0])
    # (h − 1/(2β))² with β = 0.1: target 5
    torch.testing.assert_close(ipo_loss(h, 0.1), torch.tensor([9.0, 0.0]))
    assert set(DPO_LOSSES) == {"sigmoid", "ipo"}


def test_completion_logps_sums_only_labelled_tokens():
    V = 4
    logits = torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4])).expand(1, 4, V).clone()  # same distribution everywhere

    class Fixed(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            return type("Out", (), {"logits": logits})()

    batch = {
        "input_ids": torch.tensor([[0, 1, 3, 2]]),
        "attention_mask": torch.tensor([[1, 1, 1, 0]]),
        "labels": torch.tensor([[IGNORE, IGNORE, 3, IGNORE]]),  # prompt = tokens 0..1, completion = token 3, pad
    }
    assert completion_logps(Fixed(), batch).item() == pytest.approx(math.log(0.4))


def test_config_checks():
    with pytest.raises(ValueError, match="label_smoothing"):
        DPOConfig(loss="ipo", label_smoothing=0.1)
    with pytest.raises(ValueError, match="preference pairs"):
        DPOConfig(task={"name": "arithmetic"})
    assert DPOConfig(task={"name": "dataset", "path": "prefs.jsonl"}).task.path == "prefs.jsonl"
