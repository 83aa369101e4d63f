"""Resume: an interrupted SFT or DPO run continues from its last checkpoint (``RunDir.resume``), logs each step once
and ends bit-identical to an uninterrupted one.

Also: a crash while a checkpoint is being written leaves the previous checkpoint intact and ``latest`` on it.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import rewardloop.algorithms.dpo as dpo
import rewardloop.algorithms.grpo as grpo
import rewardloop.algorithms.ppo as ppo
import rewardloop.algorithms.reward_model as rm
import rewardloop.algorithms.sft as sft
import rewardloop.runs as runs
from rewardloop.algorithms.dpo import DPOConfig
from rewardloop.algorithms.sft import SFTConfig
from rewardloop.config import GenerationConfig, ModelConfig, OptimConfig, RunConfig
from rewardloop.envs.tasks import TaskConfig
from rewardloop.runs import RunDir

# SFT: 70 training rows / batch 16 = 4 batches per epoch; DPO: 22 training pairs / batch 8 = 2 batches per epoch. So
# the step-5 checkpoint falls inside an epoch, and the learning rate depends on the restored scheduler step.
STEPS, SAVE_EVERY = 12, 5
MODEL = ModelConfig(preset="llama-1m", max_length=16, device="cpu")
OPTIM = OptimConfig(lr=3e-3, warmup_steps=3, schedule="cosine")


class Interrupt(Exception):
    """Stands in for a kill / Ctrl-C in the middle of training."""


def config(root, name: str) -> SFTConfig:
    return SFTConfig(
        model=MODEL,
        task=TaskConfig(digits=(1, 1), n_train=70, n_test=8),
        optim=OPTIM,
        gen=GenerationConfig(max_new_tokens=3, temperature=0.0),
        run=RunConfig(root=str(root), name=name, save_every=SAVE_EVERY, progress=False),
        steps=STEPS,
        batch_size=16,
        eval_every=100,
        eval_size=8,
    )


def dpo_config(root, name: str) -> DPOConfig:
    pairs = root / "prefs.jsonl"
    rows = [{"prompt": f"{i}+{i}=", "chosen": str(2 * i), "rejected": str(2 * i + 1)} for i in range(24)]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return DPOConfig(
        model=MODEL,
        task=TaskConfig(name="dataset", path=str(pairs), n_test=2),
        optim=OPTIM,
        run=RunConfig(root=str(root), name=name, save_every=SAVE_EVERY, progress=False),
        beta=0.5,
        steps=STEPS,
        batch_size=8,
        eval_every=100,
    )


def rl_sections(root, name: str) -> dict:
    """What the PPO and GRPO runs share: a small arithmetic task, 3-token answers, no evaluation in between."""
    return dict(
        model=MODEL.model_copy(update={"max_length": 24}), task=TaskConfig(digits=(1, 1), n_train=32, n_test=8),
        optim=OPTIM, gen=GenerationConfig(max_new_tokens=3),
        eval_gen=GenerationConfig(max_new_tokens=3, temperature=0.0),
        run=RunConfig(root=str(root), name=name, save_every=SAVE_EVERY, progress=False),
        steps=STEPS, eval_every=100, eval_size=8,
    )  # fmt: skip


def ppo_config(root, name: str) -> ppo.PPOConfig:
    """Shared critic, one epoch of one minibatch: one optimizer step per training step, as for the others."""
    return ppo.PPOConfig(
        **rl_sections(root, name), critic="shared", batch_size=8, mini_batch_size=8, micro_batch_size=8, epochs=1
    )


def grpo_config(root, name: str) -> grpo.GRPOConfig:
    return grpo.GRPOConfig(**rl_sections(root, name), prompts_per_step=4, group_size=4, samples_every=3)


# trainer → (module, config builder, its training-loss metric, its evaluation metric)
TRAINERS = {
    "sft": (sft, config, "train/loss", "eval/loss"),
    "dpo": (dpo, dpo_config, "loss", "eval/loss"),
    "ppo": (ppo, ppo_config, "loss/policy", "eval/accuracy"),
    "grpo": (grpo, grpo_config, "loss/total", "eval/accuracy"),
}


def weights(result) -> dict[str, torch.Tensor]:
    return load_file(result["model_dir"] / "model.safetensors")


def train_losses(run_dir, key: str = "train/loss") -> dict[int, float]:
    return {r["step"]: r[key] for r in runs.read_metrics(run_dir) if key in r}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Each trainer's run without interruption (trained on first use)."""
    done = {}

    def get(name: str):
        if name not in done:
            module, make, *_ = TRAINERS[name]
            done[name] = module.train(make(tmp_path_factory.mktemp("runs"), "straight"))
        return done[name]

    return get


