"""Reward models from human feedback: pairs (Bradley–Terry), thumbs (logistic), ratings and engagement
(regression, engagement weighted by inverse propensity), with ensembles for uncertainty.

Model: r_θ(x, y) = w·h_T, the bias-free scalar head read at the last real token of prompt x + response y
(``models/value_head.py``; saved as a Hugging Face ``...ForSequenceClassification`` checkpoint). Losses by
``feedback`` (Bradley & Terry 1952; Ouyang et al. 2022 eq. 1; Llama-2 §3.2.2 margin):

    pairs       L(θ) = − E_(x, y_c, y_r) log σ(r_θ(x, y_c) − r_θ(x, y_r) − m)       m: optional per-row ``margin``
    thumbs      L(θ) = − E_i w_i [u_i log σ(r_i) + (1 − u_i) log σ(−r_i)]          u_i = 1 for thumbs-up
    ratings     L(θ) = E_i w_i (r_i − t_i)²                                       t = score normalised to mean 0, std 1
    engagement  the same regression; t = the response's events scored by ``EngagementWeights`` (normalised), and
                w_i ∝ min(1/p_i, ips_clip) with p_i = P(response shown | context) the server logged, self-normalised
                to mean 1 over the rows (w = 1 otherwise); training draws the rows in proportion to w_i (systematic
                resampling, ``resample_by_weight``), the held-out metrics weight them by w_i

Inverse-propensity weights make the loss an estimate of the loss over every candidate equally, not over what the
serving policy chose to show most (Horvitz & Thompson 1952; clipping: Ionides 2008; self-normalised: Swaminathan &
Joachims 2015). Metric: held-out accuracy — pairs: P[r(x, y_c) > r(x, y_r)]; pointwise: concordance, P[r_i > r_j]
over held-out rows with t_i > t_j (the AUC for thumbs), weighted by w_i w_j. After training, the mean and standard
deviation of r over the training responses are saved with the model, so downstream users (PPO) read normalised
scores (r − μ) / σ. An ensemble of k members (different seeds and bootstrap resamples of the rows; Coste et al.
2023, "Reward Model Ensembles Help Mitigate Overoptimization") exposes the members' mean and standard deviation and
the conservative score mean − λ·std.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

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
from rewardloop.rewards.engagement import EngagementWeights, engagement_score
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


Feedback = Literal["pairs", "thumbs", "ratings", "engagement"]
# the dataset kind (``data.load_rows``) each kind of feedback is read as
FEEDBACK_KINDS = {"pairs": "preference", "thumbs": "kto", "ratings": "rating", "engagement": "engagement"}


class RewardModelConfig(Section):
    """Reward models (ensembles) on your feedback (``task.name: dataset`` with ``task.path``; held out:
    ``task.test_path`` or the last ``task.n_test`` rows): pairs (Bradley–Terry), thumbs (logistic), ratings or
    engagement (regression; engagement weighted by inverse propensity) — or on the reviews annotator's
    (``task.name: reviews``)."""

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
    feedback: Feedback = Field(
        "pairs",
        description="pairs (prompt/chosen/rejected) | thumbs (prompt/completion/label) | ratings (prompt/completion/"
        "score) | engagement (rows of `rewardloop feedback export --format engagement`)",
    )
    engagement: EngagementWeights = Field(
        EngagementWeights(), description="engagement: weights that turn a response's events into one target"
    )
    ips: bool = Field(True, description="engagement: weight each response by its inverse propensity 1/p")
    ips_clip: float = Field(10.0, ge=1.0, description="engagement: largest inverse-propensity weight")

    @model_validator(mode="after")
    def _check(self) -> RewardModelConfig:
        check_preference_task(
            self.task, "a reward model", "feedback (prompt/chosen/rejected; feedback=thumbs | ratings | engagement: "
            "prompt/completion + label | score | event, value, propensity)",
        )  # fmt: skip
        if self.feedback == "engagement" and self.task.name != "dataset":
            raise ValueError(
                "feedback=engagement needs logged events: task.name: dataset with task.path (rows of "
                "`rewardloop feedback export --format engagement`); reviews simulates pairs, thumbs, ratings"
            )
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


def logistic_loss(r: torch.Tensor, label: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """mean w · −[u log σ(r) + (1 − u) log σ(−r)]: scores r [B], labels u [B] in {0, 1}, weights w [B] → []."""
    nll = F.binary_cross_entropy_with_logits(r, label.to(r.dtype), reduction="none")  # [B]
    return nll.mean() if weight is None else (weight * nll).mean()


def regression_loss(r: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """mean w (r − t)²: scores r [B], targets t [B], weights w [B] → []."""
    se = (r - target) ** 2  # [B]
    return se.mean() if weight is None else (weight * se).mean()


def ips_weights(propensity: Sequence[float | None], clip: float) -> torch.Tensor:
    """Clipped, self-normalised inverse-propensity weights [N]: w = min(1/p, clip), then w / mean(w) (mean 1). A
    missing propensity (the server showed the only candidate) is p = 1."""
    w = torch.tensor([min(1.0 / (1.0 if p is None else p), clip) for p in propensity], dtype=torch.float64)
    return (w / w.mean()).float()  # mean 1 over the rows: a batch's mean(w · loss) is unbiased for the weighted loss


def resample_by_weight(weights: Sequence[float], seed: int) -> list[int]:
    """Systematic resampling: N = len(weights) indices in which row i appears N·w_i / Σw times, rounded up or down.

    Training on these rows with weight 1 has the same expected loss as weighting every row by w_i, with far lower
    gradient variance — a batch holding one row of weight 10 would otherwise dominate its step, and gradient clipping
    would then cut exactly the rare rows' influence that the weights are meant to restore."""
    n, total = len(weights), float(sum(weights))
    offset = random.Random(seed).random()
    out, cum, k = [], 0.0, 0
    for i, w in enumerate(weights):
        cum += w
        while k < n and (offset + k) * total / n < cum:
            out.append(i)
            k += 1
    return out


