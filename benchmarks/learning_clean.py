"""(e) clean start: RL from SFT models trained on clean data — rewardloop GRPO, rewardloop PPO and TRL's GRPOTrainer
at equal CPU time, several seeds, greedy held-out accuracy against training CPU-seconds.

    python -m benchmarks.learning_clean [--task strings] [--seeds 0,1,2] [--evals 4] [--no-docs] [--out DIR]

Per seed s: our SFT with ``configs/sft/<task>.yaml`` and ``run.seed=s`` (cached under <out>/models), then
``configs/grpo/<task>.yaml`` and ``configs/ppo/<task>.yaml`` exactly as ``rewardloop grpo|ppo --config`` runs them
(``run.seed=s``; the preset's own steps), then TRL's GRPOTrainer with the GRPO preset's N × G, lr, warm-up, sampling
temperature, β, clip range and max new tokens, stopped once its timed steps reach the larger of the two rewardloop
runs' training seconds (equal CPU time). Every worker runs with one torch thread and BENCH_CLOCK=cpu, so "seconds"
are the worker's process CPU-seconds inside its training steps (generation, scoring, update; evaluation, logging
and checkpoints excluded). A task is any with the three presets (``--task arithmetic_clean`` uses
configs/{sft,grpo,ppo}/arithmetic_clean.yaml). Writes <out>/learning_clean_<task>.json, the plot
docs/benchmarks/learning_clean_<task>.png and the ``<!-- bench:e-clean-<task> -->`` block of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.common import machine_info
from benchmarks.report import table
from benchmarks.run_all import BENCH, ROOT, Runner

CONFIGS = ROOT / "configs"
METHODS = ("rewardloop GRPO", "rewardloop PPO", "TRL GRPO")


def preset(algo: str, task: str):
    """The validated preset ``configs/<algo>/<task>.yaml``."""
    from rewardloop.algorithms import grpo, ppo, sft
    from rewardloop.config import load_config

    cls = {"sft": sft.SFTConfig, "grpo": grpo.GRPOConfig, "ppo": ppo.PPOConfig}[algo]
    path = CONFIGS / algo / f"{task}.yaml"
    if not path.exists():
        raise SystemExit(f"{path}: no such preset (a clean-start task needs configs/{{sft,grpo,ppo}}/{task}.yaml)")
    return load_config(cls, path)


def sft_model(r: Runner, task: str, seed: int, steps: int | None = None) -> tuple[Path, float]:
    """Our SFT on the task's clean demonstrations (``configs/sft/<task>.yaml``, ``run.seed=seed``, its steps unless
    ``steps``), cached; returns (model directory, its greedy held-out accuracy)."""
    steps = steps or preset("sft", task).steps
    target = r.models / f"{task}-sft{steps}-seed{seed}"
    meta = target / "sft_result.json"
    if meta.exists():
        return target, json.loads(meta.read_text())["accuracy"]
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rewardloop.algorithms import sft
    from rewardloop.config import load_config
    from rewardloop.models import save_model

    run = [f"run.root={r.out / 'runs'}", f"run.name={target.name}", f"run.seed={seed}", "run.progress=false"]
    sizes = [f"steps={steps}", f"eval_every={steps}", "model.device=cpu"]
    cfg = load_config(sft.SFTConfig, CONFIGS / "sft" / f"{task}.yaml", [*run, *sizes])
    torch.set_num_threads(r.threads)  # in this process: as many threads as the workers
    res = sft.train(cfg)
    d = Path(res["model_dir"])
    save_model(AutoModelForCausalLM.from_pretrained(d), AutoTokenizer.from_pretrained(d), target)
    meta.write_text(json.dumps({"accuracy": res["final"]["eval/accuracy"], "steps": cfg.steps}))
    return target, res["final"]["eval/accuracy"]


def task_rows(r: Runner, task: str) -> Path:
    """The GRPO preset's task split as {"train", "test": [{prompt, answer}]} for the TRL worker."""
    from rewardloop.envs.tasks import load_task

    path = r.out / f"{task}_rows.json"
    if not path.exists():
        t = load_task(preset("grpo", task).task)
        pick = lambda rows: [{"prompt": x["prompt"], "answer": x["answer"]} for x in rows]  # noqa: E731
        path.write_text(json.dumps({"train": pick(t.train), "test": pick(t.test)}))
    return path