def crash_on_step(monkeypatch, n: int, module=sft) -> None:
    """Make the ``n``-th optimizer step (in this process) raise ``Interrupt`` before it updates anything."""
    calls = {"n": 0}
    real = module.clip_and_step

    def step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise Interrupt(f"killed at step {n}")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "clip_and_step", step)


@pytest.mark.parametrize("trainer", sorted(TRAINERS))
def test_resume_after_interrupt_is_identical_to_an_uninterrupted_run(tmp_path, monkeypatch, uninterrupted, trainer):
    module, make, loss_key, eval_key = TRAINERS[trainer]
    cfg = make(tmp_path, "resumed")
    with monkeypatch.context() as m:
        crash_on_step(m, 7, module)
        with pytest.raises(Interrupt):
            module.train(cfg)
    run = RunDir(tmp_path / "resumed")
    assert run.latest_checkpoint().name == "step-0000005"
    assert max(r["step"] for r in run.metrics()) == 6  # step 6 was logged after the checkpoint, before the crash

    loaded = {}
    real_load = RunDir.load_checkpoint

    def spy(self, ckpt, *args, **kwargs):
        loaded["state"] = state = real_load(self, ckpt, *args, **kwargs)
        return state

    monkeypatch.setattr(RunDir, "load_checkpoint", spy)
    result = module.train(cfg, resume=True)
    assert loaded["state"]["step"] == SAVE_EVERY  # continued from the saved step, not from 0
    straight = uninterrupted(trainer)

    # identical weights, optimizer moments and learning-rate schedule at the end
    expected, actual = weights(straight), weights(result)
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[k], actual[k]) for k in expected)
    ckpt = f"checkpoints/step-{STEPS:07d}/optim-policy.pt"
    opt_a = torch.load(straight["run_dir"] / ckpt, weights_only=False)
    opt_b = torch.load(result["run_dir"] / ckpt, weights_only=False)
    for pid, st in opt_a["state"].items():
        assert torch.equal(st["exp_avg"], opt_b["state"][pid]["exp_avg"])
        assert torch.equal(st["exp_avg_sq"], opt_b["state"][pid]["exp_avg_sq"])
        assert float(st["step"]) == float(opt_b["state"][pid]["step"]) == STEPS
    # the same batches in the same order: every logged training loss matches, each step logged exactly once
    assert train_losses(result["run_dir"], loss_key) == train_losses(straight["run_dir"], loss_key)
    assert [r["step"] for r in runs.read_metrics(result["run_dir"])] == list(range(STEPS + 1))  # 0 = initial eval
    assert result["final"][eval_key] == straight["final"][eval_key]

    def sample_steps(res) -> list[int]:
        return [r["step"] for r in runs.read_metrics(res["run_dir"], "samples.jsonl")]

    assert sample_steps(result) == sample_steps(straight)  # sample tables too: none from the crashed steps twice


def test_reward_model_ensemble_resumes_inside_its_second_member(tmp_path, monkeypatch):
    """Members log and checkpoint on one step axis: a crash in member 2 resumes member 2, each step logged once."""
    pairs = [{"prompt": f"{i}+{i}=", "chosen": str(2 * i), "rejected": str(2 * i + 1)} for i in range(40)]

    def make(name: str) -> rm.RewardModelConfig:
        return rm.RewardModelConfig(
            model=MODEL, task=TaskConfig(dataset=pairs, n_test=8), optim=OPTIM, steps=STEPS, batch_size=8,
            ensemble=2, eval_every=100, run=RunConfig(root=str(tmp_path), name=name, save_every=SAVE_EVERY, progress=False),
        )  # fmt: skip

    straight = rm.train(make("straight"))
    cfg = make("resumed")
    with monkeypatch.context() as m:
        crash_on_step(m, STEPS + 7, rm)  # member 2, step 7: its step-5 checkpoint is global step STEPS + 5
        with pytest.raises(Interrupt):
            rm.train(cfg)
    assert RunDir(tmp_path / "resumed").latest_checkpoint().name == f"step-{STEPS + SAVE_EVERY:07d}"
    result = rm.train(cfg, resume=True)
    steps = [r["step"] for r in runs.read_metrics(result["run_dir"])]
    assert steps == [r["step"] for r in runs.read_metrics(straight["run_dir"])]
    assert len(steps) == 2 * STEPS + 1  # every training step once, then the summary row
    for k in range(2):
        a = load_file(straight["model_dir"] / f"reward-{k}" / "model.safetensors")
        b = load_file(result["model_dir"] / f"reward-{k}" / "model.safetensors")
        assert all(torch.equal(a[n], b[n]) for n in a)
    rm.train(cfg, resume=True)  # a finished run resumed again logs nothing twice
    assert [r["step"] for r in runs.read_metrics(result["run_dir"])] == steps


