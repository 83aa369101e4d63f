"""KTO training runs (algorithms/kto.py).

Fast: KTO on a thumbs file (TRL's prompt/completion/label) separates desirable from undesirable completions; a bad
label is an error naming the file, line and field; resume; preset.
Slow: KTO on `reviews` thumbs simulated from the gold reward raises the gold win rate over the SFT model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rewardloop.algorithms.kto import KTOConfig, train
from rewardloop.config import load_config
from rewardloop.data import DataError
from rewardloop.runs import read_metrics

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _thumbs_file(path: Path, n: int = 32) -> Path:
    """Unpaired: even i has the right sum (thumbs-up), odd i a wrong one (thumbs-down) — no prompt has both."""
    rows = [{"prompt": f"{i}+{i}=", "completion": str(2 * i + i % 2), "label": i % 2 == 0} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny(tmp_path: Path, name: str, *overrides: str) -> KTOConfig:
    thumbs = _thumbs_file(tmp_path / "thumbs.jsonl")
    base = [
        "task.name=dataset",
        f"task.path={thumbs}",
        "task.n_test=8",
        "model.max_length=32",
        "batch_size=8",
        "optim.lr=3e-3",
        "beta=0.5",
        "eval_every=6",
        f"run.root={tmp_path}",
        f"run.name={name}",
        "run.progress=false",
    ]
    return load_config(KTOConfig, None, base + list(overrides))


def test_kto_on_thumbs_file_separates_up_from_down(tmp_path):
    out = train(tiny(tmp_path, "kto", "steps=12"))
    rows = read_metrics(out["run_dir"])
    initial, final = out["initial"], out["final"]
    # policy = reference at the start: r = 0 = z_0, so every row's loss is λ − λ σ(0) = ½
    assert initial["eval/loss"] == pytest.approx(0.5, abs=1e-4)
    assert initial["eval/rewards/margin"] == pytest.approx(0.0, abs=1e-4)
    assert initial["desirable"] == 12 and initial["rows"] == 24
    assert final["eval/loss"] < initial["eval/loss"] - 0.05
    assert final["eval/rewards/margin"] > 0.1  # held-out thumbs: desirable rewards above undesirable ones
    train_rows = [r for r in rows if "loss" in r]
    assert {"kl", "rewards/desirable", "rewards/undesirable", "logps/desirable", "grad_norm"} <= set(train_rows[-1])
    assert sum(r["rewards/accuracy"] for r in train_rows[-3:]) / 3 > 0.8
    assert all(r["kl"] >= 0.0 for r in train_rows)  # the reference point is clamped at 0
    assert (out["run_dir"] / "thumbs.jsonl").exists()
    assert not any(k.startswith(("eval/win_rate", "eval/gold")) for r in rows for k in r)


def test_a_non_bool_label_names_file_line_and_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(
        '{"prompt": "1+1=", "completion": "2", "label": true}\n{"prompt": "1+1=", "completion": "3", "label": "no"}\n'
    )
    cfg = load_config(KTOConfig, None, ["task.name=dataset", f"task.path={path}", f"run.root={tmp_path}"])
    with pytest.raises(DataError, match=r"bad\.jsonl line 2: field 'label': expected a bool"):
        train(cfg)


def test_one_class_only_is_an_error(tmp_path):
    path = tmp_path / "up.jsonl"
    path.write_text(
        "".join(json.dumps({"prompt": f"{i}+1=", "completion": str(i + 1), "label": True}) + "\n" for i in range(8))
    )
    cfg = load_config(
        KTOConfig, None, ["task.name=dataset", f"task.path={path}", "task.n_test=2", f"run.root={tmp_path}"]
    )
    with pytest.raises(ValueError, match="6 desirable and 0 undesirable"):
        train(cfg)


def test_resume_reuses_thumbs_and_reference(tmp_path):
    train(tiny(tmp_path, "r", "steps=3", "run.save_every=3"))
    out = train(tiny(tmp_path, "r", "steps=6", "run.save_every=3"), resume=True)
    steps = [r["step"] for r in read_metrics(out["run_dir"]) if "loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_interrupted_run_resumes_bit_identical(tmp_path, monkeypatch):
    """A crash at step 5 (after the step-3 checkpoint) resumes from it: same weights as an uninterrupted run."""
    import torch
    from safetensors.torch import load_file

    import rewardloop.algorithms.kto as kto

    straight = train(tiny(tmp_path, "straight", "steps=8", "run.save_every=3"))
    real, calls = kto.clip_and_step, {"n": 0}

    def crash_on_5th(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(kto, "clip_and_step", crash_on_5th)
        with pytest.raises(KeyboardInterrupt):
            train(tiny(tmp_path, "resumed", "steps=8", "run.save_every=3"))
    resumed = train(tiny(tmp_path, "resumed", "steps=8", "run.save_every=3"), resume=True)
    a, b = (load_file(r["model_dir"] / "model.safetensors") for r in (straight, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    losses = [[(r["step"], r["loss"]) for r in read_metrics(r["run_dir"]) if "loss" in r] for r in (straight, resumed)]
    assert losses[0] == losses[1] and [s for s, _ in losses[1]] == list(range(1, 9))  # each step logged once


def test_preset_validates():
    cfg = load_config(KTOConfig, CONFIGS / "kto" / "reviews.yaml")
    assert cfg.task.name == "reviews" and cfg.thumbs_threshold is None


def test_config_needs_thumbs():
    with pytest.raises(ValueError, match=r"kto learns from thumbs .*prompt/completion/label"):
        KTOConfig(task={"name": "arithmetic"})


# -- slow: reviews, gold win rate ------------------------------------------------------------------------------


@pytest.mark.slow
def test_kto_raises_gold_win_rate_over_sft(tmp_path, sft_reviews):
    cfg = load_config(
        KTOConfig,
        CONFIGS / "kto" / "reviews.yaml",
        [
            f"model.path={sft_reviews}",
            "n_thumbs=512",
            "steps=100",
            "eval_every=100",
            "eval_size=200",
            f"run.root={tmp_path}",
            "run.name=k",
            "run.progress=false",
        ],
    )
    out = train(cfg)
    win = out["final"]["eval/win_rate"]
    print(
        f"KTO reviews: gold win rate over SFT {win:.3f}; gold reward "
        f"{out['initial']['eval/gold_reward']:.3f} -> {out['final']['eval/gold_reward']:.3f}"
    )
    assert out["initial"]["eval/win_rate"] == pytest.approx(0.5)  # same model, same seeds: ties
    assert win > 0.6
    assert out["final"]["eval/gold_reward"] > out["initial"]["eval/gold_reward"]
