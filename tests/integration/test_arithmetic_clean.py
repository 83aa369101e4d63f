"""RL raises greedy held-out accuracy on clean 1–2 digit addition (issue 14): from the clean SFT preset stopped on
the steep part of its curve (`configs/sft/arithmetic_clean.yaml`: constant lr 1e-3, 1200 steps, greedy 0.50), the
`arithmetic_clean` GRPO and PPO presets, shortened, gain on the 200 test problems — disjoint from every training
problem. docs/algorithms/grpo.md and ppo.md ("From a clean SFT model") have the measured runs these reproduce.

One SFT model (about 100 CPU-s) is shared by both tests; all slow.
"""

from __future__ import annotations

import pytest
from tests.integration.test_tasks_rl import train_rl, train_sft

from rewardloop.algorithms import grpo, ppo


@pytest.fixture(scope="module")
def sft_clean(tmp_path_factory) -> str:
    """The clean SFT preset's model (true answers only, constant lr 1e-3, 1200 steps: 0.50 greedy test accuracy)."""
    return train_sft(tmp_path_factory.mktemp("sft-arithmetic-clean"), "arithmetic_clean")


@pytest.mark.slow
@pytest.mark.parametrize(("algo", "steps"), [(grpo, 200), (ppo, 100)], ids=["grpo", "ppo"])
def test_rl_raises_arithmetic_accuracy_over_clean_sft(tmp_path, sft_clean, algo, steps):
    """The presets, shortened (GRPO 300 → 200 steps, PPO 150 → 100): measured from 0.50 to 0.715 / 0.59 (GRPO, run
    seeds 0 / 1) and 0.64 (PPO) at these steps; one evaluation's standard error is about 3.5 points."""
    overrides = [f"steps={steps}", f"eval_every={steps}"]
    before, after = train_rl(algo, tmp_path, "arithmetic_clean", sft_clean, overrides)
    print(
        f"arithmetic_clean ({algo.__name__}): greedy test accuracy {before['eval/accuracy']:.3f} -> {after['eval/accuracy']:.3f}"
    )
    assert after["eval/accuracy"] >= before["eval/accuracy"] + 0.08
