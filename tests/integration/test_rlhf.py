"""Reward-model training and the `rlhf` pipeline (SFT → pairs → reward model → PPO → gold-annotator evaluation)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rewardloop.algorithms.reward_model import (
    PreferenceDataConfig,
    RewardModelConfig,
    load_preference_splits,
    pairwise_accuracy,
)
from rewardloop.algorithms.reward_model import train as rm_train
from rewardloop.algorithms.rlhf import RLHFConfig, run
from rewardloop.config import OptimConfig, RunConfig, load_config
from rewardloop.rewards.model import RewardModelScorer


def tiny_rlhf(tmp_path, name: str) -> RLHFConfig:
    return load_config(
        RLHFConfig,
        "configs/rlhf/reviews.yaml",
        [
            f"run.root={tmp_path}", f"run.name={name}", "run.progress=false", "model.device=cpu",
            "task.n_train=64", "task.n_test=8", "sft.steps=3", "sft.eval_size=4", "sft.batch_size=8",
            "pairs.n_policy=8", "pairs.n_templates=8", "pairs.test_size=8", "pairs.gen.max_new_tokens=8",
            "reward.steps=3", "reward.batch_size=4", "ppo.steps=2", "ppo.batch_size=4", "ppo.mini_batch_size=4",
            "ppo.micro_batch_size=2", "ppo.gen.max_new_tokens=8", "ppo.eval_gen.max_new_tokens=8", "ppo.eval_size=4",
            "eval_size=6", "eval_gen.max_new_tokens=8",
        ],
    )  # fmt: skip


def test_rlhf_pipeline_stages_and_resume_skips_finished(tmp_path):
    cfg = tiny_rlhf(tmp_path, "rl")
    res = run(cfg)
    d = res["run_dir"]
    for stage in ("sft", "pairs", "reward", "ppo", "eval"):
        assert (d / stage / "done.json").exists(), stage
    # The critic and the reward model are Hugging Face sequence-classification checkpoints (one label).
    from transformers import AutoModelForSequenceClassification

    for model_dir in (d / "ppo" / "final" / "value", res["reward"]["model_dir"]):
        assert AutoModelForSequenceClassification.from_pretrained(model_dir).config.num_labels == 1
    # The comparison is computed on the texts it reports (eval_size 6 ≤ the 8 examples kept): recompute it.
    from rewardloop.envs.reviews import SimulatedAnnotator, gold_win_rate
    from rewardloop.rewards.model import RewardModelScorer

    ex = res["eval"]["examples"]
    assert len(ex) == cfg.eval_size
    prompts, ppo_texts, sft_texts = [e["prompt"] for e in ex], [e["ppo"] for e in ex], [e["sft"] for e in ex]
    expected = gold_win_rate(SimulatedAnnotator(noise=0.0), prompts, ppo_texts, sft_texts)
    assert res["eval"]["gold_win_rate"] == pytest.approx(expected)
    rm = RewardModelScorer(res["reward"]["model_dir"], "cpu")
    assert res["eval"]["rm_score/ppo"] == pytest.approx(sum(rm(prompts, ppo_texts)) / len(ex), abs=1e-5)
    assert math.isfinite(res["eval"]["kl_to_sft"])
    pairs = [json.loads(x) for x in (d / "pairs" / "train.jsonl").read_text().splitlines()]
    assert len(pairs) == 16 and all({"prompt", "chosen", "rejected"} <= set(p) for p in pairs)
    # Resume: every stage is finished, so nothing reruns and the results are read back.
    stamps = {s: (d / s / "done.json").stat().st_mtime_ns for s in ("sft", "reward", "ppo")}
    again = run(cfg, resume=True)
    assert {s: (d / s / "done.json").stat().st_mtime_ns for s in stamps} == stamps
    assert again["eval"]["gold_win_rate"] == res["eval"]["gold_win_rate"]


@pytest.mark.slow
def test_reward_model_accuracy_and_ensemble_uncertainty_ood(tmp_path):
    cfg = RewardModelConfig(
        data=PreferenceDataConfig(reviews_pairs=2000, test_size=300),
        optim=OptimConfig(lr=3e-3, warmup_steps=20, schedule="cosine"),
        steps=150,
        ensemble=3,
        run=RunConfig(root=str(tmp_path), name="rm", progress=False),
    )
    res = rm_train(cfg)
    accs = res["member_accuracy"]
    ens = RewardModelScorer(res["model_dir"], device="cpu")
    _, test_pairs = load_preference_splits(cfg)
    prompts = [r["prompt"] for r in test_pairs]
    chosen = torch.tensor(ens(prompts, [r["chosen"] for r in test_pairs]))
    rejected = torch.tensor(ens(prompts, [r["rejected"] for r in test_pairs]))
    ens_acc = pairwise_accuracy(chosen, rejected)
    print(f"held-out pairwise accuracy: members {accs}, ensemble mean {ens_acc:.3f}")
    # Members move by a few points with the seed (0.847–0.890 measured); the ensemble is the steadier claim.
    assert ens_acc > 0.9 and min(accs) > 0.83
    from rewardloop.envs.reviews import make_reviews_splits

    _, test = make_reviews_splits(seed=5, n_train=0, n_test=100)
    ens([e.prompt for e in test], [e.answer for e in test])
    in_dist = ens.last_stats["std"]
    ood_text = [" 12345 + 67890 = 80235 ; def f(x): return x", " zzz qqq ### $$$ !!!", " 999999999999"] * 34
    ens(["1+2="] * len(ood_text), ood_text)
    ood = ens.last_stats["std"]
    print(f"ensemble std in-distribution {in_dist.mean():.3f}, out-of-distribution {ood.mean():.3f}")
    assert ood.mean() > in_dist.mean()
    assert torch.isfinite(ood).all()


@pytest.mark.slow
def test_rlhf_reviews_beats_sft_with_bounded_kl(tmp_path):
    overrides = ["sft.steps=400", "pairs.n_policy=600", "pairs.n_templates=1000", "reward.steps=250"]
    cfg = load_config(RLHFConfig, "configs/rlhf/reviews.yaml", [f"run.root={tmp_path}", "run.name=rl",
                                                                "run.progress=false", *overrides])  # fmt: skip
    res = run(cfg)
    ev = res["eval"]
    print({k: v for k, v in ev.items() if k != "examples"}, "rm accuracy", res["reward"]["accuracy"])
    assert res["reward"]["accuracy"] > 0.75  # policy-sample pairs are harder than template pairs (measured 0.82)
    assert ev["gold_win_rate"] > 0.6
    assert ev["rm_score/ppo"] > ev["rm_score/sft"]
    assert ev["kl_to_sft"] < 20.0  # nats per response
