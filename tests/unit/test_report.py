"""``rewardloop report``: which series are drawn on which axes (counters never, seconds and throughput apart), a legend
on every figure, and the PNGs + summary written for a run directory."""

from __future__ import annotations

import json

from rewardloop.report import curves, figures, group_metrics, report

# what a GRPO run logs (abridged): curves, counters that never change, a counter that does, seconds, throughput
ROWS = [
    {"step": 0, "time": 0.1, "params": 1_000_000, "eval/accuracy": 0.1, "eval/reward": 0.2},
    *(
        {
            "step": s,
            "time": 1.0 * s,
            "loss/policy": 1.0 / s,
            "reward/mean": 0.1 * s,
            "reward_errors": 0,
            "reward/errors": 0,
            "sampling_tries": 1 + s % 2,
            "time/collect": 0.5 + 0.01 * s,
            "time/update": 0.2 + 0.02 * s,
            "tokens_per_s": 900.0 + s,
            "gen_tokens_per_s": 1500.0 - s,
            "kl": 0.01 * s,
            "lr": 1e-3 * s,
            "note": "text",
        }
        for s in range(1, 6)
    ),
    {"step": 5, "eval/accuracy": 0.6, "eval/reward": 0.7},
]


def test_counters_and_constants_are_not_curves():
    drawn = curves(ROWS)
    for counter in ("params", "reward_errors", "reward/errors", "sampling_tries", "step", "time", "note"):
        assert counter not in drawn
    assert {"loss/policy", "reward/mean", "eval/accuracy", "time/collect", "tokens_per_s", "kl", "lr"} <= set(drawn)


def test_seconds_and_throughput_are_grouped_apart():
    groups = group_metrics(curves(ROWS))
    assert groups["seconds"] == ["time/collect", "time/update"]
    assert groups["throughput"] == ["tokens_per_s", "gen_tokens_per_s"]
    assert groups["reward"] == ["eval/reward", "reward/mean"]
    assert groups["loss"] == ["loss/policy"] and groups["other"] == ["lr"]


def test_every_figure_has_one_axes_with_a_legend_naming_its_curves():
    figs = figures("run", ROWS)
    assert set(figs) == set(group_metrics(curves(ROWS)))
    for group, fig in figs.items():
        (ax,) = fig.axes
        assert ax.get_legend() is not None, group
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels == [line.get_label() for line in ax.get_lines()] == group_metrics(curves(ROWS))[group]


def test_report_writes_one_png_per_group_and_the_summary(tmp_path):
    run = tmp_path / "grpo-run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    text = report(run)
    assert sorted(p.name for p in (run / "plots").iterdir()) == sorted(f"{g}.png" for g in figures("x", ROWS))
    assert "| params | 1e+06 | 1e+06 |" in text and "| sampling_tries |" in text  # counters stay in the table
