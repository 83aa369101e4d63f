"""One-step off-policy (``run.off_policy_steps: 1``, issue 13 item 1): batch k+1 is sampled with the weights update k
starts from, while update k runs; the importance ratio's denominator is the sampler's log-prob.

Fast tier: no Ray. The Ray run (overlap in the workers, equal to the local off-policy run, learns) is in
test_ray_train.py.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace

import torch

import rewardloop.algorithms.grpo as grpo
import rewardloop.algorithms.ppo as ppo
from rewardloop.algorithms.common import Experience
from rewardloop.algorithms.ppo import PPOConfig
from rewardloop.config import GenerationConfig, RunConfig
from rewardloop.models.value_head import value_model_from_policy
from rewardloop.rewards.composite import RewardSet
from rewardloop.rollout import batched_logprobs
from rewardloop.rollout.collect import collect_step

GEN = GenerationConfig(max_new_tokens=5, temperature=1.0)


def length_reward(prompts, completions, **_):
    return [float(len(c)) for c in completions]


def test_the_ratio_denominator_is_the_samplers_logprob_off_policy(tiny_model, tokenizer):
    model = tiny_model()
    rows = [{"prompt": f"{a}+{a}="} for a in range(3)]
    rs = RewardSet({"len": length_reward}, {"len": 1.0})
    ro = collect_step(model, tokenizer, GEN, rs, rows=rows, samples_per_prompt=2, seed=1, row_seeded=True)
    ro.logprobs = ro.logprobs - 0.25 * ro.response_mask  # the sampler's weights were one update older than θ_now
    T = ro.response_ids.shape[1]
    recomputed = batched_logprobs(model, ro.input_ids, ro.attention_mask, T, GEN.temperature)

    def old_logp(off_policy_steps: int) -> torch.Tensor:
        cfg = grpo.GRPOConfig(
            gen=GEN, reuse_sampler_logprobs=False, run=RunConfig(off_policy_steps=off_policy_steps), group_size=2
        )
        est = grpo.estimate(model, None, ro, cfg)
        return est.old_logp * est.mask

    mask = ro.policy_mask.float()
    torch.testing.assert_close(old_logp(1), ro.logprobs * mask)  # π_old = the sampler's, not a recomputation
    torch.testing.assert_close(old_logp(0), recomputed * mask)  # on-policy with reuse off: recomputed under θ_now
    assert not torch.allclose(old_logp(1), old_logp(0))


class PinningCollector:
    """Stands in for RayCollector: records the weights version each pin snapshots."""

    def __init__(self, model):
        self.model, self.pins, self.pinned = model, [], False

    def pin(self, model) -> None:
        self.pins.append(model.version)
        self.pinned = True

    def unpin(self) -> None:
        self.pinned = False

    def __call__(self, *args, **kwargs):
        raise AssertionError("Experience calls fetch, not the collector")


def test_off_policy_fetches_batch_k_plus_1_during_update_k_each_batch_once():
    model = SimpleNamespace(version=0)  # the learner's weights version: +1 per update
    collect = PinningCollector(model)
    updated = [threading.Event() for _ in range(4)]
    fetched: list[int] = []

    def fetch() -> tuple[int, int]:
        k = len(fetched)
        fetched.append(k)
        if k > 0:  # batch k finishes only after update k-1 finished: they must run at the same time
            assert updated[k - 1].wait(10), f"batch {k} was waited for before update {k - 1} ran: no overlap"
            assert collect.pinned
        return k, collect.pins[-1] if k > 0 else model.version

    experience = Experience(fetch, collect, model, off_policy_steps=1)
    got = []
    for step in range(4):
        got.append(experience.next(more=step + 1 < 4))
        model.version += 1  # update k
        updated[step].set()
    experience.close()
    assert fetched == [0, 1, 2, 3]  # every batch once, in order, none fetched past the last step
    assert got == [(0, 0), (1, 0), (2, 1), (3, 2)]  # batch k+1 sampled with θ_k's predecessor: one update stale
    assert collect.pins == [0, 1, 2] and not collect.pinned


def test_off_policy_without_a_pinning_collector_fetches_ahead_in_order():
    fetched: list[int] = []
    experience = Experience(lambda: fetched.append(len(fetched)) or fetched[-1], collect_step, None, 1)
    got = []
    for step in range(3):
        got.append(experience.next(more=step + 1 < 3))
        assert len(fetched) == min(step + 2, 3)  # batch k+1 is drawn before update k
    assert got == [0, 1, 2] and fetched == [0, 1, 2]
    on_policy = Experience(lambda: fetched.append(len(fetched)) or fetched[-1], collect_step, None, 0)
    assert [on_policy.next(more=True) for _ in range(2)] == [3, 4] and len(fetched) == 5


def test_ppo_off_policy_takes_pi_old_from_the_sampler(tiny_model, tokenizer):
    policy, ref = tiny_model(), tiny_model(seed=1)
    critic = value_model_from_policy(policy, shared=True)
    rs = RewardSet({"len": length_reward}, {"len": 1.0})
    ro = collect_step(
        policy, tokenizer, GEN, rs, rows=[{"prompt": "1+2="}, {"prompt": "3+3="}], seed=2, row_seeded=True
    )
    ro.logprobs = ro.logprobs - 0.25 * ro.response_mask  # sampled one update ago

    def old_logp(off_policy_steps: int) -> torch.Tensor:
        cfg = PPOConfig(gen=GEN, run=RunConfig(off_policy_steps=off_policy_steps), batch_size=2, mini_batch_size=2)
        b = ppo.estimate(policy, critic, ref, ro, cfg, 0.05, ppo.RunningMoments())
        return b.old_logp * b.mask

    mask = ro.policy_mask.float()
    torch.testing.assert_close(old_logp(1), ro.logprobs * mask)  # the sampler's
    torch.testing.assert_close(old_logp(0), (ro.logprobs + 0.25 * ro.response_mask) * mask, atol=1e-4, rtol=1e-4)
