"""Worker (b, c, e, f): rewardloop's own GRPO or PPO ``train`` on a saved tiny model, timed from its metrics.

Spec: {"algo": "grpo" | "ppo", "model_dir", "steps", "seed", "threads", "out_dir", "lr", "max_new_tokens",
"eval_every", "eval_size", "eval_tokens", plus GRPO: "prompts_per_step", "group_size", "beta"; PPO: "batch_size",
"epochs", "kl_coef", "vf_coef", "reward_dir" (a rewardloop reward model; default: the arithmetic exact match)};
optional "bf16" (model.autocast = bfloat16) and "gradient_checkpointing" (both off by default, as in rewardloop),
GRPO "micro_batch_size" (default: the whole batch in one forward/backward).
Or a preset: {"algo", "config" (a YAML under configs/), "overrides" (dotted, as on the command line), "seed",
"threads", "out_dir"}: the algorithm's ``train`` on that config exactly as ``rewardloop <algo> --config`` runs it.
Step time = the sum of the phase times the algorithm logs (time/*): evaluation, logging and checkpoints are outside.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from benchmarks.common import emit, patch_module_clock, peak_rss_mb, read_spec, setup_torch

TRAINING_PEAK: list[float] = []


def record_peak_before_saving() -> None:
    """Peak RSS of training alone: read it when the first checkpoint starts (``train`` always writes one at the
    last step, and serialising the optimizer state adds copies; the TRL workers run with save_strategy='no')."""
    from rewardloop.runs import RunDir

    for name in ("save_checkpoint", "save_final"):
        original = getattr(RunDir, name)

        def wrapped(self, *args, _original=original, **kwargs):
            if not TRAINING_PEAK:
                TRAINING_PEAK.append(peak_rss_mb())
            return _original(self, *args, **kwargs)

        setattr(RunDir, name, wrapped)


def common_sections(spec: dict) -> dict:
    from rewardloop.config import GenerationConfig, ModelConfig, OptimConfig, RunConfig

    return {
        "model": ModelConfig(
            path=spec["model_dir"],
            device="cpu",
            max_length=512,
            autocast="bfloat16" if spec.get("bf16") else "off",
            gradient_checkpointing=spec.get("gradient_checkpointing", False),
        ),
        "gen": GenerationConfig(max_new_tokens=spec["max_new_tokens"], temperature=1.0),
        "eval_gen": GenerationConfig(max_new_tokens=spec.get("eval_tokens", 8), temperature=0.0),
        "optim": OptimConfig(lr=spec["lr"], betas=(0.9, 0.95), weight_decay=0.0, max_grad_norm=1.0),
        "run": RunConfig(root=spec["out_dir"], seed=spec["seed"], progress=False, name=spec.get("name")),
        "steps": spec["steps"],
        "eval_every": spec.get("eval_every") or spec["steps"],
        "eval_size": spec.get("eval_size", 1),
    }


def run_grpo(spec: dict) -> dict:
    from rewardloop.algorithms import grpo
    from rewardloop.algorithms.grpo import GRPOConfig, train

    patch_module_clock(grpo)

    cfg = GRPOConfig(
        **common_sections(spec),
        prompts_per_step=spec["prompts_per_step"],
        group_size=spec["group_size"],
        kl_coef=spec["beta"],
        **({"micro_batch_size": spec["micro_batch_size"]} if "micro_batch_size" in spec else {}),  # else the default
        loss_agg="token-mean",
        n_samples=0,
    )
    return train(cfg)


def run_ppo(spec: dict) -> dict:
    from rewardloop.algorithms import ppo
    from rewardloop.algorithms.ppo import PPOConfig, train
    from rewardloop.rewards import RewardSpec

    patch_module_clock(ppo)

    rm = (
        {"rewards": [RewardSpec(model=spec["reward_dir"])], "task_reward_weight": 0.0} if spec.get("reward_dir") else {}
    )
    B = spec["batch_size"]
    cfg = PPOConfig(
        **common_sections(spec),
        **rm,
        critic_optim=common_sections(spec)["optim"],
        critic="separate",
        batch_size=B,
        mini_batch_size=B,
        micro_batch_size=B,
        epochs=spec["epochs"],
        kl_coef=spec["kl_coef"],
        vf_coef=spec["vf_coef"],
        sample_k=0,
    )
    return train(cfg)


def run_preset(spec: dict) -> dict:
    """``rewardloop <algo> --config <config> <overrides>``, in this process (timed like the other modes)."""
    from rewardloop.algorithms import grpo, ppo
    from rewardloop.config import load_config

    algo = grpo if spec["algo"] == "grpo" else ppo
    config_class = grpo.GRPOConfig if algo is grpo else ppo.PPOConfig
    patch_module_clock(algo)
    run = [f"run.root={spec['out_dir']}", f"run.seed={spec['seed']}", "run.progress=false", "model.device=cpu"]
    return algo.train(load_config(config_class, spec["config"], [*run, *spec.get("overrides", [])]))


def phase_times(rows: list[dict]) -> dict[str, list[float]]:
    """{phase: [seconds per step]} from the logged ``time/<phase>`` metrics."""
    phases: dict[str, list[float]] = {}
    for r in rows:
        for k, v in r.items():
            if k.startswith("time/"):
                phases.setdefault(k.removeprefix("time/"), []).append(v)
    return phases


def main() -> None:
    spec = read_spec()
    setup_torch(spec.get("threads"), spec["seed"])
    record_peak_before_saving()
    run = run_preset if "config" in spec else run_grpo if spec["algo"] == "grpo" else run_ppo
    result = run(spec)
    rows = [json.loads(line) for line in (Path(result["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    if not spec.get("keep_run"):  # checkpoints of 30M models with optimizer state add up to GBs over a full run
        shutil.rmtree(result["run_dir"], ignore_errors=True)
    steps = [r for r in rows if r["step"] > 0 and any(k.startswith("time/") for k in r)]
    phases = phase_times(steps)
    step_seconds = [sum(r[k] for k in r if k.startswith("time/")) for r in steps]
    curve, elapsed = [], 0.0
    by_step = dict(zip([r["step"] for r in steps], step_seconds, strict=True))
    for r in rows:
        elapsed += by_step.get(r["step"], 0.0) if r["step"] > 0 else 0.0
        if "eval/accuracy" in r:
            curve.append({"step": r["step"], "train_seconds": elapsed, "accuracy": r["eval/accuracy"]})
    rewards = [r.get("reward/mean") for r in steps]
    emit(
        {
            "step_seconds": step_seconds,
            "phases": phases,
            "rewards": rewards,
            "response_tokens": [r.get("response_length", r.get("response/length")) for r in steps],
            "curve": curve,
            "peak_rss_mb": round(TRAINING_PEAK[0] if TRAINING_PEAK else peak_rss_mb(), 1),
            "peak_rss_mb_with_checkpoint": round(peak_rss_mb(), 1),
        }
    )


if __name__ == "__main__":
    main()
