"""Critic-free policy gradient: GRPO, Dr.GRPO, RLOO and REINFORCE++ as advantage estimators over one loop.

Per step: sample G responses for each of N prompts (B = N·G sequences), score them, turn the rewards into advantages
with the configured estimator, then take μ passes of clipped policy-gradient updates on the batch.

    L(θ) = agg_t [ −min(ρ_t Â_t, clip(ρ_t, 1−ε_low, 1+ε_high) Â_t) + β·KL_k3(π_θ ‖ π_ref)_t ],  ρ_t = π_θ / π_old

Estimators (``estimator``): ``grpo`` Â_i = (r_i − mean(r_group)) / (std(r_group) + ε) (Shao et al. 2024,
DeepSeekMath); ``dr_grpo`` the same without the std division (Liu et al. 2025); ``rloo`` Â_i = r_i − mean_{j≠i} r_j
(Ahmadian et al. 2024); ``reinforce_pp`` per-token return of r − β_r·KL_k1 whitened over the batch (Hu 2025).
Loss variants are flags: aggregation token-mean (DAPO) / seq-mean (GRPO) / constant (Dr.GRPO); clip-higher
ε_high > ε_low (DAPO); dynamic sampling (DAPO: drop groups whose rewards all agree, refill); soft overlong penalty
(DAPO). See docs/algorithms/grpo.md.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from rewardloop.algorithms.common import (
    Experience,
    RLConfig,
    batches,
    clip_and_step,
    collector,
    evaluator,
    experience_sources,
    finish_policy_run,
    guard_numerics,
    make_learner,
    make_optimizer,
    policy_from,
    progress,
    release,
    seed_everything,
    show,
)
from rewardloop.config import GenerationConfig, ModelConfig, OptimConfig, RunConfig
from rewardloop.diagnostics import check_degeneration, component_shares, emit, sample_table
from rewardloop.envs.tasks import TaskConfig, load_task
from rewardloop.models import count_parameters, mixed_precision
from rewardloop.ops import (
    accumulation_weight,
    aggregate_loss,
    clipped_policy_loss,
    discounted_returns,
    group_stats,
    kl_estimate,
    masked_mean,
    masked_whiten,
)
from rewardloop.rewards.composite import RewardSet
from rewardloop.rollout import batched_logprobs, sequence_logprobs
from rewardloop.rollout.collect import collect_step
from rewardloop.runs import RunDir
from rewardloop.types import PGBatch, Rollout

Estimator = Literal["grpo", "dr_grpo", "rloo", "reinforce_pp"]


class GRPOConfig(RLConfig):
    """Critic-free policy gradient. ``rewardloop rloo`` is this config with ``estimator: rloo``. The reward section
    (``rewards``, ``task_reward_weight``, ``on_reward_error``, ``reward_timeout``) and ``env`` / ``max_turns`` come
    from ``RLConfig``, shared with PPO."""

    model: ModelConfig = ModelConfig()
    task: TaskConfig = TaskConfig()
    optim: OptimConfig = OptimConfig(lr=1e-4, max_grad_norm=1.0)
    gen: GenerationConfig = GenerationConfig(max_new_tokens=8, temperature=1.0)
    eval_gen: GenerationConfig = GenerationConfig(max_new_tokens=8, temperature=0.0)
    run: RunConfig = RunConfig()

    estimator: Estimator = "grpo"
    steps: int = Field(100, ge=1)
    prompts_per_step: int = Field(16, ge=1, description="N prompts per generation batch")
    group_size: int = Field(8, ge=2, description="G samples per prompt")
    ppo_epochs: int = Field(1, ge=1, description="μ optimisation passes per generation batch")
    reuse_sampler_logprobs: bool = Field(
        True, description="π_old = the sampler's log-probs (no extra forward); false recomputes them teacher-forced"
    )
    minibatch_size: int | None = Field(None, ge=1, description="sequences per optimizer step (default: whole batch)")
    micro_batch_size: int | None = Field(
        16,
        ge=1,
        description="sequences per forward/backward, gradients accumulated to the minibatch's (null = one pass); "
        "bounds activation memory (30M model: peak RSS 2140 → 1340 MiB at equal step time, docs/benchmarks.md (b))",
    )
    clip_eps_low: float = Field(0.2, gt=0.0, lt=1.0, description="ε_low")
    clip_eps_high: float | None = Field(None, gt=0.0, description="ε_high (clip-higher, DAPO: 0.28); default ε_low")
    loss_agg: Literal["token-mean", "seq-mean", "constant"] = "token-mean"
    kl_coef: float = Field(0.0, ge=0.0, description="β of the k3 KL-to-reference loss term (0 = no reference)")
    kl_reward_coef: float = Field(0.01, ge=0.0, description="reinforce_pp: β of the k1 KL penalty in the reward")
    entropy_coef: float = Field(0.0, ge=0.0)
    adv_eps: float = Field(1e-6, gt=0.0, description="ε in the GRPO std division")
    dynamic_sampling: bool = Field(False, description="drop zero-variance groups and refill (DAPO)")
    max_sampling_tries: int = Field(3, ge=1, description="generation rounds per step when dynamic_sampling is on")
    overlong_buffer: int = Field(0, ge=0, description="soft overlong penalty ramp, in tokens (DAPO L_cache)")
    overlong_coef: float = Field(0.0, ge=0.0, description="weight of the overlong penalty (0 = off)")
    eval_every: int = Field(25, ge=1)
    eval_size: int = Field(200, ge=1)
    samples_every: int = Field(10, ge=1, description="write a sample table to samples.jsonl every N steps")
    n_samples: int = Field(8, ge=0, description="rows per sample table")

    @model_validator(mode="after")
    def _check(self) -> GRPOConfig:
        if self.overlong_buffer >= self.gen.max_new_tokens:
            raise ValueError(
                f"overlong_buffer={self.overlong_buffer} must be < gen.max_new_tokens={self.gen.max_new_tokens}"
            )
        return self


# ---------------------------------------------------------------------------------------------------------------
# Advantage estimators (pure). r: [B] rewards, group_ids: [B] (samples of one prompt share an id; any row order).
# ---------------------------------------------------------------------------------------------------------------


def grpo_advantages(
    r: torch.Tensor, group_ids: torch.Tensor, scale_std: bool = True, eps: float = 1e-6
) -> torch.Tensor:
    """GRPO outcome advantage Â_i = (r_i − mean(r)) / (std(r) + ε) within each group (Shao et al. 2024, §4.1.2).

    ``scale_std=False`` is Dr.GRPO (Liu et al. 2025): Â_i = r_i − mean(r), no difficulty bias. std is unbiased
    (Bessel), as in the reference implementations. [B] → [B].
    """
    mean, std, _ = group_stats(r, group_ids)  # [B] each sample's group mean / std
    centred = r - mean
    return centred / (std + eps) if scale_std else centred


def rloo_advantages(r: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """REINFORCE leave-one-out Â_i = r_i − (1/(G−1)) Σ_{j≠i} r_j (Ahmadian et al. 2024, eq. 6). [B] → [B].

    With the group mean m and size G: r_i − (G·m − r_i)/(G−1) = (r_i − m)·G/(G−1); a group of one gets 0."""
    mean, _, G = group_stats(r, group_ids)
    return torch.where(G > 1, (r - mean) * G / (G - 1).clamp(min=1.0), torch.zeros_like(r))


def reinforce_pp_advantages(r: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """REINFORCE++ (Hu 2025): token rewards r_t = −β·KL_t (+ r at the last token), return G_t = Σ_{k≥t} r_k (γ = 1),
    whitened over every valid token of the batch. r: [B], kl / mask: [B, T] → [B, T]."""
    mask = mask.to(kl.dtype)
    last = (mask.cumsum(1) == mask.sum(1, keepdim=True)) & (mask > 0)  # [B, T] one-hot at the final token
    token_rewards = -beta * kl * mask + last.to(kl.dtype) * r[:, None]
    returns = discounted_returns(token_rewards, mask, gamma=1.0)  # [B, T]
    return masked_whiten(returns, mask)


def overlong_penalty(lengths: torch.Tensor, max_len: int, buffer: int, finished: torch.Tensor) -> torch.Tensor:
    """DAPO soft overlong punishment (Yu et al. 2025, eq. 13) in [−1, 0]: 0 up to L_max − L_cache, then linear down
    to −1 at L_max. With ``buffer=0`` only truncated responses (not finished) get −1. lengths, finished: [B] → [B]."""
    lengths = lengths.float()
    if buffer == 0:
        return -(~finished.bool()).float()
    return ((max_len - buffer - lengths) / buffer).clamp(-1.0, 0.0)


def zero_variance(r: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """[B] bool: the sample's group has rewards that all agree (no learning signal for group-relative estimators)."""
    _, std, _ = group_stats(r, group_ids)
    return std == 0


