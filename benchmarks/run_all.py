"""`make bench`: run every benchmark section in worker processes, print JSON, rewrite docs/benchmarks.md.

    python -m benchmarks.run_all [--quick | --smoke] [--only a,b,c,d,e,f] [--no-docs] [--out DIR] [--threads N]

Sections: a generation vs model.generate · b GRPO vs TRL GRPOTrainer · c PPO vs TRL 1.12 PPOTrainer · d roofline
and MFU · e learning per second · f scaling. TRL sides run only when their virtual environment exists
(`bash benchmarks/setup_trl_envs.sh`); otherwise the table says so.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import machine_info, parse_result

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
VENVS = {
    "main": Path(sys.executable),
    "trl": BENCH / ".venv-trl/bin/python",
    "trl112": BENCH / ".venv-trl112/bin/python",
}
SECTIONS = "abcdef"

# Sizes per mode. "full" is the documented run (≈20 min on 2 cores); "quick" a few minutes; "smoke" one step each.
MODES: dict[str, dict[str, Any]] = {
    "full": {
        "gen": {"model": "qwen2-4m", "batch_sizes": [1, 16, 64], "new_tokens": 64, "repeats": 1},
        "grpo": {"sizes": ["qwen2-4m", "qwen2-30m"], "N": 8, "G": 8, "L": 32, "steps": 2},
        "ppo": {"size": "qwen2-4m", "B": 16, "L": 32, "epochs": 4, "updates": 2},
        "roof": {"sizes": [256, 512, 1024, 2048], "seconds": 1.0},
        "learn": {
            "size": "qwen2-1m",
            "sft_steps": 1500,
            "N": 8,
            "G": 8,
            "steps": 100,
            "eval_every": 20,
            "eval_size": 100,
            "seeds": [0, 1, 2],
        },
        # (e) clean start (benchmarks/learning_clean.py): the task's presets as they are, 3 RL seeds
        "clean": {"task": "strings", "seeds": [0, 1, 2], "sft_seeds": [0, 0, 0], "evals": 4, "steps": None},
        "scale": {
            "sizes": ["qwen2-1m", "qwen2-4m", "qwen2-10m", "qwen2-30m"],
            "lengths": [32, 128, 256],
            "groups": [4, 16, 32],
            "N": 2,
            "steps": 1,
        },
    },
    "quick": {
        "gen": {"model": "qwen2-4m", "batch_sizes": [1, 16], "new_tokens": 32, "repeats": 1},
        "grpo": {"sizes": ["qwen2-4m"], "N": 4, "G": 4, "L": 16, "steps": 2},
        "ppo": {"size": "qwen2-1m", "B": 16, "L": 16, "epochs": 2, "updates": 2},
        "roof": {"sizes": [512, 1024], "seconds": 0.5},
        "learn": {
            "size": "qwen2-1m",
            "sft_steps": 150,
            "N": 4,
            "G": 4,
            "steps": 6,
            "eval_every": 3,
            "eval_size": 50,
            "seeds": [0],
        },
        "clean": {"task": "strings", "seeds": [0], "sft_seeds": [0], "evals": 2, "steps": {"grpo": 20, "ppo": 10}},
        "scale": {"sizes": ["qwen2-1m", "qwen2-4m"], "lengths": [16, 32], "groups": [4, 8], "N": 2, "steps": 1},
    },
    "smoke": {
        "gen": {"model": "qwen2-1m", "batch_sizes": [2], "new_tokens": 4, "repeats": 1},
        "grpo": {"sizes": ["qwen2-1m"], "N": 2, "G": 2, "L": 4, "steps": 1},
        "ppo": {"size": "qwen2-1m", "B": 8, "L": 4, "epochs": 1, "updates": 1},
        "roof": {"sizes": [128], "seconds": 0.05},
        "learn": {
            "size": "qwen2-1m",
            "sft_steps": 2,
            "N": 2,
            "G": 2,
            "steps": 1,
            "eval_every": 1,
            "eval_size": 4,
            "seeds": [0],
        },
        "clean": {
            "task": "strings",
            "seeds": [0],
            "sft_seeds": [0],
            "evals": 1,
            "steps": {"sft": 2, "grpo": 1, "ppo": 1},
        },
        "scale": {"sizes": ["qwen2-1m"], "lengths": [4], "groups": [2], "N": 2, "steps": 1},
    },
}
LR, BETA, KL_COEF, VF_COEF = 1e-5, 0.04, 0.05, 0.1
# The sides of (b) and (c): key → (venv, spec changes). Defaults differ — rewardloop trains without activation
# checkpointing, TRL with it (its configs default gradient_checkpointing=True) — so each side also runs with the
# other's setting, and both with bf16 autocast (rewardloop: model.autocast=bfloat16; TRL: bf16=True).
SIDES: dict[str, tuple[str, dict[str, Any]]] = {
    "ours": ("main", {}),
    "ours_gc": ("main", {"gradient_checkpointing": True}),
    "ours_bf16": ("main", {"bf16": True}),
    "trl": ("trl", {}),
    "trl_nogc": ("trl", {"gradient_checkpointing": False}),
    "trl_bf16": ("trl", {"bf16": True}),
}
# GRPO also without its default micro-batching (micro_batch_size=null: the update's forward/backward in one pass).
GRPO_SIDES = {**SIDES, "ours_onepass": ("main", {"micro_batch_size": None})}
LEARN_LR = 3e-4


class Runner:
    """Runs workers as subprocesses (one per measurement, so peak RSS is that side's alone)."""

    def __init__(self, out: Path, threads: int, timeout: float, verbose: bool, clock: str = "wall") -> None:
        self.out, self.threads, self.timeout, self.verbose, self.clock = out, threads, timeout, verbose, clock
        self.models = out / "models"

    def have(self, venv: str) -> bool:
        return VENVS[venv].exists() and (VENVS[venv].parent.parent / ".installed").exists() if venv != "main" else True

    def worker(self, module: str, spec: dict[str, Any], venv: str = "main") -> dict[str, Any]:
        """Run ``python -m benchmarks.<module> <spec>`` in ``venv``; its result, or {"error": ...}."""
        spec = {"threads": self.threads, **spec}
        cmd = [str(VENVS[venv]), "-m", f"benchmarks.{module}", json.dumps(spec)]
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": str(self.threads),
            "BENCH_CLOCK": self.clock,
        }
        t0 = time.perf_counter()
        if self.verbose:
            print(f"[bench] {venv}: {module} {json.dumps(spec)[:160]}", file=sys.stderr, flush=True)
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {self.timeout:.0f} s"}
        result = parse_result(proc.stdout)
        if proc.returncode != 0 or result is None:
            return {"error": f"exit {proc.returncode}: {(proc.stderr or proc.stdout)[-1500:]}"}
        result["wall_seconds"] = time.perf_counter() - t0
        return result

    def model_dir(self, preset: str) -> Path:
        from benchmarks.models import build_model_dir

        return build_model_dir(preset, self.models)

    def data_file(self) -> Path:
        """Arithmetic train/test rows (the `arithmetic` task's own split) for the TRL workers."""
        path = self.out / "arithmetic.json"
        if not path.exists():
            from rewardloop.envs.tasks import TaskConfig, load_task

            task = load_task(TaskConfig())
            pick = lambda rows: [{"prompt": r["prompt"], "answer": r["answer"]} for r in rows]  # noqa: E731
            path.write_text(json.dumps({"train": pick(task.train), "test": pick(task.test)}))
        return path


