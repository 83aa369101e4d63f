"""The learner hook (``run.learner``): fast checks without Ray; the Ray learner-actor run is in test_ray_train.py."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

import rewardloop.algorithms.grpo as grpo
from rewardloop.algorithms.common import make_learner
from rewardloop.algorithms.ppo import PPOConfig
from rewardloop.config import RunConfig
from rewardloop.distributed.learner import batch_to
from rewardloop.types import PGBatch


def test_the_driver_learner_is_the_algorithms_own_function():
    assert make_learner(grpo.GRPOConfig(), grpo.learn, None, None, None, None) is grpo.learn


def test_a_learner_actor_needs_ray_and_the_grpo_family():
    with pytest.raises(ValidationError, match=r"run.learner='actor' needs run.backend='ray'"):
        RunConfig(learner="actor")
    with pytest.raises(ValidationError, match=r"run.learner='actor' is built for the GRPO family"):
        PPOConfig(run=RunConfig(backend="ray", learner="actor"))


def test_an_estimate_crosses_devices_whole():
    est = PGBatch(torch.zeros(2, 3), None, torch.ones(2, 3), torch.randn(2, 3), torch.zeros(2, 3))
    moved = batch_to(est, "meta")
    assert moved.ref_logp is None and all(t.device.type == "meta" for t in (moved.old_logp, moved.adv, moved.kl))
