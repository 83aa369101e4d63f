"""``run.learner: actor`` — estimate + update in a Ray learner actor holding the policy, reference and optimizer.

The driver keeps orchestrating (collect, evaluation, metrics, checkpoints through ``RunDir``) and a copy of the
policy for them; each step it sends the batch to the actor, which runs the algorithm's own ``learn`` function
(``grpo.learn``: the same ``estimate`` + ``update``, no copy) and returns the estimate, the update's statistics, the
trainable weights and the optimizer / scheduler state, which the driver copies into its policy, optimizer and
scheduler — so evaluation, the rollout workers' broadcast, checkpoints and ``--resume`` see what they see in a
driver-learner run. The actor trains on CUDA when ``run.learner_gpus`` > 0.

Cost: the optimizer state (AdamW: two tensors per trainable parameter) comes back every step; with LoRA that is the
adapter's, small. A learner actor that dies stops the run (``--resume`` continues from the last checkpoint).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from dataclasses import fields, replace
from typing import Any

import ray
import torch

from rewardloop.distributed.collector import ensure_ray, trainable_weights
from rewardloop.types import PGBatch, Rollout


def batch_to(est: PGBatch, device) -> PGBatch:
    """``est`` with every tensor on ``device``."""
    moved = {f.name: getattr(est, f.name) for f in fields(est)}
    return replace(est, **{k: v.to(device) for k, v in moved.items() if isinstance(v, torch.Tensor)})


@ray.remote
class LearnerActor:
    """The policy, reference and optimizer in their own process; ``learn`` runs the algorithm's step 2–3 function."""

    def __init__(self, learn: Callable, cfg, model, ref_model, optimizer: dict[str, Any], device: str, threads: int):
        torch.set_num_threads(threads)
        torch.manual_seed(cfg.run.seed)
        self.fn, self.cfg, self.device = learn, cfg, torch.device(device)
        self.model = model.to(self.device)
        self.ref = ref_model.to(self.device) if ref_model is not None else None
        # the driver's optimizer and schedule, rebuilt over this copy's parameters (same order), then its state
        params = [p for p in self.model.parameters() if p.requires_grad]
        accepted = inspect.signature(optimizer["cls"]).parameters  # defaults may hold keys __init__ does not take
        self.opt = optimizer["cls"](params, **{k: v for k, v in optimizer["defaults"].items() if k in accepted})
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, optimizer["lr_lambdas"])
        self.opt.load_state_dict(optimizer["state"])
        self.sched.load_state_dict(optimizer["sched_state"])

    def learn(self, ro: Rollout, rng: torch.Tensor) -> tuple[PGBatch, dict[str, float], dict, dict, dict, torch.Tensor]:
        """``learn`` on ``ro`` with the driver's torch RNG state ``rng`` (minibatch order); returns the estimate, the
        statistics, the trainable weights, optimizer and scheduler state, and the RNG state after."""
        torch.set_rng_state(rng)
        est, stats = self.fn(self.model, self.ref, self.opt, self.sched, ro.to(self.device), self.cfg)
        state = _to_cpu(self.opt.state_dict())
        weights = trainable_weights(self.model)
        return batch_to(est, "cpu"), stats, weights, state, self.sched.state_dict(), torch.get_rng_state()


class ActorLearner:
    """A drop-in for the algorithm's ``learn(model, ref_model, opt, sched, ro, cfg)`` that runs it in a
    ``LearnerActor`` and copies the result (weights, optimizer and scheduler state) back into the driver's objects."""

    def __init__(self, cfg, learn: Callable, model, ref_model, opt, sched):
        run = cfg.run
        ensure_ray(run)
        device = "cuda" if run.learner_gpus > 0 else "cpu"
        optimizer = {
            "cls": type(opt), "defaults": opt.defaults, "state": _to_cpu(opt.state_dict()),
            "lr_lambdas": sched.lr_lambdas, "sched_state": sched.state_dict(),
        }  # fmt: skip
        options = {"num_cpus": run.learner_cpus, "num_gpus": run.learner_gpus, "max_restarts": 0}
        threads = max(1, int(run.learner_cpus))
        self.actor = LearnerActor.options(**options).remote(
            learn, cfg, _on_cpu(model), _on_cpu(ref_model), optimizer, device, threads
        )

    def __call__(self, model, ref_model, opt, sched, ro: Rollout, cfg) -> tuple[PGBatch, dict[str, float]]:
        device = next(model.parameters()).device
        # the driver's RNG goes along and comes back: minibatch shuffles draw what they draw in a driver-learner run
        ref = self.actor.learn.remote(ro.to("cpu"), torch.get_rng_state())
        est, stats, weights, opt_state, sched_state, rng = ray.get(ref)
        torch.set_rng_state(rng)
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in weights.items():
                params[name].copy_(value)
        opt.load_state_dict(opt_state)  # moves the state to the parameters' device
        sched.load_state_dict(sched_state)
        return batch_to(est, device), stats

    def close(self) -> None:
        ray.kill(self.actor, no_restart=True)


def _on_cpu(model):
    return model if model is None or next(model.parameters()).device.type == "cpu" else copy.deepcopy(model).cpu()


def _to_cpu(state: Any) -> Any:
    if isinstance(state, torch.Tensor):
        return state.cpu()
    if isinstance(state, dict):
        return {k: _to_cpu(v) for k, v in state.items()}
    if isinstance(state, list):
        return [_to_cpu(v) for v in state]
    return state
