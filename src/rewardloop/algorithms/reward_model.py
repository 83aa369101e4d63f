"""Reward modelling from pairwise preferences (Bradley–Terry), with ensembles for uncertainty.

Model: r_θ(x, y) = w·h_T, the bias-free scalar head read at the last real token of prompt x + response y
(``models/value_head.py``; saved as a Hugging Face ``...ForSequenceClassification`` checkpoint).
Loss (Bradley & Terry 1952; Ouyang et al. 2022 eq. 1; Llama-2 §3.2.2 margin):

    L(θ) = − E_(x, y_c, y_r) log σ(r_θ(x, y_c) − r_θ(x, y_r) − m)

with m the optional per-row ``margin`` column (0 otherwise). Metric: pairwise accuracy P[r(x, y_c) > r(x, y_r)] on a
held-out split. After training, the mean and standard deviation of r over the training responses are saved with the
model, so downstream users (PPO) read normalised scores (r − μ) / σ. An ensemble of k members (different seeds and
bootstrap resamples of the pairs; Coste et al. 2023, "Reward Model Ensembles Help Mitigate Overoptimization")
exposes the members' mean and standard deviation and the conservative score mean − λ·std.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from rewardloop.algorithms.common import (
    batches,
    clip_and_step,
    guard_numerics,
    make_optimizer,
    progress,
    seed_everything,
    show,
)
from rewardloop.config import ModelConfig, OptimConfig, RunConfig, Section
from rewardloop.envs.tasks import TaskConfig, check_preference_task, load_task, reject_keys
from rewardloop.models import load_pretrained, load_tokenizer, mixed_precision
from rewardloop.models.value_head import ValueModel, load_value_model
from rewardloop.rewards.model import ENSEMBLE_FILE, encode_texts, score_texts
from rewardloop.runs import RunDir


class PreferenceDataConfig(Section):
    """The ``reviews`` simulated annotator's pairs (used when ``task.name`` is ``reviews``). Your own pairs come from
    ``task.path`` / ``task.dataset`` (``task.name: dataset``), as in every command."""

    reviews_pairs: int = Field(2000, ge=2, description="pairs from the reviews simulated annotator")
    noise: float = Field(0.1, ge=0.0, le=0.5, description="simulated annotator label-flip probability")
    test_noise: float = Field(0.0, ge=0.0, le=0.5, description="label noise of the held-out annotator pairs")
    seed: int = 0
    test_size: int = Field(200, ge=1, description="held-out annotator pairs")

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        return reject_keys(data, {"path", "test_path"}, "data.")


class RewardModelConfig(Section):
    """Bradley–Terry reward models (ensembles) on your preference pairs (``task.name: dataset`` with ``task.path``;
    held out: ``task.test_path`` or the last ``task.n_test`` rows) or the reviews annotator's (``task.name: reviews``)."""

    model: ModelConfig = ModelConfig()
    task: TaskConfig = TaskConfig(name="reviews")
    data: PreferenceDataConfig = PreferenceDataConfig()
    optim: OptimConfig = OptimConfig(lr=1e-3, warmup_steps=20, schedule="cosine")
    run: RunConfig = RunConfig()
    steps: int = Field(300, ge=1, description="optimisation steps per ensemble member")
    batch_size: int = Field(32, ge=1)
    ensemble: int = Field(1, ge=1, description="number of reward models (different seeds)")
    bootstrap: bool = Field(True, description="ensemble members train on bootstrap resamples of the pairs")
    eval_every: int = Field(100, ge=1)

    @model_validator(mode="after")
    def _check(self) -> RewardModelConfig:
        check_preference_task(self.task, "a reward model")
        return self


# ---------------------------------------------------------------------------------------------------------------
# Pure pieces
# ---------------------------------------------------------------------------------------------------------------


def bradley_terry_loss(
    r_chosen: torch.Tensor, r_rejected: torch.Tensor, margin: torch.Tensor | None = None
) -> torch.Tensor:
    """− mean log σ(r_c − r_r − m) over pairs [B] (logsigmoid is the numerically stable form)."""
    diff = r_chosen - r_rejected - (margin if margin is not None else 0.0)
    return -F.logsigmoid(diff).mean()


