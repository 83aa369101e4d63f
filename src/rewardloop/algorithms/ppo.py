"""PPO for language models (actor-critic RLHF), reading top to bottom like CleanRL's ``ppo.py``.

Actor = the policy LM π_θ; critic V_φ = a value head on the policy trunk (``critic: shared``) or on a separate copy
(``critic: separate``, InstructGPT); a frozen reference π_ref for the KL leash. Each step has the three steps every RL
loop here has:

1. collect  — ``rollout.collect_step``: sample responses for prompts (or episodes from Environments, multi-turn
              included) and score them with the shared reward section (functions, reward models, the task's reward);
2. estimate — missing-EOS penalty, running normalisation and clipping of the score; old log-probs π_θold and values
              V_φold (one fused pass on a shared trunk) and reference log-probs π_ref; per-token reward
              r_t = −β·KL_t (+ score on the last token) (Ziegler et al. 2019, eq. 2); GAE(γ, λ) (Schulman et al.
              2016); advantage whitening → a ``PPOBatch``;
3. update   — epochs × minibatches (gradient accumulation over micro-batches): clipped surrogate (Schulman et al.
              2017, eq. 7), clipped value loss, entropy bonus, grad-norm clipping, early stop on approx-KL;
then log every metric in docs/algorithms/ppo.md, a sample table, degeneration warnings; adaptive KL update.
"""

from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from rewardloop import diagnostics
from rewardloop.algorithms.common import (
    Experience,
    RLConfig,
    clip_and_step,
    collector,
    evaluator,
    experience_sources,
    guard_numerics,
    make_optimizer,
    policy_from,
    progress,
    release,
    seed_everything,
)
from rewardloop.algorithms.common import show as show_bar
from rewardloop.config import GenerationConfig, ModelConfig, OptimConfig, RunConfig, Section
from rewardloop.envs.tasks import TaskConfig, load_task
from rewardloop.models import load_pretrained, mixed_precision
from rewardloop.models.value_head import ValueModel, load_value_model, value_model_from_policy
from rewardloop.ops import (
    accumulation_weight,
    aggregate_loss,
    clipped_policy_loss,
    clipped_value_loss,
    entropy_from_logits,
    explained_variance,
    gae,
    kl_estimate,
    logprobs_from_logits,
    masked_mean,
    masked_var,
    masked_whiten,
)
from rewardloop.rollout import batched_logprobs, encode_prompts, sequence_logprobs
from rewardloop.runs import RunDir
from rewardloop.types import PPOBatch, Rollout, pad_left

# ---------------------------------------------------------------------------------------------------------------
# 0. Config
# ---------------------------------------------------------------------------------------------------------------


class ScoreConfig(Section):
    """How the sequence score is shaped before it enters the per-token rewards (OpenRLHF's order)."""

    missing_eos_penalty: float | None = Field(None, description="subtracted from the score of truncated responses")
    normalize: bool = Field(False, description="running mean/std normalisation of the score")
    clip: float | None = Field(None, gt=0.0, description="clip the (normalised) score to ±clip")


