"""Small pieces every training loop uses: seeding, optimizer + schedule, evaluation by generation, progress.

Deliberately not a Trainer base class: each algorithm's ``train`` calls these and keeps its loop visible.
"""

from __future__ import annotations

import functools
import importlib
import logging
import math
import random
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from pydantic import Field, field_serializer
from tqdm.auto import tqdm

from rewardloop.config import GenerationConfig, ModelConfig, OptimConfig
from rewardloop.envs.base import DatasetEnv, Environment
from rewardloop.envs.tasks import Task
from rewardloop.models import load_pretrained
from rewardloop.models.loading import check_precision, disable_dropout, resolve_device
from rewardloop.rewards.composite import RewardSection, RewardSet, build_rewards
from rewardloop.rewards.registry import resolve_reward
from rewardloop.rollout.collect import EnvFactory, collect, collect_step
from rewardloop.types import Rollout

log = logging.getLogger(__name__)
EVAL_SEED_OFFSET = 10**9  # evaluation episodes use environment seeds no training step reaches


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
    """Gradient-norm clipping, optimizer and scheduler step; returns the pre-clip grad norm.

    Non-finite gradients (NaN / inf anywhere) skip the step — nothing is written into the weights or the optimizer
    moments — and the returned norm is non-finite, for ``guard_numerics`` to count."""
    params = [p for p in model.parameters() if p.requires_grad]
    norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm else float("inf"))
    if torch.isfinite(norm):
        opt.step()
        sched.step()
    opt.zero_grad(set_to_none=True)
    return float(norm)


class NonFiniteError(RuntimeError):
    """Training produced non-finite losses or gradients in too many updates in a row."""


GUARDED = ("loss", "loss/total", "loss/policy", "loss/value", "train/loss", "grad_norm")


def guard_numerics(row: dict[str, Any], streak: int, limit: int, step: int) -> int:
    """Count updates with a non-finite loss or gradient norm in ``row`` (their optimizer step was skipped by
    ``clip_and_step``); returns the new streak, and raises ``NonFiniteError`` after ``limit`` in a row."""
    bad = [k for k in GUARDED if isinstance(row.get(k), float) and not math.isfinite(row[k])]
    if not bad:
        return 0
    row["update_skipped"] = 1
    log.warning("step %d: non-finite %s; the update was skipped (%d in a row)", step, ", ".join(bad), streak + 1)
    if streak + 1 >= limit:
        raise NonFiniteError(
            f"step {step}: non-finite {', '.join(bad)} in {streak + 1} updates in a row (run.max_bad_updates="
            f"{limit}); the weights hold the last finite update. Lower optim.lr, check the rewards' scale, or "
            "turn off model.autocast"
        )
    return streak + 1


class RLConfig(RewardSection):
    """What every RL trainer (PPO, the GRPO family) shares besides its algorithm: the reward section and where
    experience comes from — the task's prompt rows, or environments (``env``)."""

    env: str | Callable[..., Environment] | None = Field(
        None,
        description="'task' (the task's rows as one-step environments), 'pkg.mod:factory' or a callable "
        "factory(seed=) → Environment; unset = the task's prompt rows",
    )
    max_turns: int = Field(1, ge=1, description="environment episodes: at most this many policy turns")

    @field_serializer("env")
    def _env_name(self, env: Any) -> str | None:
        return env if env is None or isinstance(env, str) else f"{env.__module__}:{getattr(env, '__qualname__', env)}"


def policy_from(cfg: ModelConfig, model=None, tokenizer=None):
    """(model, tokenizer): the objects a Python caller passed (TRL style: ``train(cfg, model=m, tokenizer=t)``), moved
    to ``cfg.device`` with dropout disabled when the config says so; else loaded from ``cfg`` (path or preset)."""
    if model is None:
        return load_pretrained(cfg)
    if tokenizer is None:
        raise ValueError("a model object needs its tokenizer: train(cfg, model=..., tokenizer=...)")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if cfg.disable_dropout:
        disable_dropout(model)
    device = resolve_device(cfg.device)
    check_precision(cfg, device)
    return model.to(device), tokenizer


