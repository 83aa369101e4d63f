"""The experience contract (types.Rollout): concat / select keep every field, .to moves every tensor, and a batch
saved in one process is trained on in another."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import fields

import pytest
import torch

from rewardloop.types import Rollout


def make(B: int, R: int, first_group: int = 0, tag: str = "a") -> Rollout:
    g = torch.Generator().manual_seed(B * 10 + R)
    return Rollout(
        prompt_ids=torch.randint(1, 50, (B, 2), generator=g),
        prompt_mask=torch.ones(B, 2, dtype=torch.long),
        response_ids=torch.randint(1, 50, (B, R), generator=g),
        response_mask=torch.ones(B, R, dtype=torch.long),
        logprobs=-torch.rand(B, R, generator=g),
        finished=torch.ones(B, dtype=torch.bool),
        prompts=[f"{tag}p{i}" for i in range(B)],
        responses=[f"{tag}r{i}" for i in range(B)],
        group_ids=first_group + torch.arange(B) // 2,
        rewards=torch.rand(B, generator=g),
        valid=torch.tensor([i != 1 for i in range(B)]),
        components={"task": torch.rand(B, generator=g)},
        reward_errors=[{"reward": "task", "index": 1, "error": "boom"}],
        rows=[{"prompt": f"{tag}p{i}", "answer": str(i)} for i in range(B)],
        action_mask=torch.ones(B, R, dtype=torch.long),
        token_rewards=torch.zeros(B, R),
        turns=[[f"{tag}r{i}"] for i in range(B)],
        infos=[[{"turn": 0}] for _ in range(B)],
    )


def test_concat_keeps_every_field_and_repads():
    a, b = make(4, 3), make(2, 5, first_group=2, tag="b")
    out = Rollout.concat([a, b], pad_id=0)
    assert len(out) == 6 and out.response_ids.shape == (6, 5)
    for f in fields(Rollout):
        assert getattr(out, f.name) is not None, f.name  # nothing dropped
    assert out.response_mask[:4, 3:].sum() == 0 and out.response_ids[:4, :3].equal(a.response_ids)
    assert out.group_ids.tolist() == [0, 0, 1, 1, 2, 2]
    assert out.rewards.tolist() == a.rewards.tolist() + b.rewards.tolist()
    assert out.components["task"].shape == (6,) and out.rows[4]["prompt"] == "bp0"
    assert [e["index"] for e in out.reward_errors] == [1, 5]  # re-indexed into the joined batch
    assert out.turns[5] == ["br1"] and out.valid.tolist() == [True, False, True, True, True, False]


def test_concat_refuses_parts_that_disagree_on_optional_fields():
    a, b = make(2, 3), make(2, 3)
    b.token_rewards = None
    with pytest.raises(ValueError, match="token_rewards"):
        Rollout.concat([a, b], pad_id=0)


def test_select_keeps_rows_and_reindexes_errors():
    ro = make(4, 3)
    out = ro.select([3, 1])
    assert out.prompts == ["ap3", "ap1"] and out.group_ids.tolist() == [1, 0]
    assert out.components["task"].tolist() == [ro.components["task"][3].item(), ro.components["task"][1].item()]
    assert out.reward_errors == [{"reward": "task", "index": 1, "error": "boom"}]
    assert ro.select([0, 2]).reward_errors == []


def test_to_moves_every_tensor():
    out = make(2, 3).to("meta")
    for f in fields(Rollout):
        value = getattr(out, f.name)
        if isinstance(value, torch.Tensor):
            assert value.device.type == "meta", f.name
    assert all(v.device.type == "meta" for v in out.components.values())


PRODUCER = textwrap.dedent(
    """
    import sys, torch
    from rewardloop.config import GenerationConfig, ModelConfig
    from rewardloop.models import load_pretrained
    from rewardloop.rewards import RewardSet
    from rewardloop.rollout.collect import collect

    torch.manual_seed(0)
    model, tok = load_pretrained(ModelConfig(preset="llama-1m", device="cpu", max_length=32))
    rewards = RewardSet({"len": lambda completions, **_: [float(len(c) % 3) for c in completions]}, {"len": 1.0})
    rows = [{"prompt": f"{a}+{a}=", "answer": str(2 * a)} for a in range(4)]
    ro = collect(model, tok, rows, GenerationConfig(max_new_tokens=5), rewards, samples_per_prompt=4,
                 generator=torch.Generator().manual_seed(1))
    ro.save(sys.argv[1])
    print(ro.rewards.tolist())
    """
)


def test_a_rollout_saved_in_one_process_trains_in_another(tmp_path):
    from rewardloop.algorithms.common import make_optimizer
    from rewardloop.algorithms.grpo import GRPOConfig, estimate, update
    from rewardloop.config import ModelConfig
    from rewardloop.models import load_pretrained

    path = tmp_path / "batch.pt"
    out = subprocess.run([sys.executable, "-c", PRODUCER, str(path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    ro = Rollout.load(path)
    assert ro.rewards.tolist() == pytest.approx(eval(out.stdout.strip().splitlines()[-1]))
    assert ro.group_ids.tolist() == [g for g in range(4) for _ in range(4)] and ro.rows[5]["answer"] == "2"
    assert ro.components["len"].tolist() == pytest.approx(ro.rewards.tolist())

    torch.manual_seed(0)
    model, _ = load_pretrained(ModelConfig(preset="llama-1m", device="cpu", max_length=32))
    cfg = GRPOConfig(gen={"max_new_tokens": 5}, group_size=4, prompts_per_step=4, reuse_sampler_logprobs=False)
    batch = estimate(model, None, ro, cfg)
    # The consumer's model has the producer's weights (same seed): the saved log-probs are its own.
    assert torch.allclose(batch.old_logp * batch.mask, ro.logprobs * batch.mask, atol=1e-4)
    before = [p.detach().clone() for p in model.parameters()]
    opt, sched = make_optimizer(model.parameters(), cfg.optim, 1)
    stats = update(model, opt, sched, ro, batch, cfg)
    assert stats["grad_norm"] > 0
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))


def test_load_rejects_other_files(tmp_path):
    torch.save({"x": torch.ones(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a Rollout"):
        Rollout.load(tmp_path / "other.pt")
