"""The benchmark harness never rots: its smallest mode runs one step of every section and yields well-formed JSON.

No time or ratio is asserted (machines are noisy); only that every measurement exists and is a positive finite number.
TRL sides run only when their virtual environments exist (benchmarks/setup_trl_envs.sh).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # benchmarks/ is a top-level package beside src/, not installed
    sys.path.insert(0, str(ROOT))

from benchmarks.report import targets, write_docs  # noqa: E402
from benchmarks.run_all import GRPO_SIDES, SIDES, VENVS, main  # noqa: E402


def positive(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def check_side(side: dict, per_step_key: str = "step_seconds") -> None:
    assert "error" not in side, side.get("error")
    assert side[per_step_key] and all(positive(s) for s in side[per_step_key])
    assert positive(side["seconds_per_step"]) and positive(side["items_per_s"]) and positive(side["peak_rss_mb"])


def trl_ready(name: str) -> bool:
    return (VENVS[name].parent.parent / ".installed").exists()


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench")
    return main(["--smoke", "--no-docs", "--quiet", "--threads", "1", "--out", str(out)])


@pytest.mark.slow
def test_generation_and_roofline(smoke):
    rows = smoke["a"]["rows"]
    sides = ("ours", "hf_generate", "ours_bf16", "hf_generate_bf16")
    assert rows and all(positive(r[side]["tokens_per_s"]) for r in rows for side in sides)
    roof = smoke["d"]["roofline"]
    assert positive(roof["fp32"]["peak_gflops"]) and positive(roof["bf16"]["peak_gflops"])
    mfu = smoke["d"]["mfu"]
    assert any(k.startswith("grpo") for k in mfu) and any(k.startswith("ppo") for k in mfu)
    assert all(positive(v["gflops"]) for phases in mfu.values() for v in phases.values())


@pytest.mark.slow
def test_grpo_and_ppo_sides(smoke):
    # every side: rewardloop and TRL, each with default settings, the other's checkpointing setting and bf16
    for preset, b in smoke["b"].items():
        if preset.startswith("_"):
            continue
        assert set(GRPO_SIDES) <= set(b)
        for side, (venv, _) in GRPO_SIDES.items():
            if venv == "main" or trl_ready("trl"):
                check_side(b[side])
            else:
                assert "skipped" in b[side]
        assert set(b["ours"]["phases"]) >= {"collect", "estimate", "update"}
    c = smoke["c"]
    for side, (venv, _) in SIDES.items():
        if venv == "main":
            check_side(c[side])
        elif trl_ready("trl112"):
            check_side(c[side], "update_seconds")
        else:
            assert "skipped" in c[side]
    assert set(c["ours"]["phases"]) >= {"collect", "estimate", "train"}


@pytest.mark.slow
def test_learning_curves_and_scaling(smoke, tmp_path):
    curves = smoke["e"]["curves"]
    for name in ("rewardloop GRPO", "rewardloop PPO", "rewardloop GRPO bf16", "rewardloop PPO bf16"):
        for curve in curves[name]:
            assert isinstance(curve, list) and curve[0]["step"] == 0, curve
            assert all(0.0 <= p["accuracy"] <= 1.0 for p in curve) and positive(curve[-1]["train_seconds"])
    points = smoke["f"]["points"]
    assert points and all(positive(p["seconds_per_step"]) for p in points)
    doc = tmp_path / "benchmarks.md"
    write_docs(smoke, doc, tmp_path / "img")
    text = doc.read_text()
    for key in "abcdef":
        assert f"<!-- bench:{key} -->" in text and f"<!-- /bench:{key} -->" in text
    assert smoke["command"] in text and smoke["machine"]["cpu"] in text


def test_docs_blocks_are_replaced_in_place(tmp_path):
    """Only the marked block of a section that ran is rewritten; the prose around it stays."""
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nintro prose\n\n<!-- bench:a -->\nold table\n<!-- /bench:a -->\n\noutro prose\n")
    res = {
        "command": "python -m benchmarks.run_all --only a",
        "mode": "smoke",
        "date": "today",
        "machine": {"cpu": "cpu-x", "cores": 2, "torch": "2.x", "torch_threads": 1},
        "a": {
            "model": "m",
            "params": 10,
            "rows": [
                {
                    "batch": 16,
                    "prompt_len": 16,
                    "new_tokens": 4,
                    "ours": {"tokens_per_s": 30.0},
                    "hf_generate": {"tokens_per_s": 10.0},
                    "speedup": 3.0,
                }
            ],
        },
    }
    res["targets"] = targets(res)
    write_docs(res, doc, tmp_path / "img")
    text = doc.read_text()
    assert "old table" not in text and "intro prose" in text and "outro prose" in text
    assert text.count("<!-- bench:a -->") == 1 and "| 16 | 16 | 4 | 30 | 10 | 3 |" in text
    assert res["targets"][0]["met"] is True and "cpu-x" in text
