"""Ray rollout workers (distributed/collector.py): the same collect as one process, faults, the sandbox rule.

Equivalence (issue 13 item 2): with per-row seeded sampling, the step's groups split over two workers give the
responses, log-probs and rewards that one local ``collect_step`` gives. Faults (item 3): a worker killed between
steps or in the middle of one is restarted and its share collected again — same groups, none lost or doubled.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest
import torch

from rewardloop.config import GenerationConfig, ModelConfig, RunConfig
from rewardloop.distributed.collector import (
    RayCollector,
    RewardWorker,
    SandboxUnavailableError,
    check_fits,
    needs_sandbox,
    sandbox_refusal,
    shares,
    trainable_weights,
)
from rewardloop.rewards.code_tests import code_tests_reward
from rewardloop.rewards.composite import RewardSet, bind
from rewardloop.rewards.sandbox import BACKEND_ENV
from rewardloop.rollout.collect import collect_step

pytestmark = pytest.mark.ray
ray = pytest.importorskip("ray")
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
GEN = GenerationConfig(max_new_tokens=6, temperature=1.0)
ROWS = [{"prompt": f"{a}+{b}=", "answer": str(a + b)} for a, b in [(1, 2), (3, 4), (5, 6), (7, 1), (2, 2)]]


def length_reward(prompts, completions, **_):
    return [float(len(c)) for c in completions]


def rewards() -> RewardSet:
    return RewardSet({"len": length_reward}, {"len": 1.0})


def run_cfg(**kw) -> RunConfig:
    return RunConfig(backend="ray", **{"rollout_workers": 2, **kw})


def local(model, tokenizer, rs, group_start=0):
    return collect_step(
        model, tokenizer, GEN, rs, rows=ROWS, samples_per_prompt=3, group_start=group_start, seed=7, row_seeded=True
    )


def remote(collect, model, tokenizer, rs, group_start=0):
    return collect(
        model, tokenizer, GEN, rs, rows=ROWS, samples_per_prompt=3, group_start=group_start, seed=7, row_seeded=True
    )


def assert_same(a, b):
    assert a.responses == b.responses
    assert a.group_ids.tolist() == b.group_ids.tolist()
    assert a.rows == b.rows
    torch.testing.assert_close(a.rewards, b.rewards)
    n = a.response_ids.shape[1]
    assert torch.equal(a.response_ids, b.response_ids[:, :n]) and torch.equal(a.response_mask, b.response_mask[:, :n])
    torch.testing.assert_close(a.logprobs, b.logprobs[:, :n], atol=1e-5, rtol=1e-5)


def test_shares_cover_every_group_once():
    assert shares(5, 2) == [(0, 2), (2, 5)]
    assert shares(1, 3) == [(0, 1)]
    assert shares(7, 3) == [(0, 2), (2, 4), (4, 7)]


def test_sandboxed_rewards_are_refused_without_namespaces():
    rs = RewardSet({"code": bind(code_tests_reward, {"timeout": 1.0}), "len": length_reward}, {"code": 1, "len": 1})
    assert needs_sandbox(rs.fns["code"]) and not needs_sandbox(length_reward)
    why = sandbox_refusal(rs, None, "rlimits-only")
    assert why and "code" in why and "rlimits-only" in why and "len" not in why.split("reward(s)")[1].split("run")[0]
    assert sandbox_refusal(rs, None, "unshare") is None
    assert sandbox_refusal(rewards(), None, "rlimits-only") is None
    assert issubclass(SandboxUnavailableError, RuntimeError)


def test_lora_broadcast_sends_only_the_adapter(tiny_model):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_model(), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    sent = trainable_weights(model)
    assert sent and all("lora_" in name for name in sent)
    assert sum(t.numel() for t in sent.values()) < sum(p.numel() for p in model.parameters()) / 10


@pytest.mark.slow
def test_two_workers_collect_what_one_process_collects(local_ray, tiny_model, tokenizer):
    model, rs = tiny_model(), rewards()
    collect = RayCollector(run_cfg(), ModelConfig(), model, tokenizer, rs, None)
    try:
        ro = remote(collect, model, tokenizer, rs, group_start=10)
        assert_same(local(model, tokenizer, rs, group_start=10), ro)
        assert ro.group_ids.tolist() == [g for g in range(10, 15) for _ in range(3)]
        # after an update the workers sample with the new weights (the broadcast), still equal to local
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        assert_same(local(model, tokenizer, rs), remote(collect, model, tokenizer, rs))
    finally:
        collect.close()


@pytest.mark.slow
def test_a_killed_worker_is_restarted_and_its_share_collected_again(local_ray, tiny_model, tokenizer, tmp_path):
    model = tiny_model()
    marker = tmp_path / "died"

    def dies_once(prompts, completions, **_):  # kills its worker process, mid-collect, the first time it runs
        if not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return length_reward(prompts, completions)

    rs = RewardSet({"len": dies_once}, {"len": 1.0})
    collect = RayCollector(run_cfg(), ModelConfig(), model, tokenizer, rs, None)
    try:
        ro = remote(collect, model, tokenizer, rs)  # one worker dies in the middle of this step
        assert marker.exists() and collect.restarts == 1
        assert_same(local(model, tokenizer, rewards()), ro)  # no group lost, none twice
        # killed between steps (SIGKILL of the actor's process): the next step is still complete
        pid = local_ray.get(collect.workers[1].pid.remote())
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        ro2 = remote(collect, model, tokenizer, rs, group_start=5)
        assert collect.restarts == 2 and local_ray.get(collect.workers[1].pid.remote()) != pid
        assert_same(local(model, tokenizer, rewards(), group_start=5), ro2)
    finally:
        collect.close()


def test_workers_that_do_not_fit_a_local_ray_are_refused():
    with pytest.raises(ValueError, match=r"reward_workers=2 .* = 4 CPUs, but the local Ray has 2"):
        check_fits(run_cfg(reward_workers=2), 2.0)
    check_fits(run_cfg(reward_workers=2, cpus_per_worker=0.5, cpus_per_reward_worker=0.5), 2.0)
    check_fits(run_cfg(reward_workers=2, ray_address="auto"), 2.0)  # a cluster may autoscale


def sometimes_fails(prompts, completions, **_):  # a reward error on some samples: invalid rows, indexed errors
    return [None if len(c) % 3 == 0 else float(len(c)) for c in completions]


@pytest.mark.slow
def test_reward_workers_score_what_one_process_scores(local_ray, tiny_model, tokenizer):
    model = tiny_model()
    rs = RewardSet({"len": length_reward, "odd": sometimes_fails}, {"len": 1.0, "odd": 0.5}, on_error="skip")
    cfg = run_cfg(rollout_workers=1, reward_workers=2, cpus_per_worker=0.5, cpus_per_reward_worker=0.5)
    collect = RayCollector(cfg, ModelConfig(), model, tokenizer, rs, None)
    try:
        want, got = local(model, tokenizer, rs), remote(collect, model, tokenizer, rs)
        assert_same(want, got)
        assert got.valid.tolist() == want.valid.tolist() and not all(got.valid.tolist())  # some samples failed
        assert got.reward_errors == want.reward_errors
        for name in ("len", "odd"):
            torch.testing.assert_close(got.components[name], want.components[name], equal_nan=True)
    finally:
        collect.close()


@pytest.mark.slow
def test_a_reward_worker_without_namespaces_refuses_sandboxed_rewards(local_ray, tiny_model, tokenizer):
    """The refusal through a real reward actor: its process's sandbox probe is forced to rlimits-only (the backend a
    machine without user namespaces gets), as a cluster node without them would report."""
    rs = RewardSet({"code": bind(code_tests_reward, {"timeout": 1.0}), "len": length_reward}, {"code": 1, "len": 1})
    no_namespaces = {"env_vars": {BACKEND_ENV: "rlimits-only"}}
    worker = RewardWorker.options(num_cpus=0.1, runtime_env=no_namespaces).remote(rs, 1)
    try:
        ro = local(tiny_model(), tokenizer, None)  # unscored samples, as rollout workers send them
        with pytest.raises(SandboxUnavailableError, match=r"reward worker on .*code.*'rlimits-only'"):
            ray.get(worker.score.remote(ro))
    finally:
        ray.kill(worker, no_restart=True)
