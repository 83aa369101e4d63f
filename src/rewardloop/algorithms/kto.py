"""KTO: learn from unpaired desirable / undesirable completions (thumbs up / down), no pairs, no reward model.

Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization". With sequence log-probs
summed over completion tokens:

    r_θ(x, y) = log π_θ(y|x) − log π_ref(y|x)                                  the implied reward (a log-ratio)
    z_0       = max(0, mean over the batch of r_θ(x_i, y_j)), j ≠ i            reference point: a KL estimate from
                                                                               mismatched pairs, without gradient
    v(x, y)   = λ_D σ(β (r_θ(x, y) − z_0))   if y is desirable                 the prospect-theoretic value
                λ_U σ(β (z_0 − r_θ(x, y)))   if y is undesirable
    L         = E_(x, y) [λ_y − v(x, y)]

Desirable completions gain value by rising above the reference point, undesirable ones by falling below it; since
z_0 tracks how far the policy has drifted on unrelated completions, the policy cannot win by moving all log-probs
together. π_ref is the starting model; its log-probs of every row and of every row's mismatched pair are computed
once before training (``algorithms/preference.py``, shared with DPO).
Data: TRL's unpaired format (``task.name: dataset``, columns prompt/completion/label) or, for ``reviews``, simulated
thumbs: samples of the starting policy labelled desirable when their gold reward is above a threshold (default the
median). Evaluation on ``reviews``: the gold annotator's win rate over the starting model's samples.
See docs/algorithms/kto.md.
"""

from __future__ import annotations

import logging
import random
import statistics
from typing import Any

import torch
from pydantic import Field, model_validator

from rewardloop.algorithms.common import (
    batches,
    clip_and_step,
    finish_policy_run,
    guard_numerics,
    make_optimizer,
    progress,
    seed_everything,
    show,
)
from rewardloop.algorithms.preference import (
    Example,
    gold_metrics,
    heldout_average,
    offline_data,
    reference_logps,
    sample_texts,
    sequence_logps,
)
from rewardloop.config import GenerationConfig, ModelConfig, OptimConfig, RunConfig, Section
from rewardloop.data.tokenize import tokenize_row
from rewardloop.envs.tasks import TaskConfig, check_preference_task, load_task
from rewardloop.models import count_parameters, load_pretrained, mixed_precision
from rewardloop.runs import RunDir

log = logging.getLogger(__name__)


class KTOConfig(Section):
    """KTO on your thumbs (``task.name: dataset`` with ``task.path`` / ``task.dataset``, TRL's prompt/completion/label
    columns, e.g. ``rewardloop feedback export --format kto``; held out: ``task.test_path`` or the last
    ``task.n_test`` rows) or, with ``task.name: reviews``, thumbs on the starting model's samples from the gold
    reward."""

    model: ModelConfig = ModelConfig()
    task: TaskConfig = TaskConfig(name="reviews")
    optim: OptimConfig = OptimConfig(lr=1e-4)
    gen: GenerationConfig = Field(
        GenerationConfig(max_new_tokens=40, temperature=1.0, stop=["\n"]),
        description="sampling for the simulated thumbs and for the win-rate evaluation",
    )
    run: RunConfig = RunConfig()
    beta: float = Field(0.1, gt=0.0, description="β: strength of the implicit KL to the reference")
    desirable_weight: float = Field(1.0, gt=0.0, description="λ_D: weight of desirable completions")
    undesirable_weight: float = Field(1.0, gt=0.0, description="λ_U: weight of undesirable completions")
    n_thumbs: int = Field(1024, ge=4, description="reviews: completions of the starting model to label")
    thumbs_threshold: float | None = Field(
        None, description="reviews: thumbs-up when the gold reward (in [-1, 1]) is above this; unset = the median"
    )
    annotator_noise: float = Field(0.1, ge=0.0, le=1.0, description="reviews: probability a thumb is flipped")
    steps: int = Field(200, ge=1)
    batch_size: int = Field(32, ge=2, description="rows per step (the KL estimate needs at least 2)")
    eval_every: int = Field(50, ge=1)
    eval_size: int = Field(200, ge=1, description="prompts for the win-rate evaluation")

    @model_validator(mode="after")
    def _check(self) -> KTOConfig:
        check_preference_task(self.task, "kto", "thumbs (prompt/completion/label)")
        return self


