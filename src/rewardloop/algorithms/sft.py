"""Supervised fine-tuning (maximum likelihood) — the baseline that RL improves upon, and how base models are made.

Loss: L(θ) = − (1/N) Σ_t log π_θ(y_t | x, y_<t) over completion tokens only (prompt tokens masked out with −100), or
over every token for plain ``text`` rows. Evaluation: teacher-forced loss on the test split and task reward /
accuracy of greedy generations.
"""

from __future__ import annotations

import random
from typing import Any

import torch
from pydantic import Field

from rewardloop.algorithms.common import (
    batches,
    clip_and_step,
    evaluate_generation,
    finish_policy_run,
    guard_numerics,
    make_optimizer,
    progress,
    seed_everything,
    show,
)
from rewardloop.config import GenerationConfig, ModelConfig, OptimConfig, RunConfig, Section
from rewardloop.data.tokenize import IGNORE, collate, tokenize_row
from rewardloop.envs.tasks import TaskConfig, load_task
from rewardloop.models import count_parameters, load_pretrained, mixed_precision
from rewardloop.runs import RunDir


class SFTConfig(Section):
    model: ModelConfig = ModelConfig(disable_dropout=False)
    task: TaskConfig = TaskConfig()
    optim: OptimConfig = OptimConfig(lr=3e-3, warmup_steps=50, schedule="cosine")
    gen: GenerationConfig = GenerationConfig(max_new_tokens=8, temperature=0.0)
    run: RunConfig = RunConfig()
    steps: int = Field(800, ge=1)
    batch_size: int = Field(64, ge=1)
    eval_every: int = Field(200, ge=1)
    eval_size: int = Field(200, ge=1, description="test rows used for generation accuracy")


def nll_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean negative log-likelihood of the labelled tokens (transformers shifts the labels)."""
    return model(**batch).loss


@torch.no_grad()
def eval_loss(model, examples, pad_id: int, device, batch_size: int = 64) -> float:
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(examples), batch_size):
        batch = collate(examples[i : i + batch_size], pad_id, device)
        n = int((batch["labels"][:, 1:] != IGNORE).sum())
        total, count = total + float(nll_loss(model, batch)) * n, count + n
    model.train(was_training)
    return total / max(count, 1)


def train(cfg: SFTConfig, resume: bool = False) -> dict[str, Any]:
    """Run SFT; returns {"run_dir", "model_dir", "final": last eval metrics, "initial": first eval metrics}."""
    # 1. Set-up: seed, run directory, model, data.
    seed_everything(cfg.run.seed)
    run = RunDir.open(cfg.run, "sft", cfg, resume=resume)
    model, tokenizer = load_pretrained(cfg.model)
    device = next(model.parameters()).device
    task = load_task(cfg.task, kind="sft", tokenizer=tokenizer, max_length=cfg.model.max_length)
    train_ex = [tokenize_row(tokenizer, r, cfg.model.max_length) for r in task.train]
    test_rows = task.test[: cfg.eval_size]
    test_ex = [tokenize_row(tokenizer, r, cfg.model.max_length) for r in test_rows]
    opt, sched = make_optimizer(model.parameters(), cfg.optim, cfg.steps)
    rng = random.Random(cfg.run.seed)
    step, history = 0, {}
    if (state := run.resume({"policy": model}, {"policy": opt})) is not None:
        step, history = state["step"], state.get("history", {})
        sched.load_state_dict(state["scheduler"])

    def evaluate() -> dict[str, Any]:
        loss = eval_loss(model, test_ex, tokenizer.pad_token_id, device)
        if task.reward_fn is None:
            return {"eval/loss": loss}
        res = evaluate_generation(model, tokenizer, task, test_rows, cfg.gen, seed=cfg.run.seed)
        return {"eval/loss": loss, "eval/reward": res["reward"], "eval/accuracy": res["accuracy"]}

    if step == 0:
        history["initial"] = run.log(0, evaluate() | {"params": count_parameters(model)})
    bar = progress(cfg.steps, step, "sft", cfg.run.progress)
    order = batches(len(train_ex), min(cfg.batch_size, len(train_ex)), rng, skip=step)  # resume: replay the order
    model.train()
    bad = 0  # updates in a row with a non-finite loss / gradient (skipped)
    last = run.last_step(step, cfg.steps)  # steps done, or run.max_cpu_s spent
    while not last:
        # 2. One optimisation step on a shuffled batch.
        batch = collate([train_ex[i] for i in next(order)], tokenizer.pad_token_id, device)
        with mixed_precision(cfg.model, device):  # bf16 forward when model.autocast is set
            loss = nll_loss(model, batch)
        loss.backward()
        grad_norm = clip_and_step(model, opt, sched, cfg.optim.max_grad_norm)
        step += 1
        last = run.last_step(step, cfg.steps)
        row = {"train/loss": loss.item(), "grad_norm": grad_norm, "lr": sched.get_last_lr()[0]}
        bad = guard_numerics(row, bad, cfg.run.max_bad_updates, step)
        # 3. Evaluate, log, checkpoint.
        if step % cfg.eval_every == 0 or last:
            row |= evaluate()
        if step % cfg.run.log_every == 0 or "eval/loss" in row:
            row = run.log(step, row)
        show(bar, row, ("train/loss", "eval/loss", "eval/accuracy"))
        bar.update(1)
        if last or run.due(step, cfg.steps, cfg.run.save_every):
            state = {"scheduler": sched.state_dict(), "history": history}
            run.save_checkpoint(step, {"policy": (model, tokenizer)}, {"policy": opt}, state)
    bar.close()
    return finish_policy_run(run, model, tokenizer, cfg.model.lora, history, "eval/loss")