def experience_sources(cfg: RLConfig, task: Task, device) -> tuple[RewardSet, RewardSet, EnvFactory | None]:
    """(training rewards, evaluation rewards, environment factory or None) of an RL config.

    Training scores with the task's reward plus ``cfg.rewards`` (with an environment: the environment's reward plus
    ``cfg.rewards``); evaluation measures the task's own reward when it has one (the gold signal, not a proxy such
    as a reward model), else the training rewards — both through the same safety layer (timeout, error policy)."""
    env_factory = None
    if cfg.env == "task":
        if task.reward_fn is None:
            raise ValueError("env: 'task' needs a task with a reward (task.reward)")
        env_factory = functools.partial(DatasetEnv, task.train, task.reward_fn)
    elif cfg.env is not None:
        env_factory = resolve_reward(cfg.env)  # the same name resolution as plug-in rewards: 'mod:fn' or callable
    task_reward = None if env_factory is not None else task.reward_fn
    if env_factory is not None and not cfg.rewards:
        train = RewardSet({}, {}, cfg.on_reward_error, cfg.reward_timeout)
    else:
        train = build_rewards(
            cfg.rewards, task_reward, cfg.task_reward_weight, on_error=cfg.on_reward_error,
            timeout=cfg.reward_timeout, device=str(device),
        )  # fmt: skip
    evaluation = train
    if task.reward_fn is not None:
        evaluation = RewardSet({"task": task.reward_fn}, {"task": 1.0}, cfg.on_reward_error, cfg.reward_timeout)
    return train, evaluation, env_factory


# distributed/ sits above algorithms (Ray Tune runs trainers), so the Ray backend is found by name at run time, as a
# plug-in reward is: algorithms never imports ray or rewardloop.distributed.
RAY_COLLECTOR = "rewardloop.distributed.collector:RayCollector"
RAY_LEARNER = "rewardloop.distributed.learner:ActorLearner"


def _ray_backend(path: str, what: str):
    module, _, name = path.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(f"{what} needs ray ({e}): pip install 'rewardloop[ray]'") from e


def collector(
    cfg: RLConfig, model, tokenizer, rewards: RewardSet, env_factory: EnvFactory | None
) -> Callable[..., Rollout]:
    """The run's collect function, with ``rollout.collect_step``'s signature: that function itself for
    ``run.backend: local``; for ``ray``, a ``RayCollector`` that runs it in ``run.rollout_workers`` Ray actors holding
    copies of ``model``, ``tokenizer``, ``rewards`` and ``env_factory`` (docs/guides/distributed.md)."""
    if cfg.run.backend == "local":
        return collect_step
    make = _ray_backend(RAY_COLLECTOR, "run.backend='ray'")
    return make(cfg.run, cfg.model, model, tokenizer, rewards, env_factory)


def make_learner(cfg: RLConfig, learn: Callable, model, ref_model, opt, sched) -> Callable:
    """The run's learner, with ``learn``'s signature (model, ref_model, opt, sched, ro, cfg) → (estimate, stats):
    ``learn`` itself for ``run.learner: driver``; for ``actor``, an ``ActorLearner`` running it in a Ray actor that
    holds copies of the policy, reference and optimizer and copies the results back (docs/guides/distributed.md)."""
    if cfg.run.learner == "driver":
        return learn
    make = _ray_backend(RAY_LEARNER, "run.learner='actor'")
    return make(cfg, learn, model, ref_model, opt, sched)


def release(collect: Callable[..., Rollout]) -> None:
    """End a collector's workers at the end of a run (nothing to do for the local ``collect_step``)."""
    if close := getattr(collect, "close", None):
        close()