def test_resume_before_the_first_checkpoint_starts_over_with_clean_logs(tmp_path, monkeypatch, uninterrupted):
    cfg = config(tmp_path, "early")
    with monkeypatch.context() as m:
        crash_on_step(m, 3)
        with pytest.raises(Interrupt):
            sft.train(cfg)
    assert RunDir(tmp_path / "early").latest_checkpoint() is None
    result = sft.train(cfg, resume=True)
    assert [r["step"] for r in runs.read_metrics(result["run_dir"])] == list(range(STEPS + 1))
    expected, actual = weights(uninterrupted("sft")), weights(result)
    assert all(torch.equal(expected[k], actual[k]) for k in expected)


def test_checkpoint_is_due_every_save_every_steps_and_at_the_end():
    assert [s for s in range(1, 13) if RunDir.due(s, 12, 5)] == [5, 10, 12]
    assert [s for s in range(1, 13) if RunDir.due(s, 12, 0)] == [12]


def test_crash_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch, uninterrupted):
    cfg = config(tmp_path, "torn")
    real_save = torch.save

    def failing_save(obj, path, *args, **kwargs):
        if "step-0000010" in str(path) or ".step-0000010" in str(path):
            raise OSError("disk full")
        return real_save(obj, path, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(runs.torch, "save", failing_save)
        with pytest.raises(OSError, match="disk full"):
            sft.train(cfg)

    ckpts = tmp_path / "torn" / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == "step-0000005"
    assert sorted(p.name for p in ckpts.iterdir()) == ["latest", "step-0000005"]  # no half-written step-10
    good = ckpts / "step-0000005"
    assert json.loads((good / "state.json").read_text())["step"] == 5
    assert {"policy", "optim-policy.pt", "rng.pt", "state.json"} <= {p.name for p in good.iterdir()}

    result = sft.train(cfg, resume=True)  # continues from step 5 and ends where the uninterrupted run ends
    expected, actual = weights(uninterrupted("sft")), weights(result)
    assert all(torch.equal(expected[k], actual[k]) for k in expected)


def test_checkpoint_restores_python_numpy_torch_and_generator_rng(tmp_path, tiny_model, tokenizer):
    run = RunDir(tmp_path / "rng")
    model = tiny_model("llama-1m")
    gen = torch.Generator().manual_seed(123)
    torch.manual_seed(1), random.seed(1), np.random.seed(1)
    ckpt = run.save_checkpoint(3, {"policy": (model, tokenizer)}, generators={"sampler": gen}, state={"x": 1})

    def draw():
        return random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=gen).item()

    first = draw()
    assert draw() != first
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    state = run.load_checkpoint(ckpt, {"policy": model}, generators={"sampler": gen})
    assert state == {"step": 3, "x": 1}
    assert draw() == first
    assert any(p.abs().sum() > 0 for p in model.parameters())  # weights came back from disk


def test_damaged_latest_checkpoint_resumes_from_the_previous_one(tmp_path, monkeypatch, caplog, uninterrupted):
    """A kill after step 11 leaves checkpoints 5 and 10; step 10's optimizer file is truncated: resume warns naming
    it, continues from step 5, logs each step once and ends with the uninterrupted run's weights."""
    cfg = config(tmp_path, "damaged")
    with monkeypatch.context() as m:
        crash_on_step(m, 11)
        with pytest.raises(Interrupt):
            sft.train(cfg)
    bad = tmp_path / "damaged" / "checkpoints" / "step-0000010" / "optim-policy.pt"
    bad.write_bytes(bad.read_bytes()[:100])
    with caplog.at_level("WARNING", logger="rewardloop.runs"):
        result = sft.train(cfg, resume=True)
    assert str(bad) in caplog.text
    assert [r["step"] for r in runs.read_metrics(result["run_dir"])] == list(range(STEPS + 1))
    expected, actual = weights(uninterrupted("sft")), weights(result)
    assert all(torch.equal(expected[k], actual[k]) for k in expected)
