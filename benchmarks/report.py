"""Targets (ratios measured in one run) and the docs/benchmarks.md tables + PNG plots written from results.json.

docs/benchmarks.md keeps its hand-written analysis; only the blocks between ``<!-- bench:X -->`` and
``<!-- /bench:X -->`` are replaced, so ``--only a`` rewrites table (a) and leaves the others as they were.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any


def _get(d: Any, *keys, default=None):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        if not math.isfinite(x):
            return str(x)
        return f"{x:.{digits}g}" if abs(x) < 1e4 else f"{x:,.0f}"
    return str(x)


def _why(side: dict) -> str:
    if "skipped" in side:
        return f"not measured: {side['skipped']}"
    if "error" in side:
        return "failed: " + side["error"].strip().splitlines()[-1][:160] if side["error"].strip() else "failed"
    return ""


# Labels of the sides in (b) and (c) (benchmarks/run_all.py: SIDES), and the ratios the targets compare.
SIDE_LABELS = {
    "ours": "rewardloop {algo} (defaults: fp32)",
    "ours_gc": "rewardloop {algo} + activation checkpointing",
    "ours_bf16": "rewardloop {algo}, bf16 autocast",
    "ours_onepass": "rewardloop {algo}, update in one pass (micro_batch_size=null)",
    "trl": "{trl} (defaults: fp32, activation checkpointing)",
    "trl_nogc": "{trl}, no activation checkpointing",
    "trl_bf16": "{trl}, bf16 autocast (+ checkpointing)",
}
SPEED_PAIRS = [
    ("ours", "trl", "each side's defaults"),
    ("ours", "trl_nogc", "fp32, neither checkpointing"),
    ("ours_bf16", "trl_bf16", "both bf16 autocast"),
]
MEMORY_PAIRS = [("ours_gc", "trl", "both checkpointing"), ("ours", "trl", "each side's defaults")]


def _ratio(num: Any, den: Any) -> float | None:
    return num / den if num and den else None


def targets(res: dict) -> list[dict]:
    """The issue's targets as {target, value, threshold, met} rows (value None when not measurable in this run)."""
    rows = []
    a16 = [r for r in _get(res, "a", "rows", default=[]) if r["batch"] == 16 and "speedup" in r]
    for key, how in (("speedup", "fp32"), ("speedup_bf16", "both bf16 autocast")):
        value = a16[0].get(key) if a16 else None
        if key == "speedup" or value is not None:
            rows.append({"target": f"generation tokens/s vs model.generate, batch 16 ({how})", "threshold": 3.0,
                         "value": value})  # fmt: skip
    for preset, b in (_get(res, "b") or {}).items():
        if not isinstance(b, dict) or "ours" not in b:
            continue
        for o, t, how in SPEED_PAIRS:
            if o in b and t in b:
                value = _ratio(_get(b, o, "items_per_s"), _get(b, t, "items_per_s"))
                rows.append(
                    {"target": f"GRPO completions/s vs TRL ({preset}; {how})", "threshold": 2.0, "value": value}
                )
        for o, t, how in MEMORY_PAIRS:
            if o in b and t in b:
                value = _ratio(_get(b, o, "peak_rss_mb"), _get(b, t, "peak_rss_mb"))
                target = f"GRPO peak RSS / TRL's ({preset}; {how}), lower is better"
                rows.append({"target": target, "threshold": 1.0, "value": value, "lower": True})
    c = _get(res, "c")
    if isinstance(c, dict) and "ours" in c:
        for o, t, how in SPEED_PAIRS:
            if o in c and t in c:
                value = _ratio(_get(c, t, "seconds_per_step"), _get(c, o, "seconds_per_step"))
                target = f"PPO updates/s vs TRL 1.12 ({c['model']}; {how})"
                rows.append({"target": target, "threshold": 3.0, "value": value})
        for o, t, how in MEMORY_PAIRS:
            if o in c and t in c:
                value = _ratio(_get(c, o, "peak_rss_mb"), _get(c, t, "peak_rss_mb"))
                rows.append({"target": f"PPO peak RSS / TRL's ({how}), lower is better", "threshold": 1.0,
                             "value": value, "lower": True})  # fmt: skip
    for name, phases in (_get(res, "d", "mfu") or {}).items():
        if name.startswith("grpo") and "30m" in name and "bf16" not in name and "update" in phases:
            rows.append({"target": f"train-phase MFU, {name}", "threshold": 0.5, "value": phases["update"]["mfu"]})
    for r in rows:
        v = r["value"]
        r["met"] = None if v is None else (v <= r["threshold"] if r.get("lower") else v >= r["threshold"])
    return rows


