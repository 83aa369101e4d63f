"""DPO training runs (algorithms/dpo.py).

Fast: DPO on a preference file raises the implicit-reward accuracy on its pairs; IPO and cDPO run; resume; preset.
Slow: DPO on `reviews` pairs from the simulated annotator raises the gold annotator's win rate over the SFT model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rewardloop.algorithms.dpo import DPOConfig, train
from rewardloop.config import load_config
from rewardloop.runs import read_metrics

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _pairs_file(path: Path, n: int = 24) -> Path:
    rows = [
        {"prompt": f"{i}+{i}=", "chosen": str(2 * i), "rejected": str(2 * i + 1)} for i in range(n)
    ]  # chosen = the right sum
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny(tmp_path: Path, name: str, *overrides: str) -> DPOConfig:
    pairs = _pairs_file(tmp_path / "prefs.jsonl")
    base = [
        "task.name=dataset",
        f"task.path={pairs}",
        "task.n_test=4",
        "model.max_length=32",
        "batch_size=8",
        "optim.lr=3e-3",
        "beta=0.5",
        "eval_every=6",
        f"run.root={tmp_path}",
        f"run.name={name}",
        "run.progress=false",
    ]
    return load_config(DPOConfig, None, base + list(overrides))


def test_dpo_on_preference_file_learns_the_pairs(tmp_path):
    out = train(tiny(tmp_path, "dpo", "steps=12"))
    rows = read_metrics(out["run_dir"])
    initial, final = out["initial"], out["final"]
    # policy = reference at the start: loss ln 2, margin 0
    assert initial["eval/loss"] == pytest.approx(0.6931, abs=1e-3)
    assert initial["eval/rewards/margin"] == pytest.approx(0.0, abs=1e-4)
    assert final["eval/loss"] < initial["eval/loss"]
    train_rows = [r for r in rows if "rewards/accuracy" in r]
    assert {"rewards/chosen", "rewards/rejected", "rewards/margin", "logps/chosen"} <= set(train_rows[0])
    assert sum(r["rewards/accuracy"] for r in train_rows[-3:]) / 3 > 0.8
    assert (out["run_dir"] / "pairs.jsonl").exists()
    # The user's own pairs: no built-in task metrics (reviews win rate / gold reward) are logged.
    assert not any(k.startswith(("eval/win_rate", "eval/gold")) for r in rows for k in r)


def test_old_pairs_key_names_the_new_one(tmp_path):
    from rewardloop.config import ConfigError

    with pytest.raises(ConfigError, match=r"task\.name: dataset with task\.path"):
        load_config(DPOConfig, None, [f"pairs={tmp_path / 'p.jsonl'}"])


@pytest.mark.parametrize("overrides", [("loss=ipo", "beta=0.1"), ("label_smoothing=0.1",)], ids=["ipo", "cdpo"])
def test_variants_reduce_their_loss(tmp_path, overrides):
    out = train(tiny(tmp_path, "v", "steps=6", *overrides))
    assert out["final"]["eval/loss"] < out["initial"]["eval/loss"]


def test_resume_reuses_pairs_and_reference(tmp_path):
    train(tiny(tmp_path, "r", "steps=3", "run.save_every=3"))
    out = train(tiny(tmp_path, "r", "steps=6", "run.save_every=3"), resume=True)
    steps = [r["step"] for r in read_metrics(out["run_dir"]) if "loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_preset_validates():
    cfg = load_config(DPOConfig, CONFIGS / "dpo" / "reviews.yaml")
    assert cfg.task.name == "reviews" and cfg.pairs_source == "policy"


# -- slow: reviews, gold win rate ------------------------------------------------------------------------------


@pytest.mark.slow
def test_dpo_raises_gold_win_rate_over_sft(tmp_path, sft_reviews):
    cfg = load_config(
        DPOConfig,
        CONFIGS / "dpo" / "reviews.yaml",
        [
            f"model.path={sft_reviews}",
            "n_pairs=512",
            "steps=100",
            "eval_every=100",
            "eval_size=200",
            f"run.root={tmp_path}",
            "run.name=d",
            "run.progress=false",
        ],
    )
    out = train(cfg)
    win = out["final"]["eval/win_rate"]
    print(
        f"DPO reviews: gold win rate over SFT {win:.3f}; gold reward "
        f"{out['initial']['eval/gold_reward']:.3f} -> {out['final']['eval/gold_reward']:.3f}"
    )
    assert out["initial"]["eval/win_rate"] == pytest.approx(0.5)  # same model, same seeds: ties
    assert win > 0.6
