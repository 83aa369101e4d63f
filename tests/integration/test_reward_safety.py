"""Every reward call goes through the safety layer, evaluation included (issue 15 item 3): a hanging plug-in is
bounded by reward_timeout, a failing sample is skipped, a reward failing everywhere stops PPO with a clear error."""

from __future__ import annotations

import json
import time

import pytest

from rewardloop.algorithms import grpo, ppo
from rewardloop.config import GenerationConfig, ModelConfig, OptimConfig, RunConfig
from rewardloop.envs.tasks import TaskConfig
from rewardloop.rewards import RewardError

ROWS = [{"prompt": f"{a}+{a}=", "answer": str(2 * a), "split": "train"} for a in range(16)]
TEST = [{"prompt": f"{a}+1=", "answer": str(a + 1), "split": "test"} for a in range(4)]


def sections(tmp_path, name: str, reward, **kw) -> dict:
    return dict(
        model=ModelConfig(preset="llama-1m", device="cpu", max_length=24),
        task=TaskConfig(dataset=ROWS, test_dataset=TEST, reward=reward),
        gen=GenerationConfig(max_new_tokens=3), eval_gen=GenerationConfig(max_new_tokens=3, temperature=0.0),
        optim=OptimConfig(lr=1e-3), steps=1, eval_size=4, run=RunConfig(root=str(tmp_path), name=name, progress=False),
        **kw,
    )  # fmt: skip


def test_a_plugin_hanging_in_evaluation_is_bounded_by_the_timeout(tmp_path):
    def hangs_on_test_rows(completions, split, **_):
        if "test" in split:
            time.sleep(30)
        return [0.0] * len(completions)

    cfg = grpo.GRPOConfig(**sections(tmp_path, "hang", hangs_on_test_rows, reward_timeout=0.3), group_size=2)
    # The initial evaluation: every test row hangs → the deadline fires (else the 30 s sleeps would end in scores of
    # 0.0 and no error) and the run stops with a clear error instead of hanging.
    with pytest.raises(RewardError, match=r"hang: timed out after 0\.3 s"):
        grpo.train(cfg)


def test_a_plugin_failing_on_one_evaluation_sample_is_skipped(tmp_path):
    def fails_on_one(completions, prompts, **_):
        if "2+1=" in prompts:
            raise KeyError("boom")
        return [1.0] * len(completions)

    res = grpo.train(grpo.GRPOConfig(**sections(tmp_path, "skip", fails_on_one), group_size=2))
    rows = [json.loads(x) for x in (res["run_dir"] / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["eval/reward"] == 1.0 and rows[-1]["eval/reward"] == 1.0  # over the 3 samples that scored


def test_ppo_with_every_reward_failing_stops_with_a_clear_error(tmp_path):
    def always_fails(completions, **_):
        raise ValueError("no score for you")

    cfg = ppo.PPOConfig(**sections(tmp_path, "ppo", always_fails), batch_size=4, mini_batch_size=4, micro_batch_size=4)
    with pytest.raises(RewardError, match=r"failed on all 4 samples.*no score for you"):
        ppo.train(cfg)