def _header(res: dict, key: str) -> str:
    m = res["machine"]
    meta = _get(res, key, "_meta", default={})
    load = meta.get("load_avg_1m")
    return (
        f"_Command: `{res['command']}` ({res['mode']} mode) · {res['date']} · {m['cpu']}, {m['cores']} cores, "
        f"torch {m['torch']} ({m['torch_threads']} threads) · {res.get('clock', 'wall')} clock · section time {meta.get('seconds', '—')} s · "
        f"1-min load average before/after {load}_\n\n"
    )


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def block_a(res: dict) -> str:
    a = res["a"]
    if "rows" not in a:
        return f"Not measured: {_why(a)}\n"
    rows = [
        [
            r["batch"],
            r["prompt_len"],
            r["new_tokens"],
            r["ours"]["tokens_per_s"],
            _get(r, "hf_generate", "tokens_per_s"),
            r.get("speedup"),
            _get(r, "ours_bf16", "tokens_per_s"),
            _get(r, "hf_generate_bf16", "tokens_per_s"),
            r.get("speedup_bf16"),
            _ratio(_get(r, "ours_bf16", "tokens_per_s"), _get(r, "hf_generate", "tokens_per_s")),
        ]
        for r in a["rows"]
    ]
    header = ["batch", "prompt tokens", "new tokens", "rewardloop tok/s", "model.generate tok/s", "speedup"]
    header += ["rewardloop bf16 tok/s", "generate bf16 tok/s", "speedup bf16", "rewardloop bf16 / generate fp32"]
    return (
        f"Model {a['model']} ({a['params']:,} parameters), sampling at temperature 1, median of timed runs; "
        "the bf16 columns run both sides under bf16 autocast (rewardloop: `model.autocast=bfloat16`).\n\n"
        + table(header, rows)
    )


def _sides(section: dict, algo: str, trl: str) -> list[tuple[str, str]]:
    """(key, label) of every side present in a (b) or (c) result, in SIDE_LABELS order."""
    return [(k, label.format(algo=algo, trl=trl)) for k, label in SIDE_LABELS.items() if k in section]


def block_b(res: dict) -> str:
    out = []
    for preset, b in res["b"].items():
        if preset == "_meta":
            continue
        rows = []
        for key, name in _sides(b, "GRPO", "TRL GRPOTrainer"):
            side = b[key]
            if "seconds_per_step" not in side:
                rows.append([name, _why(side), "—", "—", "—"])
                continue
            last = side["rewards"][-1] if side.get("rewards") else None
            rows.append([name, side["seconds_per_step"], side["items_per_s"], side["peak_rss_mb"], last])
        out.append(
            f"**{preset}** — {b['N']} prompts × {b['G']} generations, {b['L']} new tokens, β = 0.04, "
            f"lr 1e-5, {b['steps']} steps (first step is warm-up and not in the median); peak RSS of the worker "
            "process up to the end of training (rewardloop's final checkpoint write is excluded: TRL saves nothing)\n\n"
            + table(["side", "s/step", "completions/s", "peak RSS MiB", "reward at last step"], rows)
        )
    return "\n".join(out)


