"""The personalization benchmark in its smallest mode: every policy and every VW side produces its numbers and
plots. Skipped when the bench-only vowpalwabbit package is absent; no time or score threshold is asserted."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("vowpalwabbit")

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # benchmarks/ is a top-level package beside src/, not installed
    sys.path.insert(0, str(ROOT))

from benchmarks.personalization import main  # noqa: E402

from rewardloop.personalize import PersonalizeConfig  # noqa: E402


def test_benchmark_smoke(tmp_path, capsys):
    result = main(
        ["--steps", "60", "--seeds", "1", "--vw-iterations", "150", "--vw-seeds", "1", "--plots", str(tmp_path)]
    )
    summary = result["feed"]["summary"]
    assert set(summary) == set(PersonalizeConfig().policies)
    assert summary["oracle"]["regret"][0] == 0.0
    assert all(0.0 <= s["ctr"][0] <= 1.0 and s["regret"][0] >= 0.0 for s in summary.values())
    sides = result["vw"]["sides"]
    assert set(sides) == {"vw -q UA", "vw (no interaction)", "ours: LinUCB"}
    assert all(0.0 <= side["ctr"] <= 1.0 for side in sides.values())
    assert isinstance(result["vw"]["gate_passed"], bool) and len(result["vw"]["direct"]["vw -q UA"]) == 1
    assert all(Path(p).stat().st_size > 0 for p in result["plots"])
    assert "| linucb |" in capsys.readouterr().out