@dataclass
class EstimatorInputs:
    """What an estimator may read. r, group_ids: [B]; mask, kl: [B, T] (kl = k1(π_old ‖ π_ref), zeros without one)."""

    r: torch.Tensor
    mask: torch.Tensor
    kl: torch.Tensor
    group_ids: torch.Tensor
    kl_reward_coef: float
    eps: float


def _per_token(a: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return a[:, None] * mask.to(a.dtype)  # [B] → [B, T]: every token of a sequence shares its outcome advantage


ESTIMATORS: dict[str, Callable[[EstimatorInputs], torch.Tensor]] = {
    "grpo": lambda x: _per_token(grpo_advantages(x.r, x.group_ids, True, x.eps), x.mask),
    "dr_grpo": lambda x: _per_token(grpo_advantages(x.r, x.group_ids, False), x.mask),
    "rloo": lambda x: _per_token(rloo_advantages(x.r, x.group_ids), x.mask),
    "reinforce_pp": lambda x: reinforce_pp_advantages(x.r, x.kl, x.mask, x.kl_reward_coef),
}


def pg_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    adv: torch.Tensor,
    mask: torch.Tensor,
    cfg: GRPOConfig,
    ref_logp: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate + β·k3 KL − c_H·entropy, aggregated per ``cfg.loss_agg``. Tensors [B, T]."""
    per_token, clipped = clipped_policy_loss(logp, old_logp, adv, cfg.clip_eps_low, cfg.clip_eps_high)
    stats = {"clip_frac": masked_mean(clipped, mask).item()}
    if ref_logp is not None and cfg.kl_coef > 0:
        kl = kl_estimate(logp, ref_logp, "k3")  # [B, T]
        per_token = per_token + cfg.kl_coef * kl
        stats["kl_k3"] = masked_mean(kl, mask).item()
    if entropy is not None and cfg.entropy_coef > 0:
        per_token = per_token - cfg.entropy_coef * entropy
    loss = aggregate_loss(per_token, mask, cfg.loss_agg, max_len=cfg.gen.max_new_tokens)
    return loss, stats


# ---------------------------------------------------------------------------------------------------------------
# The loop: collect → estimate → update, each its own function.
# ---------------------------------------------------------------------------------------------------------------


def collect_groups(
    model, tokenizer, next_prompts: Callable[[], list[dict]], rewards: RewardSet, env_factory, cfg: GRPOConfig,
    generator, groups_drawn: list[int], collect: Callable[..., Rollout] | None = None,
) -> tuple[Rollout | None, dict[str, float]]:  # fmt: skip
    """Step 1. Sample G responses for N prompts (or G episodes from N environment seeds) and score them; with
    dynamic sampling, drop groups whose rewards have zero variance and sample more (at most ``max_sampling_tries``
    rounds) until N groups are kept. ``groups_drawn`` [1] counts groups drawn so far (the next group id).
    ``reward/sampled_mean`` is over every sample drawn; the kept batch's own statistics come from rollout_metrics.
    ``collect``: the run's collect function (``common.collector``: local or Ray workers; default ``collect_step``)."""
    G, N = cfg.group_size, cfg.prompts_per_step
    kept: list[Rollout] = []
    n_kept, n_groups, n_zero, tries = 0, 0, 0, 0
    sampled: list[torch.Tensor] = []  # valid rewards of every sample drawn, kept or dropped
    while n_kept < N and tries < (cfg.max_sampling_tries if cfg.dynamic_sampling else 1):
        tries += 1
        rows = next_prompts() if env_factory is None else None
        ro = (collect or collect_step)(
            model, tokenizer, cfg.gen, rewards, rows=rows, env_factory=env_factory, n_groups=N,
            samples_per_prompt=G, group_start=groups_drawn[0], seed=cfg.run.seed, max_turns=cfg.max_turns,
            max_length=cfg.model.max_length, generator=generator, row_seeded=cfg.run.sampling_seeds == "row",
        )  # fmt: skip
        groups_drawn[0] += N
        if cfg.overlong_coef > 0:
            pen = overlong_penalty(ro.response_lengths, cfg.gen.max_new_tokens, cfg.overlong_buffer, ro.finished)
            ro.components["overlong"] = pen.cpu()
            ro.rewards = ro.rewards + cfg.overlong_coef * pen.to(ro.rewards.device) * ro.valid
        sampled.append(ro.rewards[ro.valid].cpu())
        zero = zero_variance(ro.rewards, ro.group_ids)  # [B]
        n_groups, n_zero = n_groups + N, n_zero + int(zero.sum()) // G
        if cfg.dynamic_sampling:
            keep_groups = ro.group_ids[~zero].unique()[: N - n_kept]
            ro = ro.select(torch.isin(ro.group_ids, keep_groups).nonzero().squeeze(1).cpu())
        if len(ro):
            kept.append(ro)
            n_kept += len(ro.group_ids.unique())
    all_r = torch.cat(sampled)
    stats = {
        "frac_zero_var_groups": n_zero / max(n_groups, 1),
        "sampling_tries": tries,
        "reward/sampled_mean": all_r.mean().item() if len(all_r) else float("nan"),
    }
    if not kept:  # every group was uninformative in every try: nothing to train on this step
        return None, stats
    return Rollout.concat(kept, tokenizer.pad_token_id), stats


@torch.no_grad()
def estimate(model, ref_model, ro: Rollout, cfg: GRPOConfig) -> PGBatch:
    """Step 2. π_old and π_ref log-probs [B, T], the loss mask [B, T] and advantages [B, T].

    Skipped samples (reward failed, ``valid`` False) get the mean reward of their group's valid samples (so they
    shift nobody's baseline much) and a zero loss mask (so they do not train). Environment tokens between turns
    (``action_mask`` 0) take no part in the loss either.
    """
    valid = ro.valid_mask.to(ro.rewards.device)
    mask = ro.policy_mask.float() * valid[:, None].float()
    T = ro.response_ids.shape[1]
    # The sampler already computed log π_old(a_t|s_t) with the same temperature (equal to a teacher-forced forward up
    # to float error, ~1e-6): reusing them saves one forward over the batch (measured ≈10% of a step, docs/benchmarks.md).
    # Off-policy (run.off_policy_steps: 1) the batch was sampled one update ago: π_old must be the sampler's, always.
    if cfg.reuse_sampler_logprobs or cfg.run.off_policy_steps:
        old_logp = ro.logprobs.to(mask.device)
    else:
        old_logp = batched_logprobs(model, ro.input_ids, ro.attention_mask, T, cfg.gen.temperature)
    ref_logp = None
    if ref_model is not None:
        ref_logp = batched_logprobs(ref_model, ro.input_ids, ro.attention_mask, T, cfg.gen.temperature)
    r = impute_invalid(ro.rewards, valid, ro.group_ids)
    kl = kl_estimate(old_logp, ref_logp, "k1") if ref_logp is not None else torch.zeros_like(old_logp)
    x = EstimatorInputs(r, mask, kl, ro.group_ids, cfg.kl_reward_coef, cfg.adv_eps)
    return PGBatch(old_logp=old_logp, ref_logp=ref_logp, mask=mask, adv=ESTIMATORS[cfg.estimator](x), kl=kl)


def impute_invalid(r: torch.Tensor, valid: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """Replace invalid rewards by their group's mean valid reward (0 when no sample of the group is valid). [B]."""
    if bool(valid.all()):
        return r
    mean, _, _ = group_stats(torch.where(valid, r, torch.zeros_like(r)), group_ids, weight=valid)
    return torch.where(valid, r, mean)


def update(model, opt, sched, ro: Rollout, est: PGBatch, cfg: GRPOConfig) -> dict[str, float]:
    """Step 3. μ passes over the batch in minibatches: recompute log π_θ, clipped surrogate (+ KL), optimizer step."""
    B, T = ro.response_ids.shape
    mb = min(cfg.minibatch_size or B, B)
    micro = min(cfg.micro_batch_size or mb, mb)
    stats: dict[str, list[float]] = {}
    model.train()
    for _ in range(cfg.ppo_epochs):
        order = torch.randperm(B)
        for start in range(0, B, mb):
            idx = order[start : start + mb].to(ro.input_ids.device)
            parts: list[tuple[dict[str, float], float]] = []  # (stats, weight) per micro-batch
            for sub in idx.split(micro):
                with mixed_precision(cfg.model, sub.device):  # the forward only; backward runs outside autocast
                    logp, ent = sequence_logprobs(
                        model, ro.input_ids[sub], ro.attention_mask[sub], T, cfg.gen.temperature, with_entropy=True
                    )
                mask = est.mask[sub]
                ref = est.ref_logp[sub] if est.ref_logp is not None else None
                loss, s = pg_loss(logp, est.old_logp[sub], est.adv[sub], mask, cfg, ref, ent)
                weight = accumulation_weight(mask, est.mask[idx], cfg.loss_agg)  # Σ weights·losses = minibatch loss
                (loss * weight).backward()
                parts.append(
                    (s | {"loss/total": loss.item(), "entropy": masked_mean(ent.detach(), mask).item()}, weight)
                )
            s = {k: sum(p[k] * w for p, w in parts) / max(sum(w for _, w in parts), 1e-12) for k in parts[0][0]}
            s["grad_norm"] = clip_and_step(model, opt, sched, cfg.optim.max_grad_norm)
            for k, v in s.items():
                stats.setdefault(k, []).append(v)
    return {k: sum(v) / len(v) for k, v in stats.items()}


def learn(model, ref_model, opt, sched, ro: Rollout, cfg: GRPOConfig) -> tuple[PGBatch, dict[str, float]]:
    """Steps 2–3 on one batch, what a learner (this process, or a Ray learner actor) runs: estimate, then update.
    Returns the estimate and the update's statistics with the two steps' times."""
    t0 = time.perf_counter()
    with mixed_precision(cfg.model, ro.input_ids.device):
        est = estimate(model, ref_model, ro, cfg)
    t1 = time.perf_counter()
    stats = update(model, opt, sched, ro, est, cfg)  # applies model.autocast to its forward passes
    return est, stats | {"time/estimate": t1 - t0, "time/update": time.perf_counter() - t1}


def rollout_metrics(ro: Rollout, est: PGBatch, task_name: str | None) -> dict[str, float]:
    """Training-batch reward mean/std, per-component means, accuracy (task reward ≥ 1), KL to the reference,
    response length (names as diagnostics.check_degeneration reads them)."""
    valid = ro.valid_mask
    r = ro.rewards[valid] if valid.any() else ro.rewards
    out = {
        "reward/mean": r.mean().item(),
        "reward/std": r.std().item() if len(r) > 1 else 0.0,
        "reward/errors": len(ro.reward_errors),
        "response/length": ro.response_lengths.float().mean().item(),
        "frac_truncated": (~ro.finished.bool()).float().mean().item(),
        "adv/abs_mean": masked_mean(est.adv.abs(), est.mask).item(),
    }
    for name, values in ro.components.items():
        out[f"reward/{name}"] = values.float().mean().item()
    if task_name in ro.components:
        out["train/accuracy"] = (ro.components[task_name] >= 1.0).float().mean().item()
    if est.ref_logp is not None:
        out["kl"] = masked_mean(est.kl, est.mask).item()  # k1 estimate of KL(π_old ‖ π_ref)
    return out


def train(cfg: GRPOConfig, resume: bool = False, *, model=None, tokenizer=None) -> dict[str, Any]:
    """Run GRPO / Dr.GRPO / RLOO / REINFORCE++; returns {"run_dir", "model_dir", "initial", "final"} (eval metrics).

    ``model`` / ``tokenizer``: a policy object to train instead of loading ``cfg.model`` (the Python API)."""
    # 0. Set-up: seed, run directory, policy, frozen reference, task, rewards, optimizer, resume.
    seed_everything(cfg.run.seed)
    run = RunDir.open(cfg.run, cfg.estimator, cfg, resume=resume)
    model, tokenizer = policy_from(cfg.model, model, tokenizer)
    device = next(model.parameters()).device
    amp = mixed_precision(cfg.model, device)  # bf16 autocast when model.autocast is set, else a no-op
    needs_ref = cfg.kl_coef > 0 or (cfg.estimator == "reinforce_pp" and cfg.kl_reward_coef > 0)
    ref_model = copy.deepcopy(model).eval().requires_grad_(False) if needs_ref else None
    task = load_task(cfg.task, kind="prompt", tokenizer=tokenizer, max_length=cfg.model.max_length)
    rewards, eval_rewards, env_factory = experience_sources(cfg, task, device)
    opt, sched = make_optimizer(model.parameters(), cfg.optim, cfg.steps * cfg.ppo_epochs * _updates_per_batch(cfg))
    rng = random.Random(cfg.run.seed)
    generator = torch.Generator(device=device).manual_seed(cfg.run.seed)
    step, history = 0, {}
    if (state := run.resume({"policy": model}, {"policy": opt}, {"sample": generator})) is not None:
        step, history = state["step"], state.get("history", {})
        sched.load_state_dict(state["scheduler"])
    drawn = [history.get("batches_drawn", 0)]  # prompt batches used so far (dynamic sampling draws extra ones)
    groups_drawn = [history.get("groups_drawn", 0)]  # groups sampled so far: the next group id / environment seed
    order = batches(len(task.train), min(cfg.prompts_per_step, len(task.train)), rng, skip=drawn[0])

    def next_prompts() -> list[dict]:
        drawn[0] += 1
        return [task.train[i] for i in next(order)]

    evaluate = evaluator(cfg, model, tokenizer, task, eval_rewards, env_factory)
    collect = collector(cfg, model, tokenizer, rewards, env_factory)  # local, or Ray rollout workers
    learner = make_learner(cfg, learn, model, ref_model, opt, sched)  # ``learn`` here, or in a Ray learner actor

    def fetch() -> tuple[Rollout | None, dict, dict]:  # a batch, and the draw counts a checkpoint after it records
        ro, row = collect_groups(
            model, tokenizer, next_prompts, rewards, env_factory, cfg, generator, groups_drawn, collect
        )
        return ro, row, {"batches_drawn": drawn[0], "groups_drawn": groups_drawn[0]}

    experience = Experience(fetch, collect, model, cfg.run.off_policy_steps)  # off-policy: batch k+1 during update k
    if step == 0:
        history["initial"] = run.log(0, evaluate() | {"params": count_parameters(model)})
    bar = progress(cfg.steps, step, cfg.estimator, cfg.run.progress)
    recent: list[dict] = []  # recent step metrics, for the degeneration warnings
    warned: dict[str, int] = {}
    bad = 0  # updates in a row with a non-finite loss / gradient (skipped)
    last = run.last_step(step, cfg.steps)  # steps done, or run.max_cpu_s spent
    while not last:
        # 1. Collect: N prompts × G samples, scored (dynamic sampling refills zero-variance groups).
        t0 = time.perf_counter()
        with amp:
            ro, row, counts = experience.next(more=step + 1 < cfg.steps)
        t1 = time.perf_counter()
        row |= {"time/collect": t1 - t0}
        if ro is not None:
            # 2–3. Estimate (π_old / π_ref log-probs, advantages), then update (μ passes of clipped PG steps).
            est, stats = learner(model, ref_model, opt, sched, ro, cfg)
            row |= stats
            bad = guard_numerics(row, bad, cfg.run.max_bad_updates, step + 1)
            n_tokens = int(ro.response_mask.sum())
            row |= rollout_metrics(ro, est, "task" if "task" in rewards.fns else None)
            row |= {"tokens_per_s": n_tokens / max(t1 - t0, 1e-9)}
        step += 1
        last = run.last_step(step, cfg.steps)
        row |= {"lr": sched.get_last_lr()[0]}
        # 4. Evaluate, log, samples, checkpoint.
        if step % cfg.eval_every == 0 or last:
            row |= evaluate()
        if ro is not None:
            row |= component_shares(ro.components, ro.valid)
            emit(check_degeneration(row, recent, n_samples=len(ro)), step, warned)
            recent = [*recent, row][-50:]
            if cfg.n_samples and (step % cfg.samples_every == 0 or step == 1):
                seq_adv = masked_mean(est.adv, est.mask, dim=1)  # [B] mean advantage per sequence
                run.log_samples(step, sample_table(ro, k=max(1, cfg.n_samples // 2), extra={"advantage": seq_adv}))
        if step % cfg.run.log_every == 0 or "eval/accuracy" in row:
            row = run.log(step, row)
        show(bar, row, ("reward/sampled_mean", "eval/accuracy", "frac_zero_var_groups"))
        bar.update(1)
        if last or RunDir.due(step, cfg.steps, cfg.run.save_every):
            state = {
                "scheduler": sched.state_dict(),
                "history": history | counts,
            }
            run.save_checkpoint(step, {"policy": (model, tokenizer)}, {"policy": opt}, state, {"sample": generator})
    bar.close()
    experience.close()
    release(collect)  # ends the Ray workers, if any
    release(learner)
    return finish_policy_run(run, model, tokenizer, cfg.model.lora, history, "eval/accuracy")


def _updates_per_batch(cfg: GRPOConfig) -> int:
    B = cfg.prompts_per_step * cfg.group_size
    return -(-B // min(cfg.minibatch_size or B, B))
