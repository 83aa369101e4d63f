"""Numerics guard: a non-finite loss or gradient skips the update (the weights stay finite) and the run stops with a
clear error after ``run.max_bad_updates`` in a row."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from rewardloop.algorithms import grpo, ppo
from rewardloop.algorithms.common import NonFiniteError, clip_and_step, make_optimizer
from rewardloop.config import GenerationConfig, ModelConfig, OptimConfig, RunConfig
from rewardloop.envs.tasks import TaskConfig


def test_clip_and_step_skips_non_finite_gradients():
    model = torch.nn.Linear(3, 1)
    opt, sched = make_optimizer(model.parameters(), OptimConfig(lr=0.1), 10)
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.tensor([[float("nan"), 1.0, 2.0]])).sum().backward()
    assert not math.isfinite(clip_and_step(model, opt, sched, 1.0))  # returns the non-finite norm
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    assert not opt.state and sched.last_epoch == 0  # no optimizer moments written, schedule not advanced
    model(torch.tensor([[1.0, 1.0, 2.0]])).sum().backward()
    assert clip_and_step(model, opt, sched, 1.0) > 0 and opt.state  # a finite step goes through


def rl_sections(tmp_path, name: str, steps: int) -> dict:
    return dict(
        model=ModelConfig(preset="llama-1m", device="cpu", max_length=24), task=TaskConfig(n_train=32, n_test=4),
        gen=GenerationConfig(max_new_tokens=3), eval_gen=GenerationConfig(max_new_tokens=3, temperature=0.0),
        optim=OptimConfig(lr=1e-3), steps=steps, eval_every=100, eval_size=4,
        run=RunConfig(root=str(tmp_path), name=name, progress=False, max_bad_updates=3),
    )  # fmt: skip


def poison(monkeypatch, module, name: str, calls: set[int]):
    """Make the ``calls``-th uses (1-based) of ``module.name`` return NaN log-probs (as a NaN logit would)."""
    real, n = getattr(module, name), {"i": 0}

    def wrapped(*args, **kwargs):
        out = real(*args, **kwargs)
        n["i"] += 1
        if n["i"] in calls:
            return (out[0] * float("nan"), *out[1:])
        return out

    monkeypatch.setattr(module, name, wrapped)


def test_grpo_skips_one_bad_update_and_stops_after_three(tmp_path, monkeypatch):
    cfg = grpo.GRPOConfig(**rl_sections(tmp_path, "once", 3), prompts_per_step=2, group_size=4, micro_batch_size=None)
    with monkeypatch.context() as m:
        poison(m, grpo, "sequence_logprobs", {2})  # the second update's forward
        res = grpo.train(cfg)
    rows = [json.loads(x) for x in (res["run_dir"] / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("update_skipped", 0) for r in rows if "grad_norm" in r] == [0, 1, 0]
    assert all(torch.isfinite(w).all() for w in load_file(res["model_dir"] / "model.safetensors").values())
    with monkeypatch.context() as m:
        poison(m, grpo, "sequence_logprobs", set(range(1, 100)))
        with pytest.raises(NonFiniteError, match=r"3 updates in a row \(run.max_bad_updates=3\)"):
            grpo.train(cfg.model_copy(update={"run": cfg.run.model_copy(update={"name": "always"})}))


def test_ppo_stops_after_three_non_finite_updates(tmp_path, monkeypatch):
    cfg = ppo.PPOConfig(
        **rl_sections(tmp_path, "ppo", 5), batch_size=4, mini_batch_size=4, micro_batch_size=4, epochs=1
    )
    poison(monkeypatch, ppo, "policy_and_values", set(range(1, 100)))
    with pytest.raises(NonFiniteError, match="non-finite"):
        ppo.train(cfg)