def pairwise_accuracy(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> float:
    """Fraction of pairs with r_c > r_r (ties count as half)."""
    return float(((r_chosen > r_rejected).float() + 0.5 * (r_chosen == r_rejected).float()).mean())


def bootstrap_indices(n: int, seed: int) -> list[int]:
    """n indices drawn with replacement (Efron's bootstrap)."""
    rng = random.Random(seed)
    return [rng.randrange(n) for _ in range(n)]


# Scoring a trained model or ensemble is ``rewards.model.RewardModelScorer``: the one scorer every trainer uses.


# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------


def load_preference_splits(cfg: RewardModelConfig, tokenizer=None, max_length: int | None = None):
    """(train rows, test rows) of {"prompt", "chosen", "rejected", ["margin"]}: the dataset task's rows, or pairs
    from the reviews annotator."""
    if cfg.task.name == "dataset":
        task = load_task(cfg.task, kind="preference", tokenizer=tokenizer, max_length=max_length)
        return task.train, task.test
    from rewardloop.envs.reviews import annotator_pairs_from_templates

    # Held-out pairs come from their own seed, labelled by the gold (noise-free by default) annotator.
    data = cfg.data
    train = annotator_pairs_from_templates(data.seed, data.reviews_pairs, noise=data.noise)
    return train, strict_pairs(
        annotator_pairs_from_templates(data.seed + 7919, 2 * data.test_size, noise=data.test_noise)
    )[: data.test_size]


def strict_pairs(rows: list[dict]) -> list[dict]:
    """Drop `reviews` pairs whose two texts have equal gold utility (their label is a coin flip)."""
    from rewardloop.envs.reviews import SimulatedAnnotator

    gold = SimulatedAnnotator(noise=0.0)
    return [r for r in rows if gold.gold_prefer(r["prompt"], r["chosen"], r["rejected"]) != 0.5]


def _pair_batch(model: ValueModel, tok, rows: list[dict], device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(r_chosen [B], r_rejected [B], margin [B]) with one forward over the 2B sequences."""
    prompts = [r["prompt"] for r in rows] * 2
    responses = [r["chosen"] for r in rows] + [r["rejected"] for r in rows]
    ids, mask = encode_texts(tok, prompts, responses, device)
    scores = model.score(ids, mask)
    margin = torch.tensor([float(r.get("margin", 0.0) or 0.0) for r in rows], device=device)
    return scores[: len(rows)], scores[len(rows) :], margin


@torch.no_grad()
def evaluate_pairs(model: ValueModel, tok, rows: list[dict], batch_size: int = 64) -> dict[str, float]:
    """Held-out pairwise accuracy, loss and mean margin r_c − r_r."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    parts = [_pair_batch(model, tok, rows[i : i + batch_size], device) for i in range(0, len(rows), batch_size)]
    rc, rr, m = (torch.cat([p[j] for p in parts]) for j in range(3))
    model.train(was)
    return {
        "eval/accuracy": pairwise_accuracy(rc, rr),
        "eval/loss": float(bradley_terry_loss(rc, rr, m)),
        "eval/margin": float((rc - rr).mean()),
    }


# ---------------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------------


def _train_member(cfg: RewardModelConfig, run: RunDir, k: int, train_rows, test_rows, resume: bool) -> dict[str, Any]:
    """Train ensemble member ``k`` and save it to final/reward[-k]; returns its final eval metrics."""
    # 1. Model: backbone from cfg.model (an SFT policy or a preset) + a fresh scalar head.
    seed_everything(cfg.run.seed + k)
    lm, tok = load_pretrained(cfg.model)
    model = ValueModel(lm, kind="reward")
    device = next(model.parameters()).device
    rows = (
        [train_rows[i] for i in bootstrap_indices(len(train_rows), cfg.run.seed + k)]
        if (cfg.ensemble > 1 and cfg.bootstrap)
        else train_rows
    )
    opt, sched = make_optimizer(model.parameters(), cfg.optim, cfg.steps)
    rng = random.Random(cfg.run.seed + k)
    step, name = 0, "reward" if cfg.ensemble == 1 else f"reward-{k}"
    offset = k * cfg.steps  # metrics.jsonl and checkpoint steps keep increasing across members
    if resume:  # the latest checkpoint is this member's (continue it) or an earlier, finished member's (start over)
        ckpt = run.latest_checkpoint()
        if ckpt is not None and json.loads((ckpt / "state.json").read_text()).get("member") == k:
            state = run.resume({"reward": model}, {"reward": opt})
            step = state["step"] - offset
            sched.load_state_dict(state["scheduler"])
        else:
            run.drop_logs_after(offset)  # rows this member logged before the crash
    bar = progress(cfg.steps, step, f"reward {k + 1}/{cfg.ensemble}", cfg.run.progress)
    order = batches(len(rows), min(cfg.batch_size, len(rows)), rng, skip=step)  # resume: replay the data order
    model.train()
    bad = 0  # updates in a row with a non-finite loss / gradient (skipped)
    while step < cfg.steps:
        # 2. Bradley–Terry step on a batch of pairs.
        with mixed_precision(cfg.model, device):  # bf16 forward when model.autocast is set
            rc, rr, margin = _pair_batch(model, tok, [rows[i] for i in next(order)], device)
        loss = bradley_terry_loss(rc, rr, margin)
        loss.backward()
        grad_norm = clip_and_step(model, opt, sched, cfg.optim.max_grad_norm)
        step += 1
        row = {"member": k, "train/loss": loss.item(), "train/accuracy": pairwise_accuracy(rc, rr)}
        row |= {"train/margin": float((rc - rr).mean().detach()), "grad_norm": grad_norm, "lr": sched.get_last_lr()[0]}
        bad = guard_numerics(row, bad, cfg.run.max_bad_updates, offset + step)
        # 3. Evaluate on held-out pairs, log, checkpoint.
        if step % cfg.eval_every == 0 or step == cfg.steps:
            row |= evaluate_pairs(model, tok, test_rows)
        if step % cfg.run.log_every == 0 or "eval/accuracy" in row:
            row = run.log(offset + step, row)
        show(bar, row, ("train/loss", "eval/accuracy"))
        bar.update(1)
        if run.due(step, cfg.steps, cfg.run.save_every):
            state = {"member": k, "scheduler": sched.state_dict()}
            run.save_checkpoint(offset + step, {"reward": (model, tok)}, {"reward": opt}, state)
    bar.close()
    # 4. Normalisation statistics over the training responses (chosen and rejected), saved with the model.
    model.eval()
    sample = train_rows[:1000]
    scores = score_texts(
        model, tok, [r["prompt"] for r in sample] * 2, [r["chosen"] for r in sample] + [r["rejected"] for r in sample]
    )
    model.stats = {"mean": float(scores.mean()), "std": float(scores.std().clamp(min=1e-6))}
    final = evaluate_pairs(model, tok, test_rows)
    model_dir = run.save_final(name, model, tok)
    return {"model_dir": model_dir, **final, **{f"stats/{k}": v for k, v in model.stats.items()}}


def train(cfg: RewardModelConfig, resume: bool = False) -> dict[str, Any]:
    """Train ``cfg.ensemble`` reward models; returns {"run_dir", "model_dir", "accuracy", "members": [...]}.

    ``model_dir`` is final/reward (one model) or final/ (an ensemble directory with ensemble.json).
    """
    run = RunDir.open(cfg.run, "reward", cfg, resume=resume)
    tok = load_tokenizer(cfg.model)
    train_rows, test_rows = load_preference_splits(cfg, tok, cfg.model.max_length)
    members = []
    for k in range(cfg.ensemble):
        name = "reward" if cfg.ensemble == 1 else f"reward-{k}"
        done = run.path / "final" / name
        if resume and (done / "config.json").exists():
            model, mtok = load_value_model(done, cfg.model.device)
            members.append({"model_dir": done, **evaluate_pairs(model, mtok, test_rows)})
            continue
        members.append(_train_member(cfg, run, k, train_rows, test_rows, resume))
    if cfg.ensemble == 1:
        model_dir = members[0]["model_dir"]
    else:
        model_dir = run.path / "final"
        names = [Path(m["model_dir"]).name for m in members]
        (model_dir / ENSEMBLE_FILE).write_text(json.dumps({"members": names}, indent=1))
    acc = [m["eval/accuracy"] for m in members]
    summary = {"accuracy": sum(acc) / len(acc), "member_accuracy": acc, "n_train": len(train_rows)}
    if not any("final/accuracy" in r for r in run.metrics()):  # a resumed, finished run has logged it already
        run.log(cfg.ensemble * cfg.steps, {"final/" + k: v for k, v in summary.items() if k != "member_accuracy"})
    run.close()
    return {"run_dir": run.path, "model_dir": model_dir, **summary, "members": members}
