"""``run.backend: ray``: collect in N Ray rollout workers, estimate + update in the driver (the learner).

Each rollout worker is a Ray actor holding a copy of the policy, the tokenizer, the reward set and the environment
factory, and calls the same ``rollout.collect_step`` as a local run on its share of the step's groups. Per step:

1. broadcast — the learner's trainable weights (LoRA: the adapter; PPO shared critic: the policy's trunk and
   head) go into the object store once (``ray.put``); every worker receives the same reference;
2. split — groups [0, N) go to the workers in contiguous shares, each with its global ``group_start``, so group
   ids and environment seeds are the ones a local run uses, and per-row seeded sampling (``run.sampling_seeds:
   row``) draws the same responses wherever a row runs;
3. gather — the shares come back as CPU ``Rollout`` objects, concatenated in group order;
4. score — with ``run.reward_workers: R ≥ 1`` the rollout workers return unscored samples and R reward workers
   (actors holding the reward set) score contiguous slices of the batch; R = 0 scores inside the rollout workers.

Faults: a worker that dies (killed, OOM, node lost) is restarted by Ray (``max_restarts``) and its share is sent
again with the same weights and group ids — the re-collected share equals the lost one, nothing is counted twice.
A reward worker that dies is restarted the same way and its slice scored again. A worker (rollout or reward) where
the code sandbox has no Linux namespaces refuses sandboxed rewards (``SandboxUnavailableError``).
"""

from __future__ import annotations

import copy
import functools
import itertools
import logging
import os
import sys
import time
from typing import Any

import ray
import torch
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from rewardloop.config import GenerationConfig, ModelConfig, RunConfig
from rewardloop.models import mixed_precision
from rewardloop.rewards.composite import RewardSet
from rewardloop.rollout.collect import EnvFactory, collect_step, score_rollout
from rewardloop.types import Rollout

log = logging.getLogger(__name__)
WORKER_LOST = (RayActorError, ActorDiedError, ActorUnavailableError)
SANDBOXED_MODULES = ("rewardloop.rewards.code_tests", "rewardloop.rewards.sandbox")
PLUGIN_PREFIX = "rewardloop_plugin_"  # rewards.registry's module names for plug-in files


class SandboxUnavailableError(RuntimeError):
    """A reward needs the code sandbox's Linux namespaces, which this worker's machine does not provide."""


def ensure_ray(run: RunConfig) -> None:
    """Join ``run.ray_address``, or start a local Ray (no dashboard, ``run.num_cpus`` CPUs) unless one is running."""
    if ray.is_initialized():
        return
    if run.ray_address:
        ray.init(address=run.ray_address, include_dashboard=False, log_to_driver=True)
    else:
        ray.init(num_cpus=run.num_cpus, include_dashboard=False, log_to_driver=True)


def needs_sandbox(obj: Any) -> bool:
    """True when ``obj`` (a reward function, a bound partial, an environment factory) runs code in the sandbox."""
    seen: list[Any] = [obj]
    while seen:
        x = seen.pop()
        if getattr(x, "__module__", None) in SANDBOXED_MODULES or getattr(x, "needs_sandbox", False):
            return True
        if isinstance(x, functools.partial):
            seen += [x.func, *x.args, *x.keywords.values()]
        if hasattr(x, "__wrapped__"):
            seen.append(x.__wrapped__)
    return False


def sandbox_refusal(
    rewards: RewardSet | None, env_factory: EnvFactory | None, backend: str, worker: str = "rollout worker"
) -> str | None:
    """Why this worker must refuse the run (sandboxed rewards where the sandbox backend is not ``unshare``), or None.

    The rlimits-only fallback is fine on a developer's laptop but is not isolation; a cluster worker never falls back
    to it silently."""
    fns = dict(rewards.fns) if rewards is not None else {}
    if env_factory is not None:
        fns["env"] = env_factory
    sandboxed = sorted(name for name, fn in fns.items() if needs_sandbox(fn))
    if not sandboxed or backend == "unshare":
        return None
    return (
        f"{worker} on {os.uname().nodename} (pid {os.getpid()}): reward(s) {', '.join(sandboxed)} run code "
        f"in the sandbox, which needs Linux namespaces (unshare), but here the sandbox backend is {backend!r}; "
        "refusing rather than running untrusted code with rlimits only. Give the Ray workers user namespaces "
        "(docs/guides/sandbox.md) or run without the code reward."
    )