class PPOConfig(RLConfig):
    """PPO. The reward section (``rewards``, ``task_reward_weight``, ``on_reward_error``, ``reward_timeout``) and
    ``env`` / ``max_turns`` come from ``RLConfig``, shared with the GRPO family."""

    model: ModelConfig = ModelConfig()
    ref_model: ModelConfig | None = Field(None, description="reference policy; default: the same as `model`")
    task: TaskConfig = TaskConfig()
    score: ScoreConfig = ScoreConfig()
    gen: GenerationConfig = GenerationConfig(max_new_tokens=8, temperature=1.0)
    eval_gen: GenerationConfig = GenerationConfig(max_new_tokens=8, temperature=0.0)
    optim: OptimConfig = OptimConfig(lr=1e-4, warmup_steps=5, max_grad_norm=1.0)
    critic_optim: OptimConfig = OptimConfig(lr=1e-3, warmup_steps=5, max_grad_norm=1.0)
    run: RunConfig = RunConfig()
    critic: Literal["shared", "separate"] = Field("separate", description="value head on the policy trunk or a copy")
    steps: int = Field(100, ge=1, description="PPO iterations (collect + update)")
    batch_size: int = Field(64, ge=1, description="episodes collected per step")
    mini_batch_size: int = Field(32, ge=1, description="episodes per optimizer step")
    micro_batch_size: int = Field(32, ge=1, description="episodes per forward/backward (gradient accumulation)")
    epochs: int = Field(2, ge=1, description="passes over each rollout batch")
    gamma: float = Field(1.0, ge=0.0, le=1.0)
    lam: float = Field(0.95, ge=0.0, le=1.0)
    clip_eps: float = Field(0.2, gt=0.0)
    clip_eps_high: float | None = Field(None, gt=0.0, description="upper clip (DAPO clip-higher); default clip_eps")
    value_clip: float | None = Field(0.2, gt=0.0, description="value-loss clipping range; null = unclipped")
    vf_coef: float = Field(0.5, ge=0.0)
    entropy_coef: float = Field(0.0, ge=0.0)
    kl_coef: float = Field(0.05, ge=0.0, description="β (initial value when adaptive)")
    kl_estimator: Literal["k1", "k2", "k3"] = "k1"
    adaptive_kl: bool = Field(False, description="Ziegler et al. 2019 controller: move β toward kl_target")
    kl_target: float = Field(6.0, gt=0.0, description="target KL per sequence (nats) for the adaptive controller")
    kl_horizon: int = Field(10000, ge=1)
    target_kl: float | None = Field(None, gt=0.0, description="stop the epoch loop when approx-KL exceeds this")
    whiten_advantages: bool = True
    loss_agg: Literal["token-mean", "seq-mean", "constant"] = "token-mean"
    eval_every: int = Field(20, ge=1)
    eval_size: int = Field(200, ge=1)
    sample_k: int = Field(2, ge=0, description="best/worst samples written to samples.jsonl each logged step")

    @model_validator(mode="after")
    def _check(self) -> PPOConfig:
        if self.mini_batch_size > self.batch_size:
            raise ValueError(f"mini_batch_size={self.mini_batch_size} must be ≤ batch_size={self.batch_size}")
        if self.run.learner == "actor":
            raise ValueError("run.learner='actor' is built for the GRPO family (grpo, rloo, ...), not yet for PPO")
        return self


# ---------------------------------------------------------------------------------------------------------------
# 1. Pure functions
# ---------------------------------------------------------------------------------------------------------------


def adaptive_kl_update(beta: float, kl: float, target: float, horizon: int, n_steps: int) -> float:
    """Ziegler et al. 2019 §2.2: e = clip(KL/KL_target − 1, −0.2, 0.2);  β ← β · (1 + e · n_steps / horizon)."""
    error = max(-0.2, min(0.2, kl / target - 1.0))
    return beta * (1.0 + error * n_steps / horizon)


