"""GRPO / Dr.GRPO / RLOO / REINFORCE++ training runs (algorithms/grpo.py).

Fast: every estimator runs on a tiny random model and changes its weights; resume continues a run; presets validate.
Slow: GRPO on `arithmetic` raises greedy test accuracy over the SFT model it starts from.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rewardloop.algorithms.grpo import GRPOConfig, train
from rewardloop.config import load_config
from rewardloop.models import load_pretrained
from rewardloop.runs import read_metrics

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def tiny(tmp_path: Path, name: str, *overrides: str) -> GRPOConfig:
    base = [
        "model.max_length=32",
        "task.n_train=64",
        "task.n_test=8",
        "gen.max_new_tokens=4",
        "eval_gen.max_new_tokens=4",
        "prompts_per_step=4",
        "group_size=4",
        "eval_every=2",
        "eval_size=8",
        "optim.lr=3e-3",
        f"run.root={tmp_path}",
        f"run.name={name}",
        "run.progress=false",
    ]
    return load_config(GRPOConfig, None, base + list(overrides))


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(model_dir / "model.safetensors")


@pytest.mark.parametrize(
    "overrides",
    [
        ("estimator=grpo", "loss_agg=token-mean", "clip_eps_high=0.28"),
        ("estimator=dr_grpo", "loss_agg=constant"),
        ("estimator=rloo", "loss_agg=seq-mean", "ppo_epochs=2", "minibatch_size=8"),
        ("estimator=reinforce_pp", "kl_reward_coef=0.05", "kl_coef=0.05", "overlong_coef=0.5", "overlong_buffer=2"),
    ],
    ids=["grpo", "dr_grpo", "rloo", "reinforce_pp"],
)
def test_each_estimator_trains(tmp_path, overrides):
    # A shaping reward that varies on a random model (characters of the response), so every group has signal.
    cfg = tiny(tmp_path, "run", "steps=2", *overrides)
    cfg.rewards = [{"fn": "length_penalty", "kwargs": {"max_chars": 2, "scale": 20}}]
    out = train(cfg)
    rows = read_metrics(out["run_dir"])
    steps = [r for r in rows if "reward/mean" in r]
    assert len(steps) == 2
    for key in (
        "reward/std",
        "frac_zero_var_groups",
        "entropy",
        "clip_frac",
        "response/length",
        "tokens_per_s",
        "reward/sampled_mean",
    ):
        assert key in steps[0], key
    assert "time/collect" in steps[0] and "time/update" in steps[0]
    if cfg.kl_coef > 0:
        assert "kl" in steps[-1] and "kl_k3" in steps[-1]
    if cfg.overlong_coef > 0:
        assert "reward/overlong" in steps[0]
    # the weights moved away from the starting model (same seed → same initial weights)
    torch.manual_seed(cfg.run.seed)
    start, _ = load_pretrained(cfg.model)
    final = _weights(out["model_dir"])
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(final[name], start.state_dict()[name])
    samples = [json.loads(line) for line in (out["run_dir"] / "samples.jsonl").read_text().splitlines()]
    assert {"prompt", "response", "reward", "components"} <= set(samples[0])
    assert "advantage" in samples[0]["components"]


def test_mixed_precision_and_checkpointing_train(tmp_path):
    # bf16 autocast + activation checkpointing: the run trains (weights move) and the weights stay float32.
    cfg = tiny(tmp_path, "amp", "steps=2", "model.autocast=bfloat16", "model.gradient_checkpointing=true")
    cfg.rewards = [{"fn": "length_penalty", "kwargs": {"max_chars": 2, "scale": 20}}]
    out = train(cfg)
    torch.manual_seed(cfg.run.seed)
    start, _ = load_pretrained(cfg.model)
    final = _weights(out["model_dir"])
    name = "model.layers.0.self_attn.q_proj.weight"
    assert final[name].dtype == torch.float32
    assert not torch.allclose(final[name], start.state_dict()[name])
    steps = [r for r in read_metrics(out["run_dir"]) if "reward/mean" in r]
    assert len(steps) == 2 and all(r["grad_norm"] > 0 for r in steps)


@pytest.mark.parametrize("loss_agg", ["token-mean", "seq-mean", "constant"])
def test_micro_batches_accumulate_to_the_same_update(tmp_path, loss_agg):
    # Same seed → same samples; the update with 4 micro-batches of 4 must equal the one-pass update of 16.
    weights, grad_norms = [], []
    for micro in ("null", "4"):
        cfg = tiny(tmp_path, f"mb-{loss_agg}-{micro}", "steps=1", f"loss_agg={loss_agg}", f"micro_batch_size={micro}")
        cfg.rewards = [{"fn": "length_penalty", "kwargs": {"max_chars": 2, "scale": 20}}]
        out = train(cfg)
        weights.append(_weights(out["model_dir"]))
        grad_norms += [r["grad_norm"] for r in read_metrics(out["run_dir"]) if "grad_norm" in r]
    # the accumulated gradient has the one-pass gradient's norm (Adam's update alone would hide a scale error)
    assert len(grad_norms) == 2 and grad_norms[0] > 0
    assert grad_norms[1] == pytest.approx(grad_norms[0], rel=1e-4)
    name = "model.layers.0.self_attn.q_proj.weight"
    torch.manual_seed(cfg.run.seed)
    start, _ = load_pretrained(cfg.model)
    assert not torch.allclose(weights[0][name], start.state_dict()[name])  # the step did move the weights
    for k in weights[0]:
        torch.testing.assert_close(weights[1][k], weights[0][k], rtol=1e-3, atol=1e-4)  # lr 3e-3 per step


def test_resume_continues_from_the_checkpoint(tmp_path):
    first = train(tiny(tmp_path, "r", "steps=2", "run.save_every=1"))
    ckpt = first["run_dir"] / "checkpoints"
    assert (ckpt / "latest").read_text().strip() == "step-0000002"
    out = train(tiny(tmp_path, "r", "steps=4", "run.save_every=1"), resume=True)
    steps = [r["step"] for r in read_metrics(out["run_dir"]) if "reward/mean" in r]
    assert steps == [1, 2, 3, 4]  # nothing re-run, nothing skipped
    assert (ckpt / "latest").read_text().strip() == "step-0000004"
    state = json.loads((ckpt / "step-0000004" / "state.json").read_text())
    assert state["step"] == 4 and "scheduler" in state


def test_rloo_command_defaults_select_the_estimator():
    from rewardloop.cli import COMMANDS

    assert "estimator=rloo" in COMMANDS["rloo"].defaults
    assert load_config(GRPOConfig, CONFIGS / "rloo" / "arithmetic.yaml").estimator == "rloo"


@pytest.mark.parametrize("preset", ["grpo/arithmetic.yaml", "rloo/arithmetic.yaml", "grpo/code.yaml"])
def test_presets_validate(preset):
    cfg = load_config(GRPOConfig, CONFIGS / preset)
    assert cfg.steps >= 1 and cfg.group_size >= 2


# -- slow: learning on arithmetic -----------------------------------------------------------------------------
#
# The SFT model (tests/conftest.py: sft_arithmetic_careless) learned from demonstrations 70% of which are written
# carelessly as "85."; exact match only rewards "85". GRPO has to find and reinforce the rewarded answer on training
# prompts, and that must carry over to held-out problems. (On plain SFT data this ≈1M-parameter model's accuracy is
# limited by its arithmetic, which 40 RL steps do not change measurably; see docs/algorithms/grpo.md, "Measured".)


@pytest.mark.slow
@pytest.mark.parametrize("autocast", ["off", "bfloat16"])
def test_grpo_raises_arithmetic_accuracy_over_sft(tmp_path, sft_arithmetic_careless, autocast):
    overrides = [f"model.path={sft_arithmetic_careless}", "steps=20", "eval_every=20", f"model.autocast={autocast}"]
    overrides += [f"run.root={tmp_path}", "run.name=g", "run.progress=false"]
    out = train(load_config(GRPOConfig, CONFIGS / "grpo" / "arithmetic.yaml", overrides))
    before, after = out["initial"]["eval/accuracy"], out["final"]["eval/accuracy"]
    print(f"GRPO arithmetic ({autocast}): greedy test accuracy {before:.3f} (SFT) -> {after:.3f} (GRPO, 20 steps)")
    assert after >= before + 0.1


def test_code_preset_runs_end_to_end(tmp_path):
    # The `code` preset on a tiny random model: generation → sandboxed unit tests → advantages → update.
    overrides = ["steps=1", "prompts_per_step=2", "group_size=2", "gen.max_new_tokens=12", "eval_gen.max_new_tokens=12"]
    overrides += ["eval_size=2", f"run.root={tmp_path}", "run.name=code", "run.progress=false"]
    out = train(load_config(GRPOConfig, CONFIGS / "grpo" / "code.yaml", overrides))
    row = next(r for r in read_metrics(out["run_dir"]) if "reward/mean" in r)
    assert row["reward/task"] == 0.0  # random tokens pass no unit test
    assert "reward/has_return" in row and row["reward/errors"] == 0
    assert out["final"]["eval/accuracy"] == 0.0


def test_sampler_logprobs_stand_in_for_a_teacher_forced_old_policy_pass(tmp_path, tiny_model, tokenizer):
    """reuse_sampler_logprobs (the default) must give the π_old that a separate forward would compute."""
    from rewardloop.algorithms.grpo import estimate
    from rewardloop.config import GenerationConfig
    from rewardloop.rewards import RewardSet
    from rewardloop.rollout.collect import collect

    model = tiny_model("llama-1m", seed=3)
    rows = [{"prompt": p, "answer": "1"} for p in ("1+2=", "37+48=", "5+5=")]
    gen = GenerationConfig(max_new_tokens=6, temperature=0.8)
    rewards = RewardSet({"len": lambda p, c, **_: [float(len(x)) for x in c]}, {"len": 1.0})
    ro = collect(model, tokenizer, rows, gen, rewards, samples_per_prompt=4, generator=torch.Generator().manual_seed(0))
    cfg = tiny(tmp_path, "x", "gen.temperature=0.8", "group_size=4")
    reused = estimate(model, None, ro, cfg)
    recomputed = estimate(model, None, ro, cfg.model_copy(update={"reuse_sampler_logprobs": False}))
    mask = reused.mask.bool()
    assert mask.any()
    assert torch.allclose(reused.old_logp[mask], recomputed.old_logp[mask], atol=1e-4)
    assert torch.equal(reused.adv, recomputed.adv)


class TwoTurnEnv:
    """Turn 1 pays 0.5 for any answer; turn 2 pays 1 for an answer of at most 2 characters."""

    def __init__(self, seed: int = 0) -> None:
        self.seed, self.turn = seed, 0

    def reset(self, *, seed=None):
        self.turn = 0
        return f"{self.seed % 7}+1="

    def step(self, action: str):
        self.turn += 1
        if self.turn == 1:
            return " again:", 0.5, False, {"seed": self.seed}
        return None, float(len(action) <= 2), True, {"seed": self.seed}


def test_grpo_on_a_multi_turn_environment_groups_episodes_by_seed(tmp_path):
    from rewardloop.algorithms.grpo import estimate
    from rewardloop.rollout.collect import collect_step

    cfg = tiny(tmp_path, "env", "max_turns=2", "steps=2")
    cfg = cfg.model_copy(update={"env": TwoTurnEnv})
    res = train(cfg)
    rows = read_metrics(res["run_dir"])
    last = rows[-1]
    k = (last["reward/mean"] - 0.5) * cfg.prompts_per_step * cfg.group_size  # 0.5 + (short second answers)/B
    assert k == pytest.approx(round(k), abs=1e-4)
    # Evaluation ran greedy episodes on the environment (0.5 or 1.5 each over eval_size=8), not arithmetic rows.
    j = (last["eval/reward"] - 0.5) * cfg.eval_size
    assert j == pytest.approx(round(j), abs=1e-4) and 0 <= round(j) <= cfg.eval_size
    # One collect path: the G episodes of a group start from the same seed; environment tokens are not trained.
    model, tok = load_pretrained(cfg.model)
    ro = collect_step(model, tok, cfg.gen, None, env_factory=TwoTurnEnv, n_groups=3, samples_per_prompt=4,
                      group_start=5, max_turns=2)  # fmt: skip
    ro.rewards, ro.valid = ro.token_rewards.sum(1), torch.ones(len(ro), dtype=torch.bool)
    assert ro.group_ids.tolist() == [5] * 4 + [6] * 4 + [7] * 4
    seeds = [info[0]["seed"] for info in ro.infos]
    assert all(len(set(seeds[g * 4 : g * 4 + 4])) == 1 for g in range(3)) and len(set(seeds)) == 3
    est = estimate(model, None, ro, cfg)
    assert torch.equal(est.mask, ro.action_mask.float()) and (ro.response_mask - ro.action_mask).sum() > 0
