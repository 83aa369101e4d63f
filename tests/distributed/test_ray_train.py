"""GRPO and PPO with ``run.backend: ray`` (issue 13 items 1–3): the same run as a local one, and a killed learner
resumes from its last checkpoint to the result of an uninterrupted run.

Slow tier: each Ray run starts two rollout workers (a few seconds each on a busy 2-core machine).
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import rewardloop.algorithms.grpo as grpo
from rewardloop.algorithms.ppo import PPOConfig
from rewardloop.algorithms.ppo import train as ppo_train
from rewardloop.config import GenerationConfig, ModelConfig, OptimConfig, RunConfig, load_config
from rewardloop.envs.tasks import TaskConfig
from rewardloop.rewards.composite import RewardSpec
from rewardloop.runs import read_metrics

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.usefixtures("local_ray")]
KEYS = ("reward/mean", "reward/std", "response/length", "loss/total", "grad_norm", "eval/accuracy")


@pytest.fixture
def length_reward(tmp_path) -> str:
    """A plug-in file reward (the workers get its code by value): answer length, so advantages are non-zero."""
    plugin = tmp_path / "rew.py"
    plugin.write_text("def length(prompts, completions, **_):\n    return [len(c) / 4 for c in completions]\n")
    return f"{plugin}:length"


def grpo_cfg(tmp_path, name: str, reward: str, *overrides: str) -> grpo.GRPOConfig:
    base = [
        "model.preset=llama-1m", "model.device=cpu", "model.max_length=32", "task.n_train=64", "task.n_test=8",
        "gen.max_new_tokens=4", "eval_gen.max_new_tokens=4", "prompts_per_step=4", "group_size=4", "eval_every=2",
        "eval_size=8", "optim.lr=3e-3", "steps=4", "task_reward_weight=0", f"run.root={tmp_path}", f"run.name={name}",
        "run.progress=false",
    ]  # fmt: skip
    cfg = load_config(grpo.GRPOConfig, None, base + list(overrides))
    return cfg.model_copy(update={"rewards": [RewardSpec(fn=reward)]})


def by_step(run_dir) -> dict[int, dict]:
    return {r["step"]: r for r in read_metrics(run_dir) if "reward/mean" in r}


def assert_same_run(a: dict, b: dict, steps: list[int], keys=KEYS) -> None:
    assert sorted(a) == sorted(b) == steps
    for step in steps:
        for key in keys:
            if key in a[step]:
                assert b[step][key] == pytest.approx(a[step][key], rel=1e-4, abs=1e-5), (step, key)


def assert_same_weights(dir_a, dir_b) -> None:
    wa, wb = load_file(dir_a / "model.safetensors"), load_file(dir_b / "model.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)


def test_grpo_on_two_ray_workers_equals_the_local_run_and_learns(tmp_path, length_reward):
    local = grpo.train(grpo_cfg(tmp_path, "local", length_reward))
    ray_run = grpo.train(grpo_cfg(tmp_path, "ray", length_reward, "run.backend=ray", "run.rollout_workers=2"))
    a, b = by_step(local["run_dir"]), by_step(ray_run["run_dir"])
    assert_same_run(a, b, [1, 2, 3, 4])
    assert_same_weights(local["model_dir"], ray_run["model_dir"])
    assert b[4]["reward/mean"] > b[1]["reward/mean"]  # it learned: longer answers
    # scored in a reward worker (the rollout worker returns unscored samples): the same run again
    over = ("run.backend=ray", "run.rollout_workers=1", "run.reward_workers=1", "run.cpus_per_reward_worker=0.5")
    scored_apart = grpo.train(grpo_cfg(tmp_path, "ray-rewards", length_reward, *over))
    assert_same_run(a, by_step(scored_apart["run_dir"]), [1, 2, 3, 4])
    assert_same_weights(local["model_dir"], scored_apart["model_dir"])


class Killed(Exception):
    """Stands in for the learner (driver) process dying after step 2's checkpoint."""