def shape_rewards(
    score: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, beta: float, token_rewards: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-token reward r_t = −β·KL_t, plus the sequence score on the last action token: [B] , [B, R] → [B, R].

    ``token_rewards`` [B, R] (multi-turn environments: each turn's reward on that turn's last token) sum to the raw
    score; ``score`` − their sum (the missing-EOS penalty, normalisation, clipping) is added on the last token.
    """
    rewards = -beta * kl * mask
    last = ((mask.long().cumsum(1) == mask.long().sum(1, keepdim=True)) & (mask > 0)).float()  # [B, R] last action
    if token_rewards is None:
        return rewards + last * score[:, None]
    # Turn rewards stay on their turns; what score processing changed (penalty, normalisation) goes on the last token.
    return rewards + token_rewards * mask + last * (score - (token_rewards * mask).sum(1))[:, None]


def packed_gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE over action tokens only: environment tokens between turns (mask 0) are skipped, not episode ends.

    Packs each row's action tokens to the left, runs ``ops.gae``, and scatters back: [B, R] → (adv, returns) [B, R].
    For single-turn rollouts (mask = a prefix of ones) this is exactly ``ops.gae``.
    """
    mask = mask.long()
    order = torch.argsort(-mask, dim=1, stable=True)  # action positions first, in order
    packed_mask = mask.gather(1, order)
    adv_p, ret_p = gae(rewards.gather(1, order), values.gather(1, order), packed_mask, gamma, lam)
    adv, ret = torch.zeros_like(rewards), torch.zeros_like(rewards)
    return adv.scatter(1, order, adv_p) * mask, ret.scatter(1, order, ret_p) * mask


@dataclass
class RunningMoments:
    """Running mean/std of the score (Chan et al. parallel update), for reward normalisation."""

    mean: float = 0.0
    var: float = 1.0
    count: float = 1e-4

    def update(self, x: torch.Tensor) -> None:
        if x.numel() == 0:
            return
        b_mean, b_var, b_n = float(x.mean()), float(x.var(unbiased=False)), x.numel()
        delta, total = b_mean - self.mean, self.count + b_n
        self.mean += delta * b_n / total
        self.var = (self.var * self.count + b_var * b_n + delta**2 * self.count * b_n / total) / total
        self.count = total

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / math.sqrt(self.var + 1e-8)


def process_scores(
    raw: torch.Tensor, finished: torch.Tensor, cfg: ScoreConfig, moments: RunningMoments, valid: torch.Tensor
) -> torch.Tensor:
    """Missing-EOS penalty → running normalisation → clipping (OpenRLHF order). [B] → [B]."""
    score = raw.clone()
    if cfg.missing_eos_penalty is not None:
        score = score - cfg.missing_eos_penalty * (~finished.bool()).float()
    if cfg.normalize:
        moments.update(score[valid])
        score = moments.normalize(score)
    if cfg.clip is not None:
        score = score.clamp(-cfg.clip, cfg.clip)
    return torch.where(valid, score, torch.zeros_like(score))


def ppo_loss(
    logp, old_logp, entropy, values, old_values, advantages, returns, mask, cfg: PPOConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L = L_clip + c_v · L_V − c_H · H over the masked tokens (all [B, R]); returns (loss, stats)."""
    pg, pg_clipped = clipped_policy_loss(logp, old_logp, advantages, cfg.clip_eps, cfg.clip_eps_high)
    vf, vf_clipped = clipped_value_loss(values, old_values, returns, cfg.value_clip)
    loss_pg = aggregate_loss(pg, mask, cfg.loss_agg, mask.shape[1])
    loss_vf = aggregate_loss(vf, mask, cfg.loss_agg, mask.shape[1])
    ent = masked_mean(entropy, mask)
    loss = loss_pg + cfg.vf_coef * loss_vf - cfg.entropy_coef * ent
    log_ratio = logp - old_logp
    stats = {
        "loss/policy": loss_pg.detach(),
        "loss/value": loss_vf.detach(),
        "loss/total": loss.detach(),
        "entropy": ent.detach(),
        "clipfrac/policy": masked_mean(pg_clipped, mask),
        "clipfrac/value": masked_mean(vf_clipped, mask),
        "approx_kl": masked_mean(torch.expm1(log_ratio) - log_ratio, mask).detach(),  # k3 of π_old ‖ π_θ
    }
    return loss, stats


# ---------------------------------------------------------------------------------------------------------------
# 2. Model passes
# ---------------------------------------------------------------------------------------------------------------


def policy_and_values(policy, critic: ValueModel, ids, mask, n_response: int, temperature: float, with_entropy: bool):
    """(log π [B, R], entropy [B, R] | None, V [B, R]); one fused trunk pass when the critic shares the policy."""
    if critic.shared:
        hidden = critic.hidden_states(ids, mask)[:, -(n_response + 1) : -1]  # [B, R, H]
        logits = policy.get_output_embeddings()(hidden)
        if temperature not in (0.0, 1.0):
            logits = logits / temperature
        logp = logprobs_from_logits(logits, ids[:, -n_response:])
        return logp, (entropy_from_logits(logits) if with_entropy else None), critic.head(hidden)
    logp, ent = sequence_logprobs(policy, ids, mask, n_response, temperature, with_entropy)
    return logp, ent, critic.response_values(ids, mask, n_response)


@torch.no_grad()
def old_policy_pass(policy, critic, rollout: Rollout, temperature: float, batch_size: int):
    """Old log-probs and values [B, R] (no gradients, in chunks)."""
    ids, mask, R = rollout.input_ids, rollout.attention_mask, rollout.response_ids.shape[1]
    parts = [
        policy_and_values(policy, critic, ids[i : i + batch_size], mask[i : i + batch_size], R, temperature, False)
        for i in range(0, len(rollout), batch_size)
    ]
    return torch.cat([p[0] for p in parts]), torch.cat([p[2] for p in parts])


def check_fused_head(policy, critic: ValueModel, device) -> None:
    """The fused pass (trunk → LM head) must reproduce the model's own logits (no logit scaling/soft-capping)."""
    ids = torch.arange(3, 11, device=device)[None] % policy.config.vocab_size
    mask = torch.ones_like(ids)
    with torch.no_grad():
        fused, _, _ = policy_and_values(policy, critic, ids, mask, 4, 1.0, False)
        plain, _ = sequence_logprobs(policy, ids, mask, 4)
    if not torch.allclose(fused, plain, atol=1e-4):
        raise ValueError(
            f"critic='shared' needs logits = lm_head(trunk(x)); {type(policy).__name__} differs "
            f"(max |Δ log p| = {(fused - plain).abs().max():.2e}); use critic='separate'"
        )


# ---------------------------------------------------------------------------------------------------------------
# 3. estimate and update (collect is the shared ``rollout.collect_step``)
# ---------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def estimate(policy, critic, ref, ro: Rollout, cfg: PPOConfig, beta: float, moments: RunningMoments) -> PPOBatch:
    """Step 2: score shaping, π_θold / V_φold / π_ref passes, KL-shaped token rewards, GAE, whitening."""
    device, temperature = ro.response_ids.device, cfg.gen.temperature or 1.0
    valid = ro.valid_mask.to(device)
    score = process_scores(ro.rewards.to(device), ro.finished, cfg.score, moments, valid)  # [B]
    mask = ro.policy_mask.to(device).float() * valid[:, None].float()  # [B, R] skipped samples take no part
    # The sampler's log-probs are only compared (a mismatch means a padding/position/temperature bug); the
    # recomputed ones are used — except off-policy (run.off_policy_steps: 1): the batch was sampled one update ago,
    # so π_old is the sampler's.
    old_logp, old_values = old_policy_pass(policy, critic, ro, temperature, cfg.micro_batch_size)
    if cfg.run.off_policy_steps:
        old_logp = ro.logprobs.to(device)
    R = ro.response_ids.shape[1]
    ref_logp = batched_logprobs(ref, ro.input_ids, ro.attention_mask, R, temperature, cfg.micro_batch_size)
    kl = kl_estimate(old_logp, ref_logp, cfg.kl_estimator) * mask  # [B, R]
    token_rewards = ro.token_rewards.to(device) if ro.token_rewards is not None else None
    rewards = shape_rewards(score, kl, mask, beta, token_rewards)  # [B, R]
    adv_raw, returns = packed_gae(rewards, old_values * mask, mask, cfg.gamma, cfg.lam)
    adv = masked_whiten(adv_raw, mask) if cfg.whiten_advantages else adv_raw
    return PPOBatch(old_logp, old_values, ref_logp, mask, score, kl, rewards, adv, adv_raw, returns)


def update(cfg: PPOConfig, policy, critic, opts, ro: Rollout, batch: PPOBatch) -> dict[str, Any]:
    """Step 3: PPO epochs over one batch; returns the mean of the minibatch stats and the epochs completed."""
    ids, attn, R, B = ro.input_ids, ro.attention_mask, ro.response_ids.shape[1], len(ro)
    temperature, mask = cfg.gen.temperature or 1.0, batch.mask
    policy.train()
    critic.train()
    collected: list[dict[str, float]] = []
    grad_norms: list[float] = []
    stop, epochs_done = False, 0
    for _epoch in range(cfg.epochs):
        perm = torch.randperm(B).tolist()
        for start in range(0, B, cfg.mini_batch_size):
            mb = perm[start : start + cfg.mini_batch_size]
            mb_stats = []
            for m0 in range(0, len(mb), cfg.micro_batch_size):
                idx = mb[m0 : m0 + cfg.micro_batch_size]
                # Gradient accumulation: each micro-batch's token-mean is weighted by its share of the tokens.
                weight = accumulation_weight(mask[idx], mask[mb], cfg.loss_agg)
                with mixed_precision(cfg.model, ids.device):  # the forward only; backward outside autocast
                    logp, ent, values = policy_and_values(policy, critic, ids[idx], attn[idx], R, temperature, True)
                loss, st = ppo_loss(
                    logp, batch.old_logp[idx], ent, values, batch.old_values[idx], batch.adv[idx],
                    batch.returns[idx], mask[idx], cfg,
                )  # fmt: skip
                (loss * weight).backward()
                mb_stats.append({k: (float(v), weight) for k, v in st.items()})
            grad_norms.append(_step(cfg, policy, critic, opts))
            collected.append({k: sum(s[k][0] * s[k][1] for s in mb_stats) for k in mb_stats[0]})
            if cfg.target_kl is not None and collected[-1]["approx_kl"] > cfg.target_kl:
                stop = True
                break
        epochs_done += 1
        if stop:
            break
    out = {k: sum(c[k] for c in collected) / len(collected) for k in collected[0]}
    return out | {"grad_norm": sum(grad_norms) / len(grad_norms), "ppo/epochs": epochs_done, "ppo/early_stop": stop}


def step_metrics(ro: Rollout, b: PPOBatch, times: dict[str, float]) -> dict[str, Any]:
    """The per-step metrics of docs/algorithms/ppo.md from one batch."""
    valid, mask = ro.valid_mask.to(b.mask.device), b.mask
    lengths = ro.response_mask.sum(1).float()
    raw = ro.rewards[valid.to(ro.rewards.device)].float()
    return {
        "reward/mean": float(raw.mean()) if raw.numel() else float("nan"),
        "reward/std": float(raw.std()) if raw.numel() > 1 else 0.0,
        "score/mean": float(b.score[valid].mean()) if valid.any() else float("nan"),
        "kl": float(masked_mean(b.kl, mask)),
        "kl/seq": float(b.kl.sum(1)[valid].mean()) if valid.any() else 0.0,
        "advantages/mean": float(masked_mean(b.adv_raw, mask)),
        "advantages/std": float(masked_var(b.adv_raw, mask).sqrt()),
        "returns/mean": float(masked_mean(b.returns, mask)),
        "values/mean": float(masked_mean(b.old_values, mask)),
        "explained_variance": explained_variance(b.old_values, b.returns, mask),
        "response/length": float(lengths.mean()),
        "response/finished": float(ro.finished.float().mean()),
        "reward/errors": len(ro.reward_errors),
        **{f"reward/{k}": float(v[valid.cpu()].float().mean()) for k, v in ro.components.items() if valid.any()},
        "valid_fraction": float(valid.float().mean()),
        "debug/sampler_logprob_diff": float(((ro.logprobs.to(mask.device) - b.old_logp).abs() * mask).max()),
        "tokens_per_s": int(ro.attention_mask.sum()) / max(sum(times.values()), 1e-9),
        "gen_tokens_per_s": float(lengths.sum()) / max(times["collect"], 1e-9),
        **{f"time/{k}": v for k, v in times.items()},
        **diagnostics.component_shares(ro.components, valid),
    }


# ---------------------------------------------------------------------------------------------------------------
# 4. Training loop
# ---------------------------------------------------------------------------------------------------------------


def train(cfg: PPOConfig, resume: bool = False, *, model=None, tokenizer=None) -> dict[str, Any]:
    """Run PPO; returns {"run_dir", "model_dir", "value_dir", "initial", "final"} (eval metrics dicts).

    ``model`` / ``tokenizer``: a policy object to train instead of loading ``cfg.model`` (the Python API); the
    reference is then a frozen copy of it unless ``cfg.ref_model`` names one."""
    # 0. Set-up: run dir, policy, reference, critic, optimizers, rewards / environments, RNG, resume.
    seed_everything(cfg.run.seed)
    run = RunDir.open(cfg.run, "ppo", cfg, resume=resume)
    policy, tok = policy_from(cfg.model, model, tokenizer)
    device = next(policy.parameters()).device
    amp = mixed_precision(cfg.model, device)
    ref = copy.deepcopy(policy) if model is not None and cfg.ref_model is None else None
    ref = ref or load_pretrained(cfg.ref_model or cfg.model, device)[0]
    ref.eval().requires_grad_(False)
    critic = value_model_from_policy(policy, shared=cfg.critic == "shared")
    if critic.shared:
        check_fused_head(policy, critic, device)
    task = load_task(cfg.task, kind="prompt", tokenizer=tok, max_length=cfg.model.max_length)
    rewards, eval_rewards, env_factory = experience_sources(cfg, task, device)
    n_updates = cfg.steps * cfg.epochs * math.ceil(cfg.batch_size / cfg.mini_batch_size)
    opts = {
        "policy": make_optimizer(critic.parameters() if critic.shared else policy.parameters(), cfg.optim, n_updates)
    }
    if not critic.shared:
        opts["value"] = make_optimizer(critic.parameters(), cfg.critic_optim, n_updates)
    generator = torch.Generator(device=device).manual_seed(cfg.run.seed)
    data_rng = random.Random(cfg.run.seed)
    step, beta, moments, history, seen = 0, cfg.kl_coef, RunningMoments(), {}, {}
    state = run.resume({"policy": policy, "value": critic}, {k: o for k, (o, _) in opts.items()}, {"sample": generator})
    if state is not None:
        for k, (_, sched) in opts.items():
            sched.load_state_dict(state["schedulers"][k])
        step, beta, history, seen = state["step"], state["kl_coef"], state["history"], state["seen"]
        moments = RunningMoments(**state["moments"])
        version, internal, gauss = state["data_rng"]  # JSON turned random.getstate()'s tuples into lists
        data_rng.setstate((version, tuple(internal), gauss))
    evaluate = evaluator(cfg, policy, tok, task, eval_rewards, env_factory)
    collect = collector(cfg, policy, tok, rewards, env_factory)  # local collect_step, or Ray rollout workers
    fetched = [step]  # batches drawn so far: the next batch's group ids start at fetched · batch_size

    def fetch() -> tuple[Rollout, Any]:  # one response per prompt (or episode), and the data RNG state after it
        rows = [task.train[data_rng.randrange(len(task.train))] for _ in range(cfg.batch_size)]
        ro = collect(
            policy, tok, cfg.gen, rewards, rows=rows, env_factory=env_factory, n_groups=cfg.batch_size,
            group_start=fetched[0] * cfg.batch_size, seed=cfg.run.seed, max_turns=cfg.max_turns,
            max_length=cfg.model.max_length, generator=generator, row_seeded=cfg.run.sampling_seeds == "row",
        )  # fmt: skip
        fetched[0] += 1
        return ro, data_rng.getstate()

    experience = Experience(fetch, collect, policy, cfg.run.off_policy_steps)  # off-policy: batch k+1 during update k
    if step == 0:
        history["initial"] = run.log(0, evaluate())
    recent: list[dict] = [r for r in run.metrics() if "reward/mean" in r][-2 * diagnostics.DRIFT_WINDOW :]
    bar = progress(cfg.steps, step, "ppo", cfg.run.progress)
    bad = 0  # updates in a row with a non-finite loss / gradient (skipped)
    last = run.last_step(step, cfg.steps)  # steps done, or run.max_cpu_s spent
    while not last:
        t0 = time.perf_counter()
        with amp:  # forward passes in bf16 when model.autocast is set (update() applies it to its own)
            # 1. Collect: one response per prompt (or one episode per environment), scored by the reward section.
            ro, rows_drawn = experience.next(more=step + 1 < cfg.steps)
            t1 = time.perf_counter()
            # 2. Estimate: score shaping, old log-probs / values / reference log-probs, KL-shaped rewards, GAE.
            batch = estimate(policy, critic, ref, ro, cfg, beta, moments)
            t2 = time.perf_counter()
        # 3. Update: epochs × minibatches × micro-batches; early stop when approx-KL passes target_kl.
        stats = update(cfg, policy, critic, opts, ro, batch)
        t3 = time.perf_counter()
        step += 1
        last = run.last_step(step, cfg.steps)
        # 4. KL controller, metrics, samples, warnings, evaluation, checkpoint.
        valid = ro.valid_mask.to(device)
        seq_kl = float(batch.kl.sum(1)[valid].mean()) if valid.any() else 0.0
        if cfg.adaptive_kl:
            beta = adaptive_kl_update(beta, seq_kl, cfg.kl_target, cfg.kl_horizon, cfg.batch_size)
        row = step_metrics(ro, batch, {"collect": t1 - t0, "estimate": t2 - t1, "train": t3 - t2})
        row |= {"kl_coef": beta, "lr": opts["policy"][1].get_last_lr()[0], **stats}
        bad = guard_numerics(row, bad, cfg.run.max_bad_updates, step)
        rm = rewards.model_stats().get("rm", {})
        if rm:
            row |= {"rm/score": float(rm["mean"].mean()), "rm/std": float(rm["std"].mean())}
        if step % cfg.eval_every == 0 or last:
            row |= evaluate()
        row["warnings"] = diagnostics.emit(diagnostics.check_degeneration(row, recent, n_samples=len(ro)), step, seen)
        if step % cfg.run.log_every == 0 or "eval/reward" in row:
            row = run.log(step, row)
            extra = {"rm_std": rm["std"]} if rm else {}
            run.log_samples(step, diagnostics.sample_table(ro, cfg.sample_k, extra | {"kl": batch.kl.sum(1).cpu()}))
        recent = [*recent, row][-4 * diagnostics.DRIFT_WINDOW :]
        show_bar(bar, row, ("reward/mean", "kl", "eval/accuracy"))
        bar.update(1)
        if last or RunDir.due(step, cfg.steps, cfg.run.save_every):
            state = {
                "kl_coef": beta, "moments": vars(moments), "history": history, "seen": seen,
                "data_rng": rows_drawn, "schedulers": {k: s.state_dict() for k, (_, s) in opts.items()},
            }  # fmt: skip
            models = {"policy": (policy, tok), "value": (critic, tok)}
            run.save_checkpoint(step, models, {k: o for k, (o, _) in opts.items()}, state, {"sample": generator})
    bar.close()
    experience.close()
    release(collect)  # ends the Ray workers, if any
    final = next((r for r in reversed(run.metrics()) if "eval/reward" in r), {})
    model_dir = run.save_final("policy", policy, tok, lora_save=cfg.model.lora.save if cfg.model.lora else "merged")
    value_dir = run.save_final("value", critic, tok)
    run.close()
    return {"run_dir": run.path, "model_dir": model_dir, "value_dir": value_dir, "initial": history.get("initial"),
            "final": final}  # fmt: skip


def _step(cfg: PPOConfig, policy, critic, opts) -> float:
    if critic.shared:  # one optimizer over the shared trunk and both heads
        return clip_and_step(critic, *opts["policy"], cfg.optim.max_grad_norm)
    value_norm = clip_and_step(critic, *opts["value"], cfg.critic_optim.max_grad_norm)
    policy_norm = clip_and_step(policy, *opts["policy"], cfg.optim.max_grad_norm)
    return policy_norm if math.isfinite(value_norm) else value_norm  # either non-finite: the guard counts it


# ---------------------------------------------------------------------------------------------------------------
# 5. The critic as an artifact: V(prompt) = how well the policy is expected to do on it
# ---------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def score_values(model_dir: str | Path, prompts: list[str], batch_size: int = 64, device: str = "auto") -> list[float]:
    """V(s_0) for each prompt: the critic's expected (KL-shaped, possibly normalised) return before answering."""
    critic, tok = load_value_model(model_dir, device)
    dev = next(critic.parameters()).device
    out: list[float] = []
    for i in range(0, len(prompts), batch_size):
        ids, mask = pad_left(encode_prompts(tok, prompts[i : i + batch_size]), tok.pad_token_id or 0)
        values = critic(ids.to(dev), mask.to(dev))  # [B, P]; left padding → the last column is the last prompt token
        out += values[:, -1].tolist()
    return out


def value_command(model_dir: str | Path, prompts: list[str] | None = None, file: str | None = None) -> list[dict]:
    """For the CLI: prompts given directly or read from a prompt file (JSONL/…); rows {"prompt", "value"}."""
    if file is not None:
        from rewardloop.data import load_rows

        prompts = (prompts or []) + [r["prompt"] for r in load_rows(file, kind="prompt")]
    if not prompts:
        raise ValueError("give prompts, or --file with a 'prompt' column")
    return [{"prompt": p, "value": v} for p, v in zip(prompts, score_values(model_dir, prompts), strict=True)]