def block_c(res: dict) -> str:
    c = res["c"]
    rows = []
    for key, name in _sides(c, "PPO", "TRL 1.12 PPOTrainer"):
        side = c[key]
        if "seconds_per_step" not in side:
            rows.append([name, _why(side), "—", "—"])
            continue
        rows.append([name, side["seconds_per_step"], side["items_per_s"], side["peak_rss_mb"]])
    text = (
        f"Four {c['model']} models (policy, reference, value, reward), {c['B']} episodes per update, "
        f"{c['L']}-token responses, {c['epochs']} PPO epochs, one mini-batch, {c['updates']} updates.\n\n"
        + table(["side", "s/update", "episodes/s", "peak RSS MiB"], rows)
    )
    phases = {k: _get(c, k, "phases") for k in ("ours", "ours_bf16") if _get(c, k, "phases")}
    if phases:
        from benchmarks.run_all import steady

        names = list(next(iter(phases.values())))
        text += "\nrewardloop time by phase (s/update, median after the first):\n\n"
        text += table(["side", *names], [[k, *[steady(p[n]) for n in names]] for k, p in phases.items()])
    return text


def block_d(res: dict) -> str:
    d = res["d"]
    roof = d.get("roofline", {})
    if "fp32" not in roof:
        return f"Not measured: {_why(roof)}\n"
    text = table(
        ["dtype", "peak GFLOP/s (best square matmul)", "by size"],
        [
            [k, roof[k]["peak_gflops"], ", ".join(f"{n}: {v:.0f}" for n, v in roof[k]["by_size"].items())]
            for k in ("fp32", "bf16")
        ],
    )
    rows = [
        [name, ph, v.get("gflop"), v["seconds"], v["gflops"], f"{100 * v['mfu']:.1f}%"]
        for name, phases in d.get("mfu", {}).items()
        for ph, v in phases.items()
    ]
    if rows:
        text += (
            "\nMFU per phase (phase times from the latest runs of (a)–(c); against the fp32 peak above, bf16-autocast "
            "runs against the bf16 peak; FLOPs ≈ 2N per "
            f"forward token, 6N per trained token, prompt {d.get('prompt_tokens', 0):.1f} tokens on average):\n\n"
        )
        text += table(["run", "phase", "GFLOP", "s", "GFLOP/s", "MFU"], rows)
    return text


def block_e(res: dict, img_dir: Path) -> str:
    e = res["e"]
    rows = []
    for name, runs in e["curves"].items():
        for seed, curve in enumerate(runs):
            if isinstance(curve, dict):
                rows.append([name, seed, _why(curve), "—", "—", "—"])
                continue
            rows.append(
                [name, seed, curve[0]["accuracy"], curve[-1]["accuracy"], curve[-1]["step"], curve[-1]["train_seconds"]]
            )
    img = plot_learning(e, img_dir, res.get("clock", "wall"))
    h = e["hyper"]
    text = (
        f"Start: `{Path(e['base']).name}` (our SFT of the tiny model on demonstrations 70 % written carelessly as `85.`, which exact match rejects). Same for all: "
        f"{h['prompts_per_step']} prompts × {h['group_size']} samples per step (PPO: {h['prompts_per_step'] * h['group_size']}"
        f" episodes, 1 epoch), lr {h['lr']}, β {h['beta']}, ≤ {h['max_new_tokens']} new tokens, greedy test accuracy "
        f"on {h['eval_size']} held-out problems; seconds = training time only (evaluation excluded).\n\n"
    )
    text += table(["method", "seed", "accuracy at 0", "final accuracy", "steps", "train seconds"], rows)
    if img:
        text += f"\n![accuracy vs wall time]({img})\n"
    return text


def block_f(res: dict, img_dir: Path) -> str:
    pts = res["f"]["points"]
    rows = [
        [
            p["axis"],
            p["preset"],
            p["N"],
            p["G"],
            p["L"],
            p.get("seconds_per_step", p.get("error", "")[-80:]),
            *[_get(p, "phases", k) for k in ("collect", "estimate", "update")],
            p.get("peak_rss_mb"),
        ]
        for p in pts
    ]
    img = plot_scaling(pts, img_dir)
    steps = res["f"].get("steps", 1)
    how = "median after the first step" if steps > 1 else "a single step, first-call warm-up included"
    text = f"rewardloop GRPO step time ({how}), β = 0.04, lr 1e-5, fp32:\n\n"
    text += table(
        ["axis", "model", "N", "G", "new tokens", "s/step", "collect s", "estimate s", "update s", "RSS MiB"], rows
    )
    if img:
        text += f"\n![scaling]({img})\n"
    return text