def weighted_standardise(x: torch.Tensor, w: torch.Tensor) -> tuple[float, float]:
    """(μ, σ) of x [N] under weights w [N] (σ floored at 1e-6)."""
    mean = float((w * x).sum() / w.sum())
    return mean, max(float(((w * (x - mean) ** 2).sum() / w.sum()).sqrt()), 1e-6)


def concordance(r: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> float:
    """P[r_i > r_j | t_i > t_j] over all ordered pairs of rows (ties in r count ½), pair (i, j) weighted w_i w_j;
    for binary targets this is the AUC. NaN when every target is equal. Inputs [N]."""
    w = torch.ones_like(r) if weight is None else weight
    higher = (target[:, None] > target[None, :]).float() * (w[:, None] * w[None, :])  # [N, N] pairs with t_i > t_j
    right = (r[:, None] > r[None, :]).float() + 0.5 * (r[:, None] == r[None, :]).float()  # [N, N]
    total = higher.sum()
    return float((higher * right).sum() / total) if total > 0 else float("nan")


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


def load_feedback_splits(cfg: RewardModelConfig, tokenizer=None, max_length: int | None = None):
    """(train rows, test rows) to train on: pairs as ``load_preference_splits``; pointwise feedback as rows
    {"prompt", "completion", "target", "weight"} (``pointwise_rows``)."""
    if cfg.feedback == "pairs":
        return load_preference_splits(cfg, tokenizer, max_length)
    if cfg.task.name == "dataset":
        task = load_task(cfg.task, kind=FEEDBACK_KINDS[cfg.feedback], tokenizer=tokenizer, max_length=max_length)
        train, test = task.train, task.test
    else:
        train, test = reviews_pointwise(cfg)
    return pointwise_rows(train, test, cfg)


def reviews_pointwise(cfg: RewardModelConfig) -> tuple[list[dict], list[dict]]:
    """Reviews: the texts of the annotator's template pairs, one row each, with their gold reward as ``score``
    (ratings) or a thumbs-up when it is above the training median (thumbs; flipped with probability data.noise,
    test: data.test_noise)."""
    import statistics

    from rewardloop.envs.reviews import annotator_pairs_from_templates
    from rewardloop.rewards.reviews import reviews_reward

    data, rng = cfg.data, random.Random(cfg.data.seed)

    def rows(seed: int, n: int) -> list[dict]:
        pairs = annotator_pairs_from_templates(seed, (n + 1) // 2, noise=0.0)
        texts = [(p["prompt"], p[c]) for p in pairs for c in ("chosen", "rejected")][:n]
        scores = reviews_reward([p for p, _ in texts], [t for _, t in texts])
        return [{"prompt": p, "completion": t, "score": float(g)} for (p, t), g in zip(texts, scores, strict=True)]

    train, test = rows(data.seed, data.reviews_pairs), rows(data.seed + 7919, data.test_size)
    if cfg.feedback == "thumbs":
        median = statistics.median(r["score"] for r in train)
        for split, noise in ((train, data.noise), (test, data.test_noise)):
            for r in split:
                r["label"] = (r.pop("score") > median) != (rng.random() < noise)
    return train, test


def _responses(rows: list[dict], cfg: RewardModelConfig) -> list[dict]:
    """One row per response with its raw target and propensity. Engagement: the events of a response (same
    ``response_id``, else same prompt and completion) scored together by ``cfg.engagement``."""
    if cfg.feedback == "thumbs":
        return [{"prompt": r["prompt"], "completion": r["completion"], "target": float(r["label"])} for r in rows]
    if cfg.feedback == "ratings":
        return [{"prompt": r["prompt"], "completion": r["completion"], "target": r["score"]} for r in rows]
    groups: dict[Any, dict] = {}
    for r in rows:
        key = r.get("response_id") or (r["prompt"], r["completion"])
        g = groups.setdefault(key, {"prompt": r["prompt"], "completion": r["completion"], "events": [], "p": None})
        g["events"].append({"type": r["event"], "value": r["value"]})
        g["p"] = r.get("propensity") if g["p"] is None else g["p"]
    out = []
    for key, g in groups.items():
        try:
            target = engagement_score(g["events"], cfg.engagement)
        except ValueError as e:
            raise ValueError(f"engagement rows of response {key!r}: {e}") from None
        out.append({"prompt": g["prompt"], "completion": g["completion"], "target": target, "propensity": g["p"]})
    return out


def pointwise_rows(train: list[dict], test: list[dict], cfg: RewardModelConfig) -> tuple[list[dict], list[dict]]:
    """Thumbs / ratings / engagement rows → {"prompt", "completion", "target", "weight"}. Thumbs: target 1 (up) or
    0; ratings and engagement: targets standardised with the training rows' weighted mean and std. Weights: 1, or for
    engagement (``ips``) clipped, self-normalised inverse propensities."""
    splits = [_responses(rows, cfg) for rows in (train, test)]
    for split in splits:
        ips = cfg.feedback == "engagement" and cfg.ips
        w = ips_weights([r.get("propensity") for r in split], cfg.ips_clip) if ips else torch.ones(len(split))
        for r, wi in zip(split, w.tolist(), strict=True):
            r["weight"] = wi
            r.pop("propensity", None)
    if cfg.feedback != "thumbs":
        t = torch.tensor([r["target"] for r in splits[0]], dtype=torch.float64)
        mean, std = weighted_standardise(t, torch.tensor([r["weight"] for r in splits[0]], dtype=torch.float64))
        for r in splits[0] + splits[1]:
            r["target"] = (r["target"] - mean) / std
    return splits[0], splits[1]


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


def _point_batch(model: ValueModel, tok, rows: list[dict], device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(r [B], target [B], weight [B]) of pointwise rows, one forward."""
    ids, mask = encode_texts(tok, [r["prompt"] for r in rows], [r["completion"] for r in rows], device)
    target = torch.tensor([r["target"] for r in rows], device=device)
    weight = torch.tensor([r["weight"] for r in rows], device=device)
    return model.score(ids, mask), target, weight


POINTWISE_LOSSES = {"thumbs": logistic_loss, "ratings": regression_loss, "engagement": regression_loss}


def batch_loss(scores: tuple[torch.Tensor, ...], feedback: str) -> tuple[torch.Tensor, dict[str, float]]:
    """(loss, {"train/accuracy", ["train/margin"]}) from ``_pair_batch`` / ``_point_batch`` output."""
    if feedback == "pairs":
        rc, rr, margin = scores
        metrics = {"train/accuracy": pairwise_accuracy(rc, rr), "train/margin": float((rc - rr).mean().detach())}
        return bradley_terry_loss(rc, rr, margin), metrics
    r, target, weight = scores
    return POINTWISE_LOSSES[feedback](r, target, weight), {"train/accuracy": concordance(r.detach(), target, weight)}


@torch.no_grad()
def evaluate_points(model: ValueModel, tok, rows: list[dict], feedback: str, batch_size: int = 64) -> dict[str, float]:
    """Held-out concordance (accuracy) and loss of pointwise rows."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    parts = [_point_batch(model, tok, rows[i : i + batch_size], device) for i in range(0, len(rows), batch_size)]
    r, t, w = (torch.cat([p[j] for p in parts]).float() for j in range(3))
    model.train(was)
    return {"eval/accuracy": concordance(r, t, w), "eval/loss": float(POINTWISE_LOSSES[feedback](r, t, w))}


def evaluate_rows(model: ValueModel, tok, rows: list[dict], feedback: str) -> dict[str, float]:
    return evaluate_pairs(model, tok, rows) if feedback == "pairs" else evaluate_points(model, tok, rows, feedback)


def _texts(rows: list[dict]) -> tuple[list[str], list[str]]:
    """(prompts, responses) of every response in ``rows`` (a pair has two)."""
    if rows and "chosen" in rows[0]:
        return [r["prompt"] for r in rows] * 2, [r["chosen"] for r in rows] + [r["rejected"] for r in rows]
    return [r["prompt"] for r in rows], [r["completion"] for r in rows]


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
    if any(r.get("weight", 1.0) != 1.0 for r in rows):  # engagement with inverse-propensity weights
        rows = [rows[i] | {"weight": 1.0} for i in resample_by_weight([r["weight"] for r in rows], cfg.run.seed + k)]
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
    last = run.last_step(step, cfg.steps)  # steps done, or run.max_cpu_s spent
    while not last:
        # 2. A step on a batch: Bradley–Terry on pairs, logistic / regression on pointwise rows.
        batch = [rows[i] for i in next(order)]
        with mixed_precision(cfg.model, device):  # bf16 forward when model.autocast is set
            scores = (_pair_batch if cfg.feedback == "pairs" else _point_batch)(model, tok, batch, device)
        loss, metrics = batch_loss(scores, cfg.feedback)
        loss.backward()
        grad_norm = clip_and_step(model, opt, sched, cfg.optim.max_grad_norm)
        step += 1
        last = run.last_step(step, cfg.steps)
        row = {"member": k, "train/loss": loss.item(), **metrics, "grad_norm": grad_norm, "lr": sched.get_last_lr()[0]}
        bad = guard_numerics(row, bad, cfg.run.max_bad_updates, offset + step)
        # 3. Evaluate on held-out rows, log, checkpoint.
        if step % cfg.eval_every == 0 or last:
            row |= evaluate_rows(model, tok, test_rows, cfg.feedback)
        if step % cfg.run.log_every == 0 or "eval/accuracy" in row:
            row = run.log(offset + step, row)
        show(bar, row, ("train/loss", "eval/accuracy"))
        bar.update(1)
        if last or run.due(step, cfg.steps, cfg.run.save_every):
            state = {"member": k, "scheduler": sched.state_dict()}
            run.save_checkpoint(offset + step, {"reward": (model, tok)}, {"reward": opt}, state)
    bar.close()
    # 4. Normalisation statistics over the training responses (of pairs: chosen and rejected), saved with the model.
    model.eval()
    scores = score_texts(model, tok, *_texts(train_rows[:1000]))
    model.stats = {"mean": float(scores.mean()), "std": float(scores.std().clamp(min=1e-6))}
    final = evaluate_rows(model, tok, test_rows, cfg.feedback)
    model_dir = run.save_final(name, model, tok)
    return {"model_dir": model_dir, **final, **{f"stats/{k}": v for k, v in model.stats.items()}}


def train(cfg: RewardModelConfig, resume: bool = False) -> dict[str, Any]:
    """Train ``cfg.ensemble`` reward models; returns {"run_dir", "model_dir", "accuracy", "members": [...]}.

    ``model_dir`` is final/reward (one model) or final/ (an ensemble directory with ensemble.json).
    """
    run = RunDir.open(cfg.run, "reward", cfg, resume=resume)
    tok = load_tokenizer(cfg.model)
    train_rows, test_rows = load_feedback_splits(cfg, tok, cfg.model.max_length)
    members = []
    for k in range(cfg.ensemble):
        name = "reward" if cfg.ensemble == 1 else f"reward-{k}"
        done = run.path / "final" / name
        if resume and (done / "config.json").exists():
            model, mtok = load_value_model(done, cfg.model.device)
            members.append({"model_dir": done, **evaluate_rows(model, mtok, test_rows, cfg.feedback)})
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