def test_a_killed_ray_learner_resumes_to_the_uninterrupted_result(tmp_path, length_reward, monkeypatch):
    over = ("run.backend=ray", "run.rollout_workers=2", "run.save_every=1")
    full = grpo.train(grpo_cfg(tmp_path, "full", length_reward, *over))
    real_update, calls = grpo.update, []

    def dies_at_step_3(*args, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise Killed
        return real_update(*args, **kw)

    monkeypatch.setattr(grpo, "update", dies_at_step_3)
    with pytest.raises(Killed):
        grpo.train(grpo_cfg(tmp_path, "cut", length_reward, *over))
    monkeypatch.setattr(grpo, "update", real_update)
    resumed = grpo.train(grpo_cfg(tmp_path, "cut", length_reward, *over), resume=True)
    a, b = by_step(full["run_dir"]), by_step(resumed["run_dir"])
    assert_same_run(a, b, [1, 2, 3, 4])  # steps 1–2 from before the kill, 3–4 after: none lost, none twice
    assert_same_weights(full["model_dir"], resumed["model_dir"])


@pytest.mark.parametrize("off_policy_steps", [0, 1])
def test_ppo_shared_critic_on_ray_equals_local(tmp_path, length_reward, off_policy_steps):
    """On- and one-step off-policy (Ray: batch k+1 sampled during update k; local: the same batches in order)."""

    def cfg(name: str, backend: str) -> PPOConfig:
        return PPOConfig(
            model=ModelConfig(preset="llama-1m", device="cpu", max_length=32),
            task=TaskConfig(name="arithmetic", n_train=64, n_test=8),
            gen=GenerationConfig(max_new_tokens=4, temperature=1.0),
            eval_gen=GenerationConfig(max_new_tokens=4, temperature=0.0),
            optim=OptimConfig(lr=1e-3),
            run=RunConfig(
                root=str(tmp_path), name=name, progress=False, backend=backend, rollout_workers=2,
                off_policy_steps=off_policy_steps,
            ),
            rewards=[RewardSpec(fn=length_reward)], task_reward_weight=0, critic="shared", steps=2, batch_size=8,
            mini_batch_size=4, micro_batch_size=2, epochs=2, eval_every=2, eval_size=8,
        )  # fmt: skip

    local, ray_run = ppo_train(cfg("local", "local")), ppo_train(cfg("ray", "ray"))
    keys = ("reward/mean", "loss/policy", "loss/value", "kl", "response/length")
    assert_same_run(by_step(local["run_dir"]), by_step(ray_run["run_dir"]), [1, 2], keys)
    assert_same_weights(local["model_dir"], ray_run["model_dir"])


def test_one_step_off_policy_on_ray_equals_the_local_off_policy_run_and_learns(tmp_path, length_reward):
    """Ray overlaps batch k+1's sampling with update k (workers sample a pinned snapshot); the local run draws the same
    batches in order without overlap — the two must agree, every batch used once, and the run must learn."""
    off = ("run.off_policy_steps=1",)
    local = grpo.train(grpo_cfg(tmp_path, "off-local", length_reward, *off))
    ray_run = grpo.train(grpo_cfg(tmp_path, "off-ray", length_reward, *off, "run.backend=ray"))
    a, b = by_step(local["run_dir"]), by_step(ray_run["run_dir"])
    assert_same_run(a, b, [1, 2, 3, 4])
    assert_same_weights(local["model_dir"], ray_run["model_dir"])
    assert b[4]["reward/mean"] > b[1]["reward/mean"]  # it learned: longer answers
    ckpts = ray_run["run_dir"] / "checkpoints"
    state = json.loads((ckpts / (ckpts / "latest").read_text().strip() / "state.json").read_text())
    assert state["history"]["groups_drawn"] == 4 * 4  # 4 steps × 4 groups: none lost, none drawn twice


def test_grpo_with_a_learner_actor_equals_the_driver_learner_run(tmp_path, length_reward):
    """Estimate + update in a Ray learner actor (grpo.learn, run there): same metrics, weights and optimizer state
    (what --resume restores) as the run whose driver is the learner."""
    driver = grpo.train(grpo_cfg(tmp_path, "driver", length_reward))
    over = ("run.backend=ray", "run.rollout_workers=1", "run.learner=actor")
    actor = grpo.train(grpo_cfg(tmp_path, "actor", length_reward, *over))
    a, b = by_step(driver["run_dir"]), by_step(actor["run_dir"])
    assert_same_run(a, b, [1, 2, 3, 4])
    assert_same_weights(driver["model_dir"], actor["model_dir"])
    assert b[4]["reward/mean"] > b[1]["reward/mean"]  # it learned: longer answers

    def adam_moments(run_dir) -> list[torch.Tensor]:
        ckpts = run_dir / "checkpoints"
        state = torch.load(ckpts / (ckpts / "latest").read_text().strip() / "optim-policy.pt")["state"]
        return [state[i][k] for i in sorted(state) for k in ("exp_avg", "exp_avg_sq")]

    for x, y in zip(adam_moments(driver["run_dir"]), adam_moments(actor["run_dir"]), strict=True):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-4)