def sandbox_probe(rewards: RewardSet | None, env_factory: EnvFactory | None, worker: str) -> str | None:
    """``sandbox_refusal`` with this process's sandbox backend, probed only when something needs the sandbox (the
    probe is a trial run; ``REWARDLOOP_SANDBOX_BACKEND`` in the worker's environment forces it)."""
    from rewardloop.rewards.sandbox import sandbox_backend

    fns = list(rewards.fns.values()) if rewards is not None else []
    if not any(needs_sandbox(f) for f in [env_factory, *fns]):
        return None
    return sandbox_refusal(rewards, env_factory, sandbox_backend(), worker)


@ray.remote
class RolloutWorker:
    """A policy copy that runs ``collect_step`` on the groups it is sent, with the weights it is sent."""

    def __init__(
        self, model, tokenizer, rewards: RewardSet | None, env_factory, model_cfg: ModelConfig, device, threads,
        sampler: str = "hf",
    ):  # fmt: skip
        torch.set_num_threads(threads)
        self.device = torch.device(device if sampler == "hf" else "cpu")  # vllm: the engine holds the GPU copy
        self.model = model.to(self.device).eval()
        self.tokenizer, self.rewards, self.env_factory, self.model_cfg = tokenizer, rewards, env_factory, model_cfg
        self.refusal = sandbox_probe(rewards, env_factory, "rollout worker")
        self.vllm = None  # run.rollout_backend: vllm — the engine samples; this CPU copy is kept in step with it
        if sampler == "vllm":
            from rewardloop.distributed.vllm_backend import VLLMSampler

            self.vllm = VLLMSampler(self.model, tokenizer)
        self.version = -1  # the weights version last loaded

    def pid(self) -> int:
        return os.getpid()

    def load(self, weights: dict[str, torch.Tensor], version: int) -> None:
        """Copy ``weights`` (trainable parameters by name) into the policy copy, unless ``version`` is loaded."""
        if version == self.version:
            return
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in weights.items():
                params[name].copy_(value)
        if self.vllm is not None:
            self.vllm.load(weights)
        self.version = version

    def collect(self, weights: dict[str, torch.Tensor], version: int, gen: GenerationConfig, **kwargs) -> Rollout:
        """Load ``weights`` (trainable parameters by name) unless ``version`` is loaded, then ``collect_step`` on this
        worker's share (``kwargs``: rows / n_groups, group_start, seeds ...); returns the Rollout on CPU, scored
        (without reward workers) or with the environment's reward only (``rewards`` None: reward workers score it)."""
        if self.refusal:
            raise SandboxUnavailableError(self.refusal)
        self.load(weights, version)
        sample = {"sample": self.vllm} if self.vllm is not None else {}
        with mixed_precision(self.model_cfg, self.device):
            ro = collect_step(
                self.model, self.tokenizer, gen, self.rewards, env_factory=self.env_factory, **sample, **kwargs
            )
        return ro.to("cpu")


@ray.remote
class RewardWorker:
    """The reward set in its own process: scores the samples it is sent (``score_rollout``, the local code path).

    Refuses sandboxed rewards where the code sandbox has no Linux namespaces, as a rollout worker does."""

    def __init__(self, rewards: RewardSet, threads: int):
        torch.set_num_threads(threads)
        self.rewards = rewards
        self.refusal = sandbox_probe(rewards, None, "reward worker")

    def pid(self) -> int:
        return os.getpid()

    def score(self, ro: Rollout) -> Rollout:
        """Fill ``ro``'s rewards, validity, components and errors (the environment's reward included)."""
        if self.refusal:
            raise SandboxUnavailableError(self.refusal)
        return score_rollout(ro, self.rewards).to("cpu")


