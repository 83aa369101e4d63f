"""Direct Preference Optimisation: learn from (prompt, chosen, rejected) pairs without a reward model or sampling.

With h = [log π_θ(y_w|x) − log π_ref(y_w|x)] − [log π_θ(y_l|x) − log π_ref(y_l|x)] (sequence log-probs, summed over
completion tokens):

    sigmoid (DPO, Rafailov et al. 2023, eq. 7):   L = −log σ(β h)
    label smoothing ε (conservative DPO, cDPO):   L = −(1−ε) log σ(β h) − ε log σ(−β h)
    ipo (Azar et al. 2023, eq. 17):                L = (h − 1/(2β))²

The implicit rewards β·(log π_θ − log π_ref) of chosen and rejected give the logged reward accuracy and margin.
π_ref is the starting model; its log-probs are computed once before training (the reference model is then freed;
``algorithms/preference.py``, shared with KTO). Data: a preference dataset (``task.name: dataset`` + ``task.path``,
TRL columns prompt/chosen/rejected) or, for the ``reviews`` task, pairs from
the simulated annotator (two samples of the starting policy per prompt, or template reviews vs degraded copies).
Evaluation on ``reviews``: the gold annotator's win rate of the policy's samples over the starting model's.
See docs/algorithms/dpo.md.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
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
    example_logps,
    gold_metrics,
    heldout_average,
    offline_data,
    reference_logps,
    sample_texts,
)
from rewardloop.config import GenerationConfig, ModelConfig, OptimConfig, RunConfig, Section
from rewardloop.data.tokenize import tokenize_row
from rewardloop.envs.tasks import TaskConfig, check_preference_task, load_task, reject_keys
from rewardloop.models import count_parameters, load_pretrained, mixed_precision
from rewardloop.runs import RunDir


class DPOConfig(Section):
    """DPO / IPO / cDPO on your pairs (``task.name: dataset`` with ``task.path`` / ``task.dataset``, TRL's
    prompt/chosen/rejected columns; held out: ``task.test_path`` or the last ``task.n_test`` rows) or, with
    ``task.name: reviews``, pairs labelled by the simulated annotator."""

    model: ModelConfig = ModelConfig()
    task: TaskConfig = TaskConfig(name="reviews")
    optim: OptimConfig = OptimConfig(lr=1e-4)
    gen: GenerationConfig = Field(
        GenerationConfig(max_new_tokens=40, temperature=1.0, stop=["\n"]),
        description="sampling for annotator pairs and for the win-rate evaluation",
    )
    run: RunConfig = RunConfig()
    loss: Literal["sigmoid", "ipo"] = "sigmoid"
    beta: float = Field(0.1, gt=0.0, description="β: strength of the implicit KL to the reference")
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5, description="ε of conservative DPO (sigmoid loss only)")
    pairs_source: Literal["policy", "templates"] = Field(
        "policy", description="reviews: annotate two samples of the start policy, or template pairs"
    )
    n_pairs: int = Field(1024, ge=2, description="annotator pairs to draw (reviews)")
    annotator_noise: float = Field(0.1, ge=0.0, le=1.0)
    steps: int = Field(200, ge=1)
    batch_size: int = Field(32, ge=1, description="pairs per step")
    eval_every: int = Field(50, ge=1)
    eval_size: int = Field(200, ge=1, description="prompts for the win-rate evaluation")

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        return reject_keys(data, {"pairs", "test_pairs"}, "")

    @model_validator(mode="after")
    def _check(self) -> DPOConfig:
        if self.label_smoothing > 0 and self.loss != "sigmoid":
            raise ValueError(f"label_smoothing={self.label_smoothing} applies to loss 'sigmoid', not {self.loss!r}")
        check_preference_task(self.task, "dpo")
        return self


# ---------------------------------------------------------------------------------------------------------------
# Losses (pure). All inputs [B] sequence log-probs summed over completion tokens.
# ---------------------------------------------------------------------------------------------------------------


def preference_logits(pi_c: torch.Tensor, pi_r: torch.Tensor, ref_c: torch.Tensor, ref_r: torch.Tensor) -> torch.Tensor:
    """h = (log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l)): [B]."""
    return (pi_c - ref_c) - (pi_r - ref_r)


def sigmoid_loss(h: torch.Tensor, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """DPO −log σ(βh); with ε > 0 the conservative (label-smoothed) mix −(1−ε) log σ(βh) − ε log σ(−βh). [B]."""
    return -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)


def ipo_loss(h: torch.Tensor, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """IPO (h − 1/(2β))²: regresses the log-ratio gap to a finite target instead of pushing it to ∞. [B]."""
    return (h - 1.0 / (2.0 * beta)) ** 2


DPO_LOSSES: dict[str, Callable[[torch.Tensor, float, float], torch.Tensor]] = {
    "sigmoid": sigmoid_loss,
    "ipo": ipo_loss,
}


def implicit_rewards(pi: torch.Tensor, ref: torch.Tensor, beta: float) -> torch.Tensor:
    """r̂(x, y) = β (log π(y|x) − log π_ref(y|x)): [B]."""
    return beta * (pi - ref)


# ---------------------------------------------------------------------------------------------------------------
# Data: pairs → tokens → sequence log-probs.
# ---------------------------------------------------------------------------------------------------------------


def encode_pairs(tokenizer, rows: list[dict[str, Any]], max_length: int) -> list[tuple[tuple, tuple]]:
    """Per pair: ((ids, labels) of prompt+chosen, (ids, labels) of prompt+rejected); prompt tokens labelled −100."""
    out = []
    for i, row in enumerate(rows):
        try:
            c = tokenize_row(tokenizer, {"prompt": row["prompt"], "completion": row["chosen"]}, max_length)
            r = tokenize_row(tokenizer, {"prompt": row["prompt"], "completion": row["rejected"]}, max_length)
        except ValueError as e:
            raise ValueError(f"preference pair {i}: {e}") from None
        out.append((c, r))
    return out


def pair_logps(model, encoded: list[tuple[tuple, tuple]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen [B], rejected [B]) log-probs from one forward over the 2B sequences."""
    logps = example_logps(model, encoded, pad_id, device)  # [B, 2]
    return logps[:, 0], logps[:, 1]