class Experience:
    """The batches a loop trains on, in order: ``fetch()`` is called once per batch, never more.

    ``off_policy_steps: 0`` — ``next`` fetches batch k (sampled with θ_k, the weights of now) and returns it.
    ``off_policy_steps: 1`` — ``next`` returns batch k and, when a later step follows, starts batch k+1 with the
    weights of now (θ_k, before update k), so that batch k+1 is one update stale and the update's ratio is taken
    against the sampler's log-probs. A collector that can ``pin`` weights (Ray: the workers get a snapshot) samples
    batch k+1 in a thread while the caller updates the model; the local ``collect_step`` samples with the model
    itself, so there it is fetched before ``next`` returns (the same batches, no overlap)."""

    def __init__(self, fetch: Callable[[], Any], collect: Callable[..., Rollout], model, off_policy_steps: int):
        self.fetch, self.collect, self.model, self.ahead = fetch, collect, model, off_policy_steps
        self.pool = ThreadPoolExecutor(1, "experience") if off_policy_steps and hasattr(collect, "pin") else None
        self.pending: Future | None = None

    def next(self, more: bool) -> Any:
        """Batch k; ``more``: a later step follows (off-policy: start its batch now, with the current weights)."""
        out = self.fetch() if self.pending is None else self.pending.result()
        if self.pending is not None and self.pool is not None:
            self.collect.unpin()
        self.pending = None
        if self.ahead and more:
            if self.pool is not None:
                self.collect.pin(self.model)  # the snapshot the workers sample with while the model updates
                self.pending = self.pool.submit(self.fetch)
            else:
                self.pending = Future()
                self.pending.set_result(self.fetch())
        return out

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def _eval_summary(ro: Rollout) -> dict[str, Any]:
    valid = ro.valid_mask.cpu()
    r = ro.rewards.cpu()[valid]
    return {
        "reward": float(r.mean()) if len(r) else float("nan"),
        "accuracy": float((r >= 1.0).float().mean()) if len(r) else float("nan"),
        "rewards": ro.rewards.tolist(),
        "completions": ro.responses,
        "errors": len(ro.reward_errors),
    }


@torch.no_grad()
def evaluate_generation(
    model,
    tokenizer,
    task: Task,
    rows: list[dict[str, Any]],
    gen: GenerationConfig,
    batch_size: int = 64,
    seed: int = 0,
    rewards: RewardSet | None = None,
) -> dict[str, Any]:
    """Generate for ``rows`` (greedy when gen.temperature == 0) and score through the same collect path as training
    (``rewards``; default: the task's reward with errors skipped). Returns {"reward": mean over scored samples,
    "accuracy": fraction with reward ≥ 1 (exact-match style tasks), "rewards", "completions", "errors"}."""
    if rewards is None:
        rewards = RewardSet({"task": task.reward_fn}, {"task": 1.0}, "skip", 60.0)
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    ro = collect(model, tokenizer, rows, gen, rewards, generator=generator, batch_size=batch_size)
    return _eval_summary(ro)


@torch.no_grad()
def evaluate_env(
    model, tokenizer, env_factory: EnvFactory, gen: GenerationConfig, n: int, rewards: RewardSet | None = None,
    *, seed: int = 0, max_turns: int = 1, max_length: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Run ``n`` evaluation episodes on held-out environment seeds (disjoint from the training seeds) and
    summarise them as ``evaluate_generation`` does."""
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    ro = collect_step(
        model, tokenizer, gen, rewards, env_factory=env_factory, n_groups=n, group_start=EVAL_SEED_OFFSET,
        seed=seed, max_turns=max_turns, max_length=max_length, generator=generator,
    )  # fmt: skip
    return _eval_summary(ro)


def evaluator(cfg: RLConfig, model, tokenizer, task: Task, rewards: RewardSet, env_factory: EnvFactory | None):
    """The evaluation an RL run logs: on held-out environment episodes when it trains on environments, else (and for
    ``env: task``) on the task's test rows; returns a function () → {"eval/reward", "eval/accuracy"}."""

    def evaluate() -> dict[str, float]:
        if env_factory is not None and cfg.env != "task":  # env 'task' evaluates on the task's held-out rows
            res = evaluate_env(
                model, tokenizer, env_factory, cfg.eval_gen, cfg.eval_size, seed=cfg.run.seed,
                max_turns=cfg.max_turns, max_length=cfg.model.max_length,
            )  # fmt: skip
        else:
            rows = task.test[: cfg.eval_size]
            res = evaluate_generation(model, tokenizer, task, rows, cfg.eval_gen, seed=cfg.run.seed, rewards=rewards)
        return {"eval/reward": res["reward"], "eval/accuracy": res["accuracy"]}

    return evaluate


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
    run.close()
    return {"run_dir": run.path, "model_dir": model_dir, "initial": history.get("initial"), "final": final}
