"""Small pieces every training loop uses: seeding, optimizer + schedule, evaluation by generation, progress.

Deliberately not a Trainer base class: each algorithm's ``train`` calls these and keeps its loop visible.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from rewardloop.config import GenerationConfig, OptimConfig
from rewardloop.envs.tasks import Task
from rewardloop.rollout import generate


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(
    params, cfg: OptimConfig, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the trainable ``params`` with warm-up and a constant / cosine / linear schedule."""
    params = [p for p in params if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
        if cfg.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if cfg.schedule == "linear":
            return 1.0 - progress
        return 1.0

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def clip_and_step(model: torch.nn.Module, opt, sched, max_grad_norm: float | None) -> float:
    """Gradient-norm clipping, optimizer and scheduler step; returns the pre-clip grad norm."""
    params = [p for p in model.parameters() if p.requires_grad]
    norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm else float("inf"))
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return float(norm)


@torch.no_grad()
def evaluate_generation(
    model,
    tokenizer,
    task: Task,
    rows: list[dict[str, Any]],
    gen: GenerationConfig,
    batch_size: int = 64,
    seed: int = 0,
) -> dict[str, Any]:
    """Generate for ``rows`` (greedy when gen.temperature == 0) and score with the task's reward.

    Returns {"reward": mean reward, "accuracy": fraction with reward ≥ 1 (exact-match style tasks), "completions"}.
    """
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    completions: list[str] = []
    for i in range(0, len(rows), batch_size):
        chunk = rows[i : i + batch_size]
        out = generate(model, tokenizer, [r["prompt"] for r in chunk], gen, generator=generator)
        completions += out.responses
    rewards = task.score(rows, completions)
    model.train(was_training)
    return {
        "reward": float(np.mean(rewards)) if rewards else float("nan"),
        "accuracy": float(np.mean([r >= 1.0 for r in rewards])) if rewards else float("nan"),
        "rewards": rewards,
        "completions": completions,
    }


def batches(n: int, batch_size: int, rng: random.Random, skip: int = 0) -> Iterator[list[int]]:
    """Endless shuffled index batches over ``range(n)`` (reshuffled each epoch), after dropping the first ``skip``.

    To resume at step k, pass a freshly seeded ``rng`` and ``skip=k``: the stream is replayed to where it was. (Saving
    ``rng.getstate()`` is not enough: mid-epoch the rest of the current permutation lives in the generator.)
    """

    def stream() -> Iterator[list[int]]:
        while True:
            order = list(range(n))
            rng.shuffle(order)
            for i in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
                yield order[i : i + batch_size]

    it = stream()
    for _ in range(skip):
        next(it)
    return it


def progress(total: int, initial: int, desc: str, enabled: bool) -> tqdm:
    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True, leave=True)


def show(bar: tqdm, row: dict[str, Any], keys: tuple[str, ...]) -> None:
    """Put the current values of ``keys`` on the progress bar."""
    bar.set_postfix({k: f"{row[k]:.4g}" for k in keys if isinstance(row.get(k), int | float)}, refresh=False)


def finish_policy_run(run, model, tokenizer, lora, history: dict[str, Any], eval_key: str) -> dict[str, Any]:
    """Save ``final/policy`` (LoRA merged or as adapter per config) and return the usual summary of a run:
    {"run_dir", "model_dir", "initial": first eval row, "final": last logged row that has ``eval_key``}."""
    final = next((r for r in reversed(run.metrics()) if eval_key in r), {})
    model_dir = run.save_final("policy", model, tokenizer, lora_save=lora.save if lora else "merged")
    return {"run_dir": run.path, "model_dir": model_dir, "initial": history.get("initial"), "final": final}