def steady(xs: list[float]) -> float:
    """Median of the per-step times after the first (warm-up) step; the only step when there is one."""
    return statistics.median(xs[1:] if len(xs) > 1 else xs)


# ------------------------------------------------------------------------------------------------------------------
# Sections
# ------------------------------------------------------------------------------------------------------------------


def section_a(r: Runner, m: dict) -> dict:
    g = m["gen"]
    spec = {
        "model_dir": str(r.model_dir(g["model"])),
        "batch_sizes": g["batch_sizes"],
        "prompt_len": 16,
        "new_tokens": g["new_tokens"],
        "repeats": g["repeats"],
        "seed": 0,
    }
    return {"model": g["model"], **r.worker("gen_worker", spec)}


def grpo_spec(r: Runner, preset: str, N: int, G: int, L: int, steps: int, **extra) -> dict:
    return {
        "model_dir": str(r.model_dir(preset)),
        "data": str(r.data_file()),
        "prompts_per_step": N,
        "group_size": G,
        "max_new_tokens": L,
        "beta": BETA,
        "lr": LR,
        "steps": steps,
        "seed": 0,
        "eval_tokens": 8,
        "out_dir": str(r.out / "runs"),
        **extra,
    }


def summarize_steps(res: dict, per_step: int, key: str = "step_seconds") -> dict:
    if "error" in res or "skipped" in res:
        return res
    s = steady(res[key])
    return {**res, "seconds_per_step": s, "items_per_s": per_step / s}