def shares(n: int, workers: int) -> list[tuple[int, int]]:
    """Contiguous [start, end) slices of n groups over at most ``workers`` workers, sizes differing by at most one."""
    k = min(n, workers)
    bounds = [i * n // k for i in range(k + 1)] if k else [0]
    return list(itertools.pairwise(bounds))


def trainable_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What a worker needs after an update: the parameters that train (all of a full fine-tune; a LoRA adapter's
    matrices only), on CPU."""
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


def ship_plugins_by_value(*objs: Any) -> None:
    """Reward plug-in files (``path/file.py:fn``) are imported under a private module name that the workers cannot
    import: send their code along instead (cloudpickle by value)."""
    for obj in objs:
        module = sys.modules.get(getattr(obj, "__module__", None) or "")
        if module is not None and module.__name__.startswith(PLUGIN_PREFIX):
            ray.cloudpickle.register_pickle_by_value(module)


class RayCollector:
    """A drop-in for ``rollout.collect_step`` (same signature) that runs it in ``run.rollout_workers`` Ray actors
    (and scores in ``run.reward_workers`` reward actors when that is ≥ 1).

    Built once per run with the policy, tokenizer, rewards and environment factory the workers copy; each call
    broadcasts the current trainable weights (or the ones ``pin`` froze) and collects the step's groups across the
    workers."""

    def __init__(self, run: RunConfig, model_cfg: ModelConfig, model, tokenizer, rewards, env_factory):
        if run.rollout_backend == "vllm" and env_factory is not None:
            raise ValueError(
                "run.rollout_backend='vllm' samples prompt rows; environments (env:) need rollout_backend=hf"
            )
        ensure_ray(run)
        check_fits(run, ray.cluster_resources().get("CPU", 0.0))
        ship_plugins_by_value(env_factory, *(rewards.fns.values() if rewards is not None else ()))
        self.run, self.rewards, self.env_factory = run, rewards, env_factory
        self.pad_id = tokenizer.pad_token_id
        self.version, self.restarts = 0, 0
        self.pinned = None  # (weights ref, version) that the next calls sample with, set by ``pin``
        device = "cuda" if run.gpus_per_worker > 0 else "cpu"
        first = next(model.parameters())
        # one copy for every worker, kept referenced here: a restarted worker builds itself from it again
        self.model_ref = ray.put(model if first.device.type == "cpu" else _cpu_copy(model))
        restarts = {"max_restarts": run.max_worker_restarts, "max_task_retries": 0}  # the driver re-sends itself
        options = {"num_cpus": run.cpus_per_worker, "num_gpus": run.gpus_per_worker, **restarts}
        threads = max(1, int(run.cpus_per_worker))
        in_rollout = rewards if run.reward_workers == 0 else None  # reward workers score: rollout workers don't
        self.workers = [
            RolloutWorker.options(**options).remote(
                self.model_ref, tokenizer, in_rollout, env_factory, model_cfg, device, threads, run.rollout_backend
            )
            for _ in range(run.rollout_workers)
        ]
        scorer = RewardWorker.options(num_cpus=run.cpus_per_reward_worker, **restarts)
        threads = max(1, int(run.cpus_per_reward_worker))
        self.scorers = [scorer.remote(rewards, threads) for _ in range(run.reward_workers)]

    def pin(self, model) -> None:
        """Freeze the weights the next calls sample with (``model``'s now), so that the learner may update ``model``
        while those calls run (one-step off-policy); ``unpin`` returns to the current weights."""
        self.version += 1
        self.pinned = (ray.put(trainable_weights(model)), self.version)

    def unpin(self) -> None:
        self.pinned = None

    def __call__(
        self, model, tokenizer, gen: GenerationConfig, rewards: RewardSet | None, *, rows=None, env_factory=None,
        n_groups: int | None = None, group_start: int = 0, generator=None, **kwargs,
    ) -> Rollout:  # fmt: skip
        """``collect_step(model, ...)`` over the workers. ``generator`` is unused: per-row seeds make sampling
        independent of where a row runs; ``kwargs``: samples_per_prompt, seed, max_turns, max_length, row_seeded."""
        if rewards is not self.rewards or env_factory is not self.env_factory:
            raise ValueError("RayCollector: the workers hold the rewards / environments it was built with; got others")
        if not kwargs.get("row_seeded"):
            raise ValueError("run.backend='ray' needs per-row seeded sampling (run.sampling_seeds: row)")
        device = next(model.parameters()).device
        # 1. Broadcast: the trainable weights into the object store once; every worker gets the same reference.
        if self.pinned is None:
            self.version += 1
            weights, version = ray.put(trainable_weights(model)), self.version
        else:
            weights, version = self.pinned
        # 2. Split: contiguous shares of the N groups, each with its global group ids.
        N = n_groups if rows is None else len(rows)
        parts = []
        for start, end in shares(N, len(self.workers)):
            part = {"n_groups": end - start, "group_start": group_start + start, **kwargs}
            if rows is not None:
                part["rows"] = rows[start:end]
            parts.append(part)

        def collect_on(i: int):
            return self.workers[i].collect.remote(weights, version, gen, **parts[i])

        pending = [collect_on(i) for i in range(len(parts))]
        # 3. Gather in group order; a share whose worker died is collected again by the restarted worker.
        out = [self._get(self.workers, i, ref, collect_on, _groups(parts[i])) for i, ref in enumerate(pending)]
        ro = Rollout.concat(out, self.pad_id)
        # 4. Score in the reward workers: contiguous slices of the batch, concatenated back in order.
        if self.scorers:
            ro = self._score(ro)
        return ro.to(device)

    def _score(self, ro: Rollout) -> Rollout:
        bounds = shares(len(ro), len(self.scorers))
        slices = [ro.select(list(range(a, b))) for a, b in bounds]

        def score_on(i: int):
            return self.scorers[i].score.remote(slices[i])

        pending = [score_on(i) for i in range(len(slices))]
        out = [
            self._get(self.scorers, i, ref, score_on, f"samples {bounds[i][0]}..{bounds[i][1] - 1} of the batch")
            for i, ref in enumerate(pending)
        ]
        return Rollout.concat(out, self.pad_id)

    def _get(self, pool: list, i: int, ref, resend, what: str) -> Rollout:
        """``ray.get(ref)``; when worker ``i`` of ``pool`` died, wait for Ray to restart it and ``resend(i)``."""
        kind = "rollout worker" if pool is self.workers else "reward worker"
        for attempt in range(self.run.max_worker_restarts + 1):
            try:
                return ray.get(ref)
            except WORKER_LOST as e:
                if "creation task" in str(e):  # the worker cannot even start (unpicklable reward, import error)
                    raise RuntimeError(f"{kind} {i} could not start: {e}") from e
                if attempt == self.run.max_worker_restarts:
                    raise RuntimeError(
                        f"{kind} {i} died {attempt + 1} times in one step (run.max_worker_restarts="
                        f"{self.run.max_worker_restarts}); {what} were not done"
                    ) from e
                self.restarts += 1
                log.warning("%s %d died (%s); sending its share again to the restarted worker", kind, i, e)
                _wait_restarted(pool[i])
                ref = resend(i)
        raise AssertionError("unreachable")

    def close(self) -> None:
        """End the workers (a run's collector dies with the run; Ray also ends them once no handle is left)."""
        for w in self.workers + self.scorers:
            ray.kill(w, no_restart=True)
        self.workers, self.scorers = [], []


def _groups(part: dict) -> str:
    return f"groups {part['group_start']}..{part['group_start'] + part['n_groups'] - 1}"


def _wait_restarted(worker, timeout_s: float = 120.0) -> None:
    """Block until Ray has restarted ``worker`` (calls made while it restarts fail with ActorUnavailableError)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            ray.get(worker.pid.remote())
            return
        except ActorUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def check_fits(run: RunConfig, have: float) -> None:
    """A local Ray (no ``ray_address``) cannot grow: refuse workers that need more CPUs than it has, instead of
    waiting for them forever (``have``: its CPUs). A cluster may autoscale, so it is not checked there."""
    if run.ray_address:
        return
    need = run.rollout_workers * run.cpus_per_worker + run.reward_workers * run.cpus_per_reward_worker
    need += run.learner_cpus if run.learner == "actor" else 0.0
    if need > have:
        raise ValueError(
            f"run.rollout_workers={run.rollout_workers} × run.cpus_per_worker={run.cpus_per_worker} + "
            f"run.reward_workers={run.reward_workers} × run.cpus_per_reward_worker={run.cpus_per_reward_worker} "
            f"{f'+ run.learner_cpus={run.learner_cpus} ' if run.learner == 'actor' else ''}= {need:g} CPUs, but the "
            f"local Ray has {have:g} (run.num_cpus); lower them or raise run.num_cpus"
        )


def _cpu_copy(model: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(model).to("cpu")