def annotator_pairs(model, tokenizer, prompts: list[str], cfg: DPOConfig, n: int) -> list[dict[str, Any]]:
    """Reviews: two samples of the starting policy per prompt, labelled by the noisy simulated annotator."""
    from rewardloop.envs.reviews import SimulatedAnnotator

    annotator = SimulatedAnnotator(noise=cfg.annotator_noise, seed=cfg.run.seed)
    rows: list[dict[str, Any]] = []
    for round_ in range(8):  # identical samples are skipped by the annotator; a few rounds fill n_pairs
        a = sample_texts(model, tokenizer, prompts, cfg.gen, seed=cfg.run.seed + 2 * round_ + 1)
        b = sample_texts(model, tokenizer, prompts, cfg.gen, seed=cfg.run.seed + 2 * round_ + 2)
        rows += annotator.preference_pairs(prompts, a, b)
        if len(rows) >= n:
            break
    return rows[:n]


def load_pairs(cfg: DPOConfig, model, tokenizer, task) -> tuple[list[dict], list[dict]]:
    """(train pairs, held-out pairs): the dataset task's rows, or pairs from the reviews annotator."""
    if cfg.task.name == "dataset":
        return task.train, task.test
    n_test = max(2, cfg.n_pairs // 8)
    if cfg.pairs_source == "templates":
        from rewardloop.envs.reviews import annotator_pairs_from_templates

        rows = annotator_pairs_from_templates(cfg.run.seed, cfg.n_pairs + n_test, noise=cfg.annotator_noise)
    else:
        prompts = [r["prompt"] for r in task.train]
        rng = random.Random(cfg.run.seed)
        prompts = [rng.choice(prompts) for _ in range(cfg.n_pairs + n_test)]
        rows = annotator_pairs(model, tokenizer, prompts, cfg, cfg.n_pairs + n_test)
    if len(rows) < 2 * n_test:
        raise ValueError(f"the annotator produced only {len(rows)} pairs (asked {cfg.n_pairs}); raise gen.temperature")
    return rows[:-n_test], rows[-n_test:]


# ---------------------------------------------------------------------------------------------------------------
# The loop.
# ---------------------------------------------------------------------------------------------------------------


def dpo_step(model, encoded, ref: torch.Tensor, pad_id: int, device, cfg: DPOConfig) -> tuple[torch.Tensor, dict]:
    """Loss and metrics on one batch of pairs; ``ref`` [B, 2] precomputed reference log-probs."""
    pi_c, pi_r = pair_logps(model, encoded, pad_id, device)
    ref_c, ref_r = ref[:, 0].to(device), ref[:, 1].to(device)
    h = preference_logits(pi_c, pi_r, ref_c, ref_r)
    loss = DPO_LOSSES[cfg.loss](h, cfg.beta, cfg.label_smoothing).mean()
    r_c, r_r = implicit_rewards(pi_c, ref_c, cfg.beta).detach(), implicit_rewards(pi_r, ref_r, cfg.beta).detach()
    return loss, {
        "rewards/chosen": r_c.mean().item(),
        "rewards/rejected": r_r.mean().item(),
        "rewards/accuracy": (r_c > r_r).float().mean().item(),
        "rewards/margin": (r_c - r_r).mean().item(),
        "logps/chosen": pi_c.detach().mean().item(),
        "logps/rejected": pi_r.detach().mean().item(),
    }


def train(cfg: DPOConfig, resume: bool = False) -> dict[str, Any]:
    """Run DPO; returns {"run_dir", "model_dir", "initial", "final"} (final has eval/win_rate on reviews)."""
    # 0. Set-up: seed, run directory, policy, task.
    seed_everything(cfg.run.seed)
    run = RunDir.open(cfg.run, "dpo", cfg, resume=resume)
    model, tokenizer = load_pretrained(cfg.model)
    device, pad_id = next(model.parameters()).device, tokenizer.pad_token_id
    amp = mixed_precision(cfg.model, device)  # bf16 autocast of forward passes when model.autocast is set
    kind = "preference" if cfg.task.name == "dataset" else "prompt"
    task = load_task(cfg.task, kind=kind, tokenizer=tokenizer, max_length=cfg.model.max_length)
    eval_prompts = [r["prompt"] for r in task.test][: cfg.eval_size]
    gold, eval_seed = cfg.task.name == "reviews", cfg.run.seed + 10_000

    # 1. Once, with the starting model (= π_ref): pairs, reference log-probs [N, 2], baseline samples (--resume: reused).
    def reference(enc):
        with amp:  # the reference log-probs in the same precision as the policy's forward passes
            return reference_logps(model, enc, pad_id, device)

    data, enc_train, enc_test = offline_data(
        run, resume, ("dpo_data.pt", "pairs.jsonl"),
        make_rows=lambda: load_pairs(cfg, model, tokenizer, task),
        encode=lambda rows: encode_pairs(tokenizer, rows, cfg.model.max_length),
        reference=reference,
        baseline=lambda: sample_texts(model, tokenizer, eval_prompts, cfg.gen, eval_seed) if gold else [],
    )  # fmt: skip

    opt, sched = make_optimizer(model.parameters(), cfg.optim, cfg.steps)
    rng = random.Random(cfg.run.seed)
    step, history = 0, {}
    if (state := run.resume({"policy": model}, {"policy": opt})) is not None:
        step, history = state["step"], state.get("history", {})
        sched.load_state_dict(state["scheduler"])

    def evaluate() -> dict[str, float]:
        def heldout(rows: slice):
            return dpo_step(model, enc_test[rows], data["ref_test"][rows], pad_id, device, cfg)

        out = heldout_average(heldout, model, len(enc_test), ("rewards/accuracy", "rewards/margin"))
        if gold:
            out |= gold_metrics(model, tokenizer, eval_prompts, cfg.gen, eval_seed, data["baseline"], task.reward_fn)
        return out

    if step == 0:
        history["initial"] = run.log(0, evaluate() | {"params": count_parameters(model), "pairs": len(enc_train)})
    bar = progress(cfg.steps, step, "dpo", cfg.run.progress)
    order = batches(len(enc_train), min(cfg.batch_size, len(enc_train)), rng, skip=step)  # resume: replay the order
    model.train()
    bad = 0  # updates in a row with a non-finite loss / gradient (skipped)
    last = run.last_step(step, cfg.steps)  # steps done, or run.max_cpu_s spent
    while not last:
        # 2. One step on a batch of pairs.
        idx = next(order)
        with amp:
            loss, row = dpo_step(model, [enc_train[i] for i in idx], data["ref_train"][idx], pad_id, device, cfg)
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
        show(bar, row, ("loss", "rewards/accuracy", "eval/win_rate"))
        bar.update(1)
        if last or run.due(step, cfg.steps, cfg.run.save_every):
            state = {"scheduler": sched.state_dict(), "history": history}
            run.save_checkpoint(step, {"policy": (model, tokenizer)}, {"policy": opt}, state)
    bar.close()
    return finish_policy_run(run, model, tokenizer, cfg.model.lora, history, "eval/loss")