def run_sides(
    r: Runner, sides: dict, ours_spec: dict, trl: tuple[str, str, dict], per_step: int, key: str
) -> dict[str, dict]:
    """Every side of ``sides``: rewardloop with ``ours_spec``, TRL's ``(worker, venv, spec)``; summarised per step."""
    trl_worker, trl_venv, trl_spec = trl
    out = {}
    for side, (venv, change) in sides.items():
        if venv == "main":
            out[side] = summarize_steps(r.worker("ours_worker", ours_spec | change), per_step)
        elif r.have(trl_venv):
            out[side] = summarize_steps(r.worker(trl_worker, trl_spec | change, trl_venv), per_step, key)
        else:
            out[side] = {"skipped": f"benchmarks/.venv-{trl_venv} missing: run `bash benchmarks/setup_trl_envs.sh`"}
    return out


def section_b(r: Runner, m: dict) -> dict:
    g, out = m["grpo"], {}
    for preset in g["sizes"]:
        spec = grpo_spec(r, preset, g["N"], g["G"], g["L"], g["steps"])
        trl = ("trl_grpo_worker", "trl", spec)
        sides = run_sides(r, GRPO_SIDES, {"algo": "grpo", **spec}, trl, g["N"] * g["G"], "step_seconds")
        out[preset] = {**sides, "N": g["N"], "G": g["G"], "L": g["L"], "steps": g["steps"]}
    return out


def section_c(r: Runner, m: dict) -> dict:
    from benchmarks.models import build_score_model_dir

    p = m["ppo"]
    policy = r.model_dir(p["size"])
    value = build_score_model_dir(policy, r.models, f"{p['size']}-value", seed=1)
    reward = build_score_model_dir(policy, r.models, f"{p['size']}-reward", seed=2)
    common = {
        "batch_size": p["B"],
        "max_new_tokens": p["L"],
        "epochs": p["epochs"],
        "kl_coef": KL_COEF,
        "vf_coef": VF_COEF,
        "lr": LR,
        "seed": 0,
        "out_dir": str(r.out / "runs"),
    }
    ours = {"algo": "ppo", "model_dir": str(policy), "reward_dir": str(reward), "steps": p["updates"], **common}
    trl = {
        "policy_dir": str(policy),
        "value_dir": str(value),
        "reward_dir": str(reward),
        "data": str(r.data_file()),
        "updates": p["updates"],
        **common,
    }
    sides = run_sides(r, SIDES, ours, ("trl_ppo_worker", "trl112", trl), p["B"], "update_seconds")
    return {"model": p["size"], "B": p["B"], "L": p["L"], "epochs": p["epochs"], "updates": p["updates"], **sides}


def section_d(r: Runner, m: dict, results: dict) -> dict:
    from benchmarks.flops import grpo_phase_flops, mfu, ppo_phase_flops
    from benchmarks.models import count_params

    roof = r.worker("roofline_worker", {"sizes": m["roof"]["sizes"], "seconds": m["roof"]["seconds"]})
    if "error" in roof:
        return {"roofline": roof}
    peak = roof["fp32"]["peak_gflops"]
    phases: dict[str, Any] = {}
    prompt_len = mean_prompt_tokens(r)
    # fp32 runs against the fp32 peak, bf16-autocast runs against the bf16 peak
    sides = (("ours", "", peak), ("ours_bf16", " bf16", roof["bf16"]["peak_gflops"]))
    for preset, b in (results.get("b") or {}).items():
        for side, suffix, side_peak in sides:
            ours = b.get(side) if isinstance(b, dict) else None
            if not ours or "phases" not in ours:
                continue
            n = count_params(r.model_dir(preset))
            resp = statistics.mean(ours["response_tokens"])
            flops = grpo_phase_flops(n, b["N"] * b["G"], prompt_len, resp, with_ref=BETA > 0)
            secs = {k: steady(v) for k, v in ours["phases"].items()}
            phases[f"grpo {preset}{suffix}"] = mfu(flops, secs, side_peak)
    c = results.get("c") or {}
    for side, suffix, side_peak in sides:
        if "phases" in c.get(side, {}):
            n = count_params(r.model_dir(c["model"]))
            resp = statistics.mean(c[side]["response_tokens"])
            flops = ppo_phase_flops(n, c["B"], prompt_len, resp, c["epochs"])
            secs = {k: steady(v) for k, v in c[side]["phases"].items()}
            phases[f"ppo {c['model']}{suffix}"] = mfu(flops, secs, side_peak)
    a = results.get("a")
    if a and "rows" in a:
        for row in a["rows"]:
            g = 2 * a["params"] * row["ours"]["tokens_per_s"] / 1e9
            phases[f"generation {a['model']} batch {row['batch']}"] = {
                "decode": {"gflops": g, "mfu": g / peak, "seconds": row["ours"]["seconds"]}
            }
    return {"roofline": roof, "peak_fp32_gflops": peak, "prompt_tokens": prompt_len, "mfu": phases}


