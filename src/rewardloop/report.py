"""``rewardloop report RUN_DIR``: PNG plots of every logged metric group and a summary table.

Reads ``metrics.jsonl`` (and ``samples.jsonl`` when present) from a run directory — or from every stage directory
below it (an ``rlhf`` run has one per stage) — writes ``plots/<group>.png`` and returns the summary as text.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rewardloop.runs import read_metrics

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# plot group → substrings of metric names that belong to it (first match wins). Seconds and throughput come first
# and apart, so that `time/reward` or `gen_tokens_per_s` never share an axis with each other or with rewards.
GROUPS = {
    "seconds": ("time/",),
    "throughput": ("_per_s",),
    "loss": ("loss",),
    "reward": ("reward", "score", "win_rate"),
    "accuracy": ("accuracy", "acc"),
    "kl": ("kl",),
    "entropy": ("entropy",),
    "length": ("length", "len"),
}
SKIP = {"step", "time", "cpu_s"}
# bookkeeping counts (substrings of the name): listed in the summary table, never drawn as curves
COUNTERS = ("params", "pairs", "member", "n_train", "sampling_tries", "_drawn", "errors", "early_stop", "epochs")


def _numeric_keys(rows: list[dict[str, Any]]) -> list[str]:
    keys: dict[str, None] = {}
    for r in rows:
        for k, v in r.items():
            if k not in SKIP and isinstance(v, int | float) and not isinstance(v, bool):
                keys[k] = None
    return list(keys)


def curves(rows: list[dict[str, Any]]) -> list[str]:
    """Metrics drawn as curves: not counters, and changing over the run (a constant is a fact for the table)."""
    changing = [k for k in _numeric_keys(rows) if len({v for _, v in _points(rows, k)}) > 1]
    return [k for k in changing if not any(c in k for c in COUNTERS)]


def _points(rows: list[dict[str, Any]], key: str) -> list[tuple[int, float]]:
    """(step, value) for each finite logged value of ``key``."""
    return [(r["step"], r[key]) for r in rows if isinstance(r.get(key), int | float) and math.isfinite(r[key])]


def group_metrics(keys: list[str]) -> dict[str, list[str]]:
    """Assign each metric name to a plot group ('other' when nothing matches)."""
    groups: dict[str, list[str]] = {}
    for k in keys:
        name = next((g for g, subs in GROUPS.items() if any(s in k for s in subs)), "other")
        groups.setdefault(name, []).append(k)
    return groups


def figures(title: str, rows: list[dict[str, Any]]) -> dict[str, Figure]:
    """One figure per metric group (one axes, every curve in its legend), keyed by group name."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    out = {}
    for group, keys in group_metrics(curves(rows)).items():
        fig = Figure(figsize=(6, 3.5))
        ax = fig.subplots()
        for k in keys:
            pts = _points(rows, k)
            ax.plot(*zip(*pts, strict=True), marker="." if len(pts) < 30 else None, label=k)
        ax.set_xlabel("step")
        ax.set_title(f"{title}: {group}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=1 if len(keys) <= 6 else 2)
        fig.tight_layout()
        out[group] = fig
    return out


def plot_run(run_dir: Path, rows: list[dict[str, Any]]) -> list[Path]:
    """One PNG per metric group in ``run_dir/plots``; returns the files written."""
    out_dir = run_dir / "plots"
    out_dir.mkdir(exist_ok=True)
    written = []
    for group, fig in figures(run_dir.name, rows).items():
        fig.savefig(out_dir / f"{group}.png", dpi=100)
        written.append(out_dir / f"{group}.png")
    return written


def summary_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table: metric, first, last, min, max over the logged steps."""
    lines = ["| metric | first | last | min | max |", "|---|---|---|---|---|"]
    for k in _numeric_keys(rows):
        if vals := [v for _, v in _points(rows, k)]:
            lines.append(f"| {k} | {vals[0]:.4g} | {vals[-1]:.4g} | {min(vals):.4g} | {max(vals):.4g} |")
    return "\n".join(lines)


def sample_table(run_dir: Path, n: int = 3) -> str:
    """Best and worst samples of the last logged step in samples.jsonl (empty when there is none)."""
    path = run_dir / "samples.jsonl"
    if not path.exists():
        return ""
    samples = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not samples:
        return ""
    last = max(s["step"] for s in samples)
    rows = sorted((s for s in samples if s["step"] == last), key=lambda s: s.get("reward") or 0.0, reverse=True)
    picked = rows[:n] + [r for r in rows[-n:] if r not in rows[:n]]
    lines = [f"samples at step {last} (best and worst):", "| reward | prompt | response |", "|---|---|---|"]
    for s in picked:
        prompt = str(s.get("prompt", ""))[:40].replace("|", "\\|").replace("\n", " ")
        resp = str(s.get("response", s.get("completion", "")))[:60].replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {s.get('reward', float('nan')):.3g} | {prompt} | {resp} |")
    return "\n".join(lines)


def report(run_dir: str | Path) -> str:
    """Plots + summary for ``run_dir`` and every stage directory under it; returns the text it would print."""
    root = Path(run_dir)
    if not root.exists():
        raise FileNotFoundError(f"run directory not found: {root}")
    dirs = sorted({p.parent for p in root.rglob("metrics.jsonl")})
    if not dirs:
        raise FileNotFoundError(f"no metrics.jsonl in {root} or below it: is this a rewardloop run directory?")
    parts = []
    for d in dirs:
        rows = read_metrics(d)
        plots = plot_run(d, rows)
        title = str(d.relative_to(root)) if d != root else d.name
        parts.append(f"## {title}  ({len(rows)} logged steps)\n\n{summary_table(rows)}")
        samples = sample_table(d)
        if samples:
            parts.append(samples)
        parts.append("plots: " + ", ".join(str(p) for p in plots))
    return "\n\n".join(parts)