# ---------------------------------------------------------------------------------------------------------------
# Loss (pure). Inputs [B] sequence log-probs summed over completion tokens.
# ---------------------------------------------------------------------------------------------------------------


def kl_reference_point(pi_mismatched: torch.Tensor, ref_mismatched: torch.Tensor) -> torch.Tensor:
    """z_0 = max(0, mean_i [log π(y_j|x_i) − log π_ref(y_j|x_i)]) over mismatched pairs [B], without gradient: []."""
    return (pi_mismatched - ref_mismatched).mean().clamp(min=0.0).detach()


def kto_loss(
    pi: torch.Tensor,
    ref: torch.Tensor,
    z0: torch.Tensor,
    desirable: torch.Tensor,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> torch.Tensor:
    """λ_y − v(x, y) per row [B]; ``desirable`` [B] bool, ``z0`` [] the reference point."""
    r = pi - ref  # [B] implied reward r_θ
    lam = torch.where(desirable, desirable_weight, undesirable_weight).to(r.dtype)  # [B] λ_y
    value = lam * torch.sigmoid(torch.where(desirable, beta * (r - z0), beta * (z0 - r)))  # [B] v(x, y)
    return lam - value


def mismatched_partners(n: int, seed: int) -> list[int]:
    """For each row i a partner j ≠ i (n ≥ 2): the rows in a seeded random cycle, each paired with the next, so the
    KL estimate pairs a prompt with an unrelated completion (not a neighbour in the file, which may share it)."""
    order = random.Random(seed).sample(range(n), n)
    partner = [0] * n
    for k, i in enumerate(order):
        partner[i] = order[(k + 1) % n]
    return partner


# ---------------------------------------------------------------------------------------------------------------
# Data: thumbs → tokens (each row with its mismatched pair).
# ---------------------------------------------------------------------------------------------------------------


def encode_thumbs(tokenizer, rows: list[dict[str, Any]], max_length: int, seed: int) -> list[Example]:
    """Per row: ((ids, labels) of prompt+completion, (ids, labels) of prompt + its partner's completion); the
    mismatched sequence is cut to ``max_length`` (it only feeds the KL estimate)."""
    partner = mismatched_partners(len(rows), seed)
    out = []
    for i, row in enumerate(rows):
        try:
            own = tokenize_row(tokenizer, row, max_length)
        except ValueError as e:
            raise ValueError(f"thumbs row {i}: {e}") from None
        other = {"prompt": row["prompt"], "completion": rows[partner[i]]["completion"]}
        out.append((own, tokenize_row(tokenizer, other, max_length, truncate=True)))
    return out


def simulated_thumbs(model, tokenizer, prompts: list[str], cfg: KTOConfig, reward_fn) -> list[dict[str, Any]]:
    """Reviews: one sample of the starting policy per prompt; thumbs-up when its gold reward is above the threshold
    (default the median, so about half are desirable), then flipped with probability ``annotator_noise``."""
    texts = sample_texts(model, tokenizer, prompts, cfg.gen, seed=cfg.run.seed + 1)
    gold = [float(g) for g in reward_fn(prompts, texts)]
    threshold = statistics.median(gold) if cfg.thumbs_threshold is None else cfg.thumbs_threshold
    rng = random.Random(cfg.run.seed)
    rows = []
    for prompt, text, g in zip(prompts, texts, gold, strict=True):
        label = (g > threshold) != (rng.random() < cfg.annotator_noise)
        rows.append({"prompt": prompt, "completion": text, "label": label, "gold_reward": g})
    return rows


def load_thumbs(cfg: KTOConfig, model, tokenizer, task) -> tuple[list[dict], list[dict]]:
    """(train rows, held-out rows): the dataset task's rows, or simulated thumbs on reviews."""
    if cfg.task.name == "dataset":
        return task.train, task.test
    n_test = max(2, cfg.n_thumbs // 8)
    rng = random.Random(cfg.run.seed)
    prompts = [rng.choice(task.train)["prompt"] for _ in range(cfg.n_thumbs + n_test)]
    rows = simulated_thumbs(model, tokenizer, prompts, cfg, task.reward_fn)
    return rows[:-n_test], rows[-n_test:]


def check_balance(rows: list[dict], cfg: KTOConfig) -> float:
    """λ_D n_D / (λ_U n_U); the paper recommends [1, 4/3] and KTO cannot learn from one class alone."""
    n_d = sum(r["label"] for r in rows)
    n_u = len(rows) - n_d
    if n_d == 0 or n_u == 0:
        raise ValueError(
            f"KTO needs desirable and undesirable rows; the training rows have {n_d} desirable and {n_u} undesirable"
        )
    ratio = cfg.desirable_weight * n_d / (cfg.undesirable_weight * n_u)
    if not 1.0 <= ratio <= 4 / 3:
        log.warning(
            "λ_D·n_D / (λ_U·n_U) = %.3g (%d desirable, %d undesirable); the KTO paper recommends [1, 4/3]: set "
            "desirable_weight / undesirable_weight to balance the classes",
            ratio, n_d, n_u,
        )  # fmt: skip
    return ratio


# ---------------------------------------------------------------------------------------------------------------
# The loop.
# ---------------------------------------------------------------------------------------------------------------


def kto_step(
    model, encoded: list[Example], ref: torch.Tensor, labels: torch.Tensor, pad_id: int, device, cfg: KTOConfig
) -> tuple[torch.Tensor, dict]:
    """Loss and metrics on one batch; ``ref`` [B, 2] reference log-probs (row, mismatched), ``labels`` [B] bool."""
    pi = sequence_logps(model, [own for own, _ in encoded], pad_id, device)  # [B]
    with torch.no_grad():
        pi_kl = sequence_logps(model, [other for _, other in encoded], pad_id, device)  # [B]
    ref, labels = ref.to(device), labels.to(device)
    z0 = kl_reference_point(pi_kl, ref[:, 1])
    loss = kto_loss(pi, ref[:, 0], z0, labels, cfg.beta, cfg.desirable_weight, cfg.undesirable_weight).mean()
    r = (pi.detach() - ref[:, 0]).float()  # [B]
    agree = torch.where(labels, r > z0, r < z0).float() + 0.5 * (r == z0).float()  # r on the label's side of z_0
    row = {"kl": z0.item(), "rewards/accuracy": agree.mean().item()}
    for name, mask in (("desirable", labels), ("undesirable", ~labels)):
        if mask.any():
            row[f"rewards/{name}"] = cfg.beta * r[mask].mean().item()
            row[f"logps/{name}"] = pi.detach()[mask].mean().item()
    if "rewards/desirable" in row and "rewards/undesirable" in row:
        row["rewards/margin"] = row["rewards/desirable"] - row["rewards/undesirable"]
    return loss, row


def train(cfg: KTOConfig, resume: bool = False) -> dict[str, Any]:
    """Run KTO; returns {"run_dir", "model_dir", "initial", "final"} (final has eval/win_rate on reviews)."""
    # 0. Set-up: seed, run directory, policy, task.
    seed_everything(cfg.run.seed)
    run = RunDir.open(cfg.run, "kto", cfg, resume=resume)
    model, tokenizer = load_pretrained(cfg.model)
    device, pad_id = next(model.parameters()).device, tokenizer.pad_token_id
    amp = mixed_precision(cfg.model, device)  # bf16 autocast of forward passes when model.autocast is set
    kind = "kto" if cfg.task.name == "dataset" else "prompt"
    task = load_task(cfg.task, kind=kind, tokenizer=tokenizer, max_length=cfg.model.max_length)
    eval_prompts = [r["prompt"] for r in task.test][: cfg.eval_size]
    gold, eval_seed = cfg.task.name == "reviews", cfg.run.seed + 10_000

    # 1. Once, with the starting model (= π_ref): thumbs, reference log-probs [N, 2] of each row and its mismatched
    #    pair, baseline samples (--resume: reused).
    def reference(enc):
        with amp:  # the reference log-probs in the same precision as the policy's forward passes
            return reference_logps(model, enc, pad_id, device)

    data, enc_train, enc_test = offline_data(
        run, resume, ("kto_data.pt", "thumbs.jsonl"),
        make_rows=lambda: load_thumbs(cfg, model, tokenizer, task),
        encode=lambda rows: encode_thumbs(tokenizer, rows, cfg.model.max_length, cfg.run.seed),
        reference=reference,
        baseline=lambda: sample_texts(model, tokenizer, eval_prompts, cfg.gen, eval_seed) if gold else [],
    )  # fmt: skip
    labels_train = torch.tensor([bool(r["label"]) for r in data["train"]])  # [N]
    labels_test = torch.tensor([bool(r["label"]) for r in data["test"]])  # [M]
    ratio = check_balance(data["train"], cfg)

    opt, sched = make_optimizer(model.parameters(), cfg.optim, cfg.steps)
    rng = random.Random(cfg.run.seed)
    step, history = 0, {}
    if (state := run.resume({"policy": model}, {"policy": opt})) is not None:
        step, history = state["step"], state.get("history", {})
        sched.load_state_dict(state["scheduler"])

    def evaluate() -> dict[str, float]:
        def heldout(rows: slice):
            return kto_step(model, enc_test[rows], data["ref_test"][rows], labels_test[rows], pad_id, device, cfg)

        out = heldout_average(heldout, model, len(enc_test), ("kl", "rewards/accuracy", "rewards/margin"))
        if gold:
            out |= gold_metrics(model, tokenizer, eval_prompts, cfg.gen, eval_seed, data["baseline"], task.reward_fn)
        return out

    if step == 0:
        counts = {"rows": len(enc_train), "desirable": int(labels_train.sum()), "weighted_ratio": ratio}
        history["initial"] = run.log(0, evaluate() | {"params": count_parameters(model)} | counts)
    bar = progress(cfg.steps, step, "kto", cfg.run.progress)
    order = batches(len(enc_train), min(cfg.batch_size, len(enc_train)), rng, skip=step)  # resume: replay the order
    model.train()
    bad = 0  # updates in a row with a non-finite loss / gradient (skipped)
    last = run.last_step(step, cfg.steps)  # steps done, or run.max_cpu_s spent
    while not last:
        # 2. One step on a batch of thumbs.
        idx = next(order)
        batch = [enc_train[i] for i in idx]
        with amp:
            loss, row = kto_step(model, batch, data["ref_train"][idx], labels_train[idx], pad_id, device, cfg)
        loss.backward()
        row |= {"loss": loss.item(), "grad_norm": clip_and_step(model, opt, sched, cfg.optim.max_grad_norm)}
        row["lr"] = sched.get_last_lr()[0]
        step += 1
        last = run.last_step(step, cfg.steps)
        bad = guard_numerics(row, bad, cfg.run.max_bad_updates, step)
        # 3. Evaluate, log, checkpoint.
        if step % cfg.eval_every == 0 or last:
            row |= evaluate()
        if step % cfg.run.log_every == 0 or "eval/loss" in row:
            row = run.log(step, row)
        show(bar, row, ("loss", "kl", "eval/win_rate"))
        bar.update(1)
        if last or run.due(step, cfg.steps, cfg.run.save_every):
            state = {"scheduler": sched.state_dict(), "history": history}
            run.save_checkpoint(step, {"policy": (model, tokenizer)}, {"policy": opt}, state)
    bar.close()
    return finish_policy_run(run, model, tokenizer, cfg.model.lora, history, "eval/loss")
