"""The new built-in tasks learn from RL: from an under-trained SFT model (its preset, fewer steps where noted), GRPO
with the task's preset raises the held-out greedy metric (docs/guides/tasks.md has the measured runs).

Each case trains its own SFT model (tens of seconds) and then GRPO; all slow.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rewardloop.algorithms import grpo, sft
from rewardloop.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def sft_then_grpo(tmp_path: Path, task: str, sft_overrides: list[str], grpo_overrides: list[str]):
    run = ["run.progress=false", f"run.root={tmp_path}", "model.device=cpu"]
    base = sft.train(
        load_config(sft.SFTConfig, CONFIGS / "sft" / f"{task}.yaml", [*run, "run.name=sft", *sft_overrides])
    )
    cfg = load_config(
        grpo.GRPOConfig,
        CONFIGS / "grpo" / f"{task}.yaml",
        [*run, "run.name=grpo", f"model.path={base['model_dir']}", *grpo_overrides],
    )
    out = grpo.train(cfg)
    return out["initial"], out["final"]


@pytest.mark.slow
def test_grpo_raises_strings_accuracy_over_sft(tmp_path):
    before, after = sft_then_grpo(tmp_path, "strings", [], ["steps=100", "eval_every=100"])
    print(f"strings: greedy exact match {before['eval/accuracy']:.3f} (SFT) -> {after['eval/accuracy']:.3f} (GRPO)")
    assert after["eval/accuracy"] >= before["eval/accuracy"] + 0.05


@pytest.mark.slow
def test_grpo_raises_translate_accuracy_over_sft(tmp_path):
    before, after = sft_then_grpo(tmp_path, "translate", [], ["steps=50", "eval_every=50"])
    print(
        f"translate: greedy exact {before['eval/accuracy']:.3f} -> {after['eval/accuracy']:.3f}, "
        f"chrF {before['eval/reward']:.3f} -> {after['eval/reward']:.3f} (SFT -> GRPO)"
    )
    assert after["eval/accuracy"] >= before["eval/accuracy"] + 0.08
    assert after["eval/reward"] > before["eval/reward"]
