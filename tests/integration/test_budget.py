"""``run.max_cpu_s``: a run stops at a CPU-second budget, evaluated and saved as at its last step.

The process clock is replaced by one that advances one "CPU-second" per read, so where the run stops is
deterministic; the real clock is what users get (``time.process_time``).
"""

from __future__ import annotations

import itertools
import time

import pytest

from rewardloop import runs
from rewardloop.algorithms.grpo import GRPOConfig
from rewardloop.algorithms.grpo import train as grpo_train
from rewardloop.algorithms.ppo import PPOConfig
from rewardloop.algorithms.ppo import train as ppo_train
from rewardloop.algorithms.sft import SFTConfig
from rewardloop.algorithms.sft import train as sft_train
from rewardloop.config import RunConfig, load_config
from rewardloop.runs import RunDir, read_metrics


@pytest.fixture
def ticking_clock(monkeypatch):
    """time.process_time as seen by runs.py: 0, 1, 2, … one second per read."""
    ticks = itertools.count()

    class Clock:
        def __getattr__(self, name):  # time.time, time.strftime, … stay real
            return getattr(time, name)

        @staticmethod
        def process_time() -> float:
            return float(next(ticks))

    monkeypatch.setattr(runs, "time", Clock())


def test_last_step_is_the_step_count_or_the_budget(tmp_path, ticking_clock):
    rd = RunDir.open(RunConfig(root=str(tmp_path), name="r", max_cpu_s=3), "sft")  # opened at clock 0
    assert [rd.last_step(s, 100) for s in range(3)] == [False, False, True]  # the clock reads 1, 2, 3 (= budget)
    unbounded = RunDir.open(RunConfig(root=str(tmp_path), name="u"), "sft")
    assert not any(unbounded.last_step(s, 100) for s in range(50))
    assert unbounded.last_step(100, 100)
    with pytest.raises(ValueError, match="max_cpu_s"):
        RunConfig(max_cpu_s=0)


@pytest.mark.parametrize("trainer", ["sft", "grpo", "ppo"])
def test_a_budget_stops_the_run_early_with_a_final_evaluation_and_model(tmp_path, ticking_clock, trainer):
    common = ["model.max_length=32", "task.n_train=64", "task.n_test=8", "eval_every=1000", "eval_size=8"]
    common += [f"run.root={tmp_path}", "run.name=r", "run.progress=false", "run.max_cpu_s=12", "steps=1000"]
    if trainer == "sft":
        out = sft_train(load_config(SFTConfig, None, [*common, "batch_size=8"]))
    elif trainer == "ppo":
        ppo_overrides = ["gen.max_new_tokens=4", "eval_gen.max_new_tokens=4", "batch_size=4", "mini_batch_size=4"]
        out = ppo_train(load_config(PPOConfig, None, [*common, *ppo_overrides]))
    else:
        grpo_overrides = ["gen.max_new_tokens=4", "eval_gen.max_new_tokens=4", "prompts_per_step=2", "group_size=2"]
        out = grpo_train(load_config(GRPOConfig, None, [*common, *grpo_overrides]))
    rows = read_metrics(tmp_path / "r")
    last = rows[-1]
    assert 1 <= last["step"] < 1000  # stopped by the budget, after at least one update
    assert last["cpu_s"] >= 12 - 1  # … once the (fake) clock had spent it
    assert any(k.startswith("eval/") for k in last)  # the last step was evaluated although 1000 % step != 0
    assert (tmp_path / "r" / "final" / "policy" / "model.safetensors").exists()
    assert out["final"]["step"] == last["step"]  # the returned final metrics are the budget-stopped step's