def mean_prompt_tokens(r: Runner, preset: str = "qwen2-1m", n: int = 1000) -> float:
    """Mean token count of the arithmetic training prompts (the P in the FLOP counts)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(r.model_dir(preset))
    rows = json.loads(r.data_file().read_text())["train"][:n]
    return statistics.mean(len(tok(row["prompt"])["input_ids"]) for row in rows)


def section_e(r: Runner, m: dict) -> dict:
    lm = m["learn"]
    base = sft_base(r, lm["size"], lm["sft_steps"])
    common = {
        "model_dir": str(base),
        "data": str(r.data_file()),
        "prompts_per_step": lm["N"],
        "group_size": lm["G"],
        "max_new_tokens": 8,
        "beta": BETA,
        "lr": LEARN_LR,
        "steps": lm["steps"],
        "eval_every": lm["eval_every"],
        "eval_size": lm["eval_size"],
        "eval_tokens": 8,
        "out_dir": str(r.out / "runs"),
    }
    curves: dict[str, list] = {k: [] for k in ("rewardloop GRPO", "rewardloop PPO", "TRL GRPO")}
    curves |= {"rewardloop GRPO bf16": [], "rewardloop PPO bf16": []}  # the bf16 autocast learning-curve check
    for seed in lm["seeds"]:
        spec = {**common, "seed": seed}
        ppo = {**spec, "algo": "ppo", "batch_size": lm["N"] * lm["G"], "epochs": 1, "kl_coef": BETA, "vf_coef": VF_COEF}
        for bf16, suffix in ((False, ""), (True, " bf16")):
            curves["rewardloop GRPO" + suffix].append(r.worker("ours_worker", {"algo": "grpo", **spec, "bf16": bf16}))
            curves["rewardloop PPO" + suffix].append(r.worker("ours_worker", {**ppo, "bf16": bf16}))
        if r.have("trl"):
            curves["TRL GRPO"].append(r.worker("trl_grpo_worker", spec, "trl"))
    if not curves["TRL GRPO"]:
        curves["TRL GRPO"] = [{"skipped": "benchmarks/.venv-trl missing"}]
    from benchmarks.learning_clean import run as clean_start  # imports this module: not at the top

    clean = m["clean"]
    return {
        "base": str(base),
        "hyper": {k: v for k, v in common.items() if k not in ("data", "out_dir")},
        "curves": {k: [c.get("curve", c) for c in v] for k, v in curves.items()},
        "clean": clean_start(
            r, clean["task"], clean["seeds"], clean["sft_seeds"], clean["evals"], steps=clean["steps"]
        ),
    }


def sft_base(r: Runner, preset: str, steps: int) -> Path:
    """Our SFT model on arithmetic whose demonstrations are 70% careless ("85."; exact match wants "85"): it has
    learned the sums but mostly answers in the rejected format — a start that RL measurably improves, for every
    learning curve (tests/conftest.py's `sft_arithmetic_careless` is the same recipe)."""
    target = r.models / f"{preset}-sft{steps}-careless"
    if (target / "config.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rewardloop.algorithms.sft import SFTConfig, train
    from rewardloop.config import ModelConfig, RunConfig
    from rewardloop.envs.tasks import TaskConfig
    from rewardloop.models import save_model

    cfg = SFTConfig(
        model=ModelConfig(path=str(r.model_dir(preset)), device="cpu", max_length=32),
        task=TaskConfig(name="arithmetic", demo_error=0.7),
        steps=steps,
        eval_every=steps,
        eval_size=50,
        run=RunConfig(root=str(r.out / "runs"), progress=False),
    )
    res = train(cfg)
    d = Path(res["model_dir"])
    save_model(AutoModelForCausalLM.from_pretrained(d), AutoTokenizer.from_pretrained(d), target)
    return target


def section_f(r: Runner, m: dict) -> dict:
    s = m["scale"]
    points = []
    G0 = 8 if 8 in s["groups"] else s["groups"][0]
    L0 = 32 if 32 in s["lengths"] else s["lengths"][0]
    grid = [("size", p, {"preset": p, "G": G0, "L": L0}) for p in s["sizes"]]
    grid += [
        ("length", L, {"preset": "qwen2-4m" if "qwen2-4m" in s["sizes"] else s["sizes"][0], "G": G0, "L": L})
        for L in s["lengths"]
    ]
    grid += [
        ("group", G, {"preset": "qwen2-4m" if "qwen2-4m" in s["sizes"] else s["sizes"][0], "G": G, "L": L0})
        for G in s["groups"]
    ]
    for axis, value, p in grid:
        spec = grpo_spec(r, p["preset"], s["N"], p["G"], p["L"], s["steps"])
        res = r.worker("ours_worker", {"algo": "grpo", **spec})
        row = {"axis": axis, "value": value, "preset": p["preset"], "G": p["G"], "L": p["L"], "N": s["N"]}
        if "error" in res:
            points.append({**row, "error": res["error"]})
            continue
        row |= {
            "seconds_per_step": steady(res["step_seconds"]),
            "phases": {k: steady(v) for k, v in res["phases"].items()},
            "peak_rss_mb": res["peak_rss_mb"],
        }
        points.append(row)
    return {"points": points, "steps": s["steps"]}


# ------------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="smaller sizes / fewer steps (a few minutes)")
    mode.add_argument("--smoke", action="store_true", help="one step of everything (CI)")
    ap.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections to run, e.g. a,d")
    ap.add_argument("--out", default=str(BENCH / "out"), help="work directory (models, runs, results.json)")
    ap.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads for every worker")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per worker process")
    ap.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="time steps by wall clock, or by worker CPU time (use with --threads 1 on a shared machine)",
    )
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in only if s not in SECTIONS]
    if bad:
        ap.error(f"--only: unknown section(s) {bad}; allowed: {','.join(SECTIONS)}")
    mode_name = "smoke" if args.smoke else "quick" if args.quick else "full"
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    runner = Runner(out, args.threads, args.timeout, not args.quiet, args.clock)
    command = "python -m benchmarks.run_all " + " ".join(argv if argv is not None else sys.argv[1:])
    results: dict[str, Any] = {
        "command": command.strip(),
        "mode": mode_name,
        "machine": machine_info() | {"torch_threads": args.threads},
        "clock": args.clock,
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }
    m = MODES[mode_name]
    previous = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
    previous = {k: v for k, v in previous.items() if k in SECTIONS}  # --only: the other sections' latest results
    sections = {"a": section_a, "b": section_b, "c": section_c, "e": section_e, "f": section_f}
    for key in sorted(only, key=lambda s: "abcfed".index(s)):  # d last: it reads the phase times of a, b and c
        t0, load0 = time.perf_counter(), os.getloadavg()[0]
        res = section_d(runner, m, previous | results) if key == "d" else sections[key](runner, m)
        results[key] = res if isinstance(res, dict) else {"value": res}
        results[key]["_meta"] = {
            "seconds": round(time.perf_counter() - t0, 1),
            "load_avg_1m": [round(load0, 2), round(os.getloadavg()[0], 2)],
        }
        (out / "results.partial.json").write_text(json.dumps(results, indent=1))  # survives a crash in a later section
        if not args.quiet:
            print(f"[bench] section {key} done in {results[key]['_meta']['seconds']} s", file=sys.stderr, flush=True)
    from benchmarks.report import targets, write_docs

    latest = previous | results
    results["targets"] = targets(latest)
    (out / "results.json").write_text(json.dumps(latest | {"targets": results["targets"]}, indent=1))
    if not args.no_docs:
        write_docs(results, ROOT / "docs" / "benchmarks.md", ROOT / "docs" / "benchmarks")
        if "e" in results:  # (e)'s clean-start part has its own block
            from benchmarks.learning_clean import publish

            meta = results["e"]["_meta"]
            info = {k: results[k] for k in ("command", "date", "machine")}
            publish(results["e"]["clean"] | info | {"seconds": meta["seconds"], "load": meta["load_avg_1m"]})
    print(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