def trl_spec(task: str, eval_every: int) -> dict[str, Any]:
    """TRL GRPOTrainer settings = the rewardloop GRPO preset's (N × G, lr, warm-up, T, β, clip range, lengths)."""
    g = preset("grpo", task)
    if g.estimator != "grpo" or g.loss_agg != "token-mean" or g.ppo_epochs != 1:
        raise SystemExit(f"configs/grpo/{task}.yaml: the TRL side maps only estimator=grpo, loss_agg=token-mean, μ=1")
    return {
        "prompts_per_step": g.prompts_per_step,
        "group_size": g.group_size,
        "max_new_tokens": g.gen.max_new_tokens,
        "temperature": g.gen.temperature,
        "beta": g.kl_coef,
        "lr": g.optim.lr,
        "warmup_steps": g.optim.warmup_steps,
        "epsilon": g.clip_eps_low,
        "epsilon_high": g.clip_eps_high,
        "steps": 100_000,  # stopped by cpu_budget
        "eval_every": eval_every,
        "eval_size": g.eval_size,
        "eval_tokens": g.eval_gen.max_new_tokens,
    }


def one_seed(
    r: Runner, task: str, seed: int, sft_seed: int, steps: dict[str, int], budget: float | None = None
) -> dict[str, dict]:
    """rewardloop GRPO and PPO side by side, and TRL GRPO stopped at ``budget`` training CPU-seconds — beside them —
    or, without a budget, after them at the larger of their training CPU-seconds; all from one SFT model."""
    model, _ = sft_model(r, task, sft_seed, steps["sft"])
    every = {a: max(1, steps[a] // steps["evals"]) for a in ("grpo", "ppo")}

    def ours(algo: str) -> dict:
        overrides = [f"model.path={model}", f"steps={steps[algo]}", f"eval_every={every[algo]}"]
        overrides += [f"run.name={task}-{algo}-seed{seed}"]
        spec = {"algo": algo, "config": str(CONFIGS / algo / f"{task}.yaml"), "overrides": overrides}
        return r.worker("ours_worker", {**spec, "seed": seed, "out_dir": str(r.out / "runs")})

    def trl(seconds: float | None) -> dict:
        if not r.have("trl"):
            return {"skipped": "benchmarks/.venv-trl missing: run `bash benchmarks/setup_trl_envs.sh`"}
        if seconds is None:
            return {"skipped": "both rewardloop runs failed: no CPU budget to match"}
        spec = trl_spec(task, every["grpo"]) | {"model_dir": str(model), "data": str(task_rows(r, task))}
        spec |= {"seed": seed, "cpu_budget": seconds, "out_dir": str(r.out / "runs" / f"trl-{task}-seed{seed}")}
        return r.worker("trl_grpo_worker", spec, "trl")

    with ThreadPoolExecutor(max_workers=3) as pool:  # one thread each
        trl_run = pool.submit(trl, budget) if budget else None
        out = dict(zip(METHODS[:2], pool.map(ours, ("grpo", "ppo")), strict=True))
    done = max((x["curve"][-1]["train_seconds"] for x in out.values() if "curve" in x), default=None)
    return out | {"TRL GRPO": trl_run.result() if trl_run else trl(done)}


def run(
    r: Runner,
    task: str,
    seeds: list[int],
    sft_seeds: list[int],
    evals: int,
    jobs: int = 1,
    steps: dict | None = None,
    budget: float | None = None,
) -> dict[str, Any]:
    """Every method × seed (``jobs`` seeds at a time: each worker's CPU time is its own process's);
    {"sft": {sft seed: accuracy}, "runs": {method: [worker result per seed]}, "hyper": ...}. ``steps`` ({"sft",
    "grpo", "ppo"}) replaces the presets' step counts (the smoke mode); ``budget``: TRL's CPU-seconds, fixed (it then
    runs beside rewardloop instead of after it)."""
    steps = {a: preset(a, task).steps for a in ("sft", "grpo", "ppo")} | (steps or {}) | {"evals": evals}
    sft_acc = {s: sft_model(r, task, s, steps["sft"])[1] for s in dict.fromkeys(sft_seeds)}  # before the pool
    task_rows(r, task)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        per_seed = list(pool.map(lambda s: one_seed(r, task, *s, steps, budget), zip(seeds, sft_seeds, strict=True)))
    runs = {m: [x[m] for x in per_seed] for m in METHODS}
    hyper = trl_spec(task, max(1, steps["grpo"] // evals)) | {"steps": steps, "budget": budget}
    return {"task": task, "seeds": seeds, "sft_seeds": sft_seeds, "sft": sft_acc, "runs": runs, "hyper": hyper}


def at(curve: list[dict], seconds: float) -> float | None:
    """Accuracy at the last evaluation made within ``seconds`` of training."""
    within = [p["accuracy"] for p in curve if p["train_seconds"] <= seconds + 1e-9]
    return within[-1] if within else None


def rows(res: dict, marks: list[float]) -> list[list[Any]]:
    """One table row per method × seed: accuracy at 0, at each CPU-second mark, final, gain, steps, seconds."""
    out = []
    for method, per_seed in res["runs"].items():
        for seed, x in zip(res["seeds"], per_seed, strict=True):
            if "curve" not in x:
                out.append([method, seed, (x.get("error") or x.get("skipped", "?"))[-80:].replace("\n", " ")])
                continue
            c = x["curve"]
            gain = c[-1]["accuracy"] - c[0]["accuracy"]
            cells = [at(c, s) for s in marks]
            out.append([method, seed, c[0]["accuracy"], *cells, c[-1]["accuracy"], f"{gain:+.3f}", c[-1]["step"],
                        round(c[-1]["train_seconds"], 1)])  # fmt: skip
    return out


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for k, (method, per_seed) in enumerate(res["runs"].items()):
        for i, x in enumerate(p for p in per_seed if "curve" in p):
            c = x["curve"]
            xs, ys = [p["train_seconds"] for p in c], [p["accuracy"] for p in c]
            ax.plot(xs, ys, "-o", color=f"C{k}", alpha=0.8, markersize=3, label=method if i == 0 else None)
    ax.set_xlabel("training CPU-seconds (one thread; evaluation excluded)")
    ax.set_ylabel(f"{res['task']} held-out accuracy (greedy)")
    ax.legend()
    ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def block(res: dict, img: str | None) -> str:
    """The markdown of the clean-start table: command, settings, method × seed rows, plot."""
    h, m = res["hyper"], res["machine"]
    budgets = [x["curve"][-1]["train_seconds"] for m in METHODS[:2] for x in res["runs"][m] if "curve" in x]
    top = h.get("budget") or max(budgets, default=0.0)
    marks = [round(top * k / 3) for k in (1, 2)]
    stop = f"{h['budget']:g} training CPU-seconds" if h.get("budget") else "the larger rewardloop run's training CPU-s"
    sft_acc = {int(k): v for k, v in res["sft"].items()}  # JSON keys are strings
    sft = ", ".join(f"SFT seed {s}: {sft_acc[s]:.3f}" for s in dict.fromkeys(res["sft_seeds"]))
    text = (
        f"_Command: `{res['command']}` · {res['date']} · {m['cpu']}, {m['cores']} cores, torch {m['torch']}, one "
        f"thread per worker, CPU clock · {res['seconds']:.0f} s · 1-min load average before/after {res['load']}_\n\n"
        f"Task `{res['task']}`; start: our SFT on clean data (`configs/sft/{res['task']}.yaml`, {h['steps']['sft']} "
        f"steps), greedy held-out accuracy {sft}; RL seeds {res['seeds']} from SFT seeds {res['sft_seeds']}. rewardloop: `configs/grpo/{res['task']}.yaml` and "
        f"`configs/ppo/{res['task']}.yaml` ({h['steps']['grpo']} / {h['steps']['ppo']} steps, `run.seed` = RL seed). TRL GRPOTrainer with the GRPO preset's "
        f"{h['prompts_per_step']} prompts × {h['group_size']}, lr {h['lr']} ({h['warmup_steps']} warm-up steps), "
        f"T {h['temperature']}, β {h['beta']}, clip [{h['epsilon']}, {h['epsilon_high']}], ≤ {h['max_new_tokens']} "
        f"new tokens, stopped at {stop}. Accuracy on "
        f'{h["eval_size"]} held-out problems; seconds = training CPU-seconds (evaluation excluded); "at N s" = the '
        f"last evaluation within N training CPU-seconds.\n\n"
    )
    header = ["method", "seed", "at 0", *[f"at {s} s" for s in marks], "final", "gain", "steps", "CPU-s"]
    text += table(header, rows(res, marks))
    gains = {meth: [r[-3] for r in rows(res, marks) if r[0] == meth and len(r) > 3] for meth in res["runs"]}
    text += "\nMean gain (final − at 0): " + " · ".join(
        f"{meth} {statistics.mean(float(g) for g in gs):+.3f}" for meth, gs in gains.items() if gs
    )
    return text + (f"\n\n![accuracy vs CPU-seconds]({img})\n" if img else "\n")


def write_block(doc: Path, key: str, body: str) -> None:
    """Replace the ``<!-- bench:<key> -->`` block of ``doc`` (appended to section (e)'s end when missing)."""
    text = doc.read_text()
    new = f"<!-- bench:{key} -->\n{body}<!-- /bench:{key} -->"
    pattern = re.compile(rf"<!-- bench:{key} -->.*?<!-- /bench:{key} -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: new, text)
    else:
        i = text.find("\n## (f)")
        text = text[:i] + f"\n{new}\n" + text[i:] if i >= 0 else text + f"\n{new}\n"
    doc.write_text(text)


def publish(res: dict) -> None:
    """The plot docs/benchmarks/learning_clean_<task>.png and the block ``bench:e-clean-<task>`` of the docs."""
    img = ROOT / "docs" / "benchmarks" / f"learning_clean_{res['task']}.png"
    plot(res, img)
    write_block(ROOT / "docs" / "benchmarks.md", f"e-clean-{res['task']}", block(res, f"benchmarks/{img.name}"))


def main(argv: list[str] | None = None) -> dict:
    import os
    import sys

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="strings", help="a task with configs/{sft,grpo,ppo}/<task>.yaml")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated RL seeds (run.seed of GRPO / PPO / TRL)")
    ap.add_argument(
        "--sft-seeds", default=None, help="the SFT model's run.seed per RL seed (default: the RL seeds; one = shared)"
    )
    ap.add_argument(
        "--budget", type=float, default=None, help="TRL's training CPU-seconds (default: the rewardloop runs' larger)"
    )
    ap.add_argument("--jobs", type=int, default=1, help="seeds run at the same time (one thread each)")
    ap.add_argument("--evals", type=int, default=4, help="evaluations per rewardloop run (besides step 0)")
    ap.add_argument("--out", default=str(BENCH / "out"), help="work directory (models, runs, results)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per worker process")
    ap.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    ap.add_argument("--smoke", action="store_true", help="2 SFT and 2 RL steps per run (checks the harness only)")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    sft_seeds = [int(s) for s in (args.sft_seeds or args.seeds).split(",") if s.strip()]
    sft_seeds = sft_seeds * len(seeds) if len(sft_seeds) == 1 else sft_seeds
    if len(sft_seeds) != len(seeds):
        ap.error(f"--sft-seeds: {len(sft_seeds)} seeds for {len(seeds)} RL seeds; give one or one per RL seed")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    r = Runner(out, threads=1, timeout=args.timeout, verbose=not args.quiet, clock="cpu")
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    steps = {"sft": 2, "grpo": 2, "ppo": 2} if args.smoke else None
    res = run(r, args.task, seeds, sft_seeds, 1 if args.smoke else args.evals, args.jobs, steps, args.budget)
    res |= {
        "command": "python -m benchmarks.learning_clean " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine_info(),
        "seconds": time.perf_counter() - t0,
        "load": [round(load0, 2), round(os.getloadavg()[0], 2)],
    }
    (out / f"learning_clean_{args.task}.json").write_text(json.dumps(res, indent=1))
    if not args.no_docs:
        publish(res)
    print(json.dumps({k: v for k, v in res.items() if k != "runs"}, indent=1))
    return res


if __name__ == "__main__":
    main()