def block_targets(res: dict) -> str:
    rows = [
        [
            t["target"],
            t["value"],
            ("≤ " if t.get("lower") else "≥ ") + _fmt(t["threshold"]),
            {True: "met", False: "**not met**", None: "not measured"}[t["met"]],
        ]
        for t in res["targets"]
    ]
    if not rows:
        return "No target measured.\n"
    return "Each ratio from the latest run of its section (tables below).\n\n" + table(
        ["target", "measured", "threshold", ""], rows
    )


def plot_learning(e: dict, img_dir: Path, clock: str = "wall") -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = False
    for k, (name, runs) in enumerate(e["curves"].items()):
        color, style = f"C{k}", "--o" if "bf16" in name else "-o"
        for i, curve in enumerate(runs):
            if isinstance(curve, list) and curve:
                ax.plot(
                    [p["train_seconds"] for p in curve],
                    [p["accuracy"] for p in curve],
                    style,
                    color=color,
                    alpha=0.8,
                    markersize=3,
                    label=name if i == 0 else None,
                )
                drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel(f"training time (s, {clock} clock)")
    ax.set_ylabel("arithmetic test accuracy (greedy)")
    ax.legend()
    ax.grid(alpha=0.3)
    img_dir.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(img_dir / "learning.png", dpi=100)
    plt.close(fig)
    return f"{img_dir.name}/learning.png"


def plot_scaling(pts: list[dict], img_dir: Path) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_names = [("size", "model"), ("length", "new tokens"), ("group", "group size G")]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    drawn = False
    for ax, (axis, label) in zip(axes, axes_names, strict=True):
        sel = [p for p in pts if p["axis"] == axis and "seconds_per_step" in p]
        if sel:
            xs = [str(p["value"]).removeprefix("qwen2-") for p in sel]
            ax.plot(xs, [p["seconds_per_step"] for p in sel], "-o")
            drawn = True
        ax.set_xlabel(label)
        ax.set_ylabel("s / GRPO step")
        ax.grid(alpha=0.3)
    if not drawn:
        plt.close(fig)
        return None
    img_dir.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(img_dir / "scaling.png", dpi=100)
    plt.close(fig)
    return f"{img_dir.name}/scaling.png"


TITLES = {
    "targets": "Targets",
    "a": "(a) Generation: rewardloop engine vs `model.generate`",
    "b": "(b) GRPO vs TRL `GRPOTrainer`",
    "c": "(c) PPO vs TRL 1.12 `PPOTrainer`",
    "d": "(d) Roofline and MFU",
    "e": "(e) Learning per second",
    "f": "(f) Scaling",
}


def render_block(res: dict, key: str, img_dir: Path) -> str:
    if key == "targets":
        return block_targets(res)
    fn = {"a": block_a, "b": block_b, "c": block_c, "d": block_d}.get(key)
    body = fn(res) if fn else (block_e if key == "e" else block_f)(res, img_dir)
    return _header(res, key) + body


def write_docs(res: dict, path: Path, img_dir: Path) -> None:
    """Replace (or append) the marked block of every section present in ``res``."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    for key in ["targets", *"abcdef"]:
        if key != "targets" and key not in res:
            continue
        block = f"<!-- bench:{key} -->\n{render_block(res, key, img_dir)}<!-- /bench:{key} -->"
        pattern = re.compile(rf"<!-- bench:{key} -->.*?<!-- /bench:{key} -->", re.S)
        if pattern.search(text):
            text = pattern.sub(lambda _, b=block: b, text)
        else:
            text += f"\n## {TITLES[key]}\n\n{block}\n"
    path.write_text(text)
