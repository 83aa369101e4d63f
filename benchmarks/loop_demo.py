"""The feedback loop end to end, measured: simulated users → server → store → `rewardloop loop` rounds → promotion.

    python -m benchmarks.loop_demo [--algo dpo|kto|ratings|engagement] [--rounds 3] [--session 330]
                                   [--personas] [--out docs/guides/img/loop.png] [--json F]

1. SFT a small model on the `reviews` task (300 steps; its samples are the users' starting point);
2. serve it (`create_app` with `serve.follow_registry`, uvicorn on loopback, a SQLite store);
3. each round: a population of 8 simulated users (`--personas`: four tastes, two users each — balanced = the gold
   reward, critic, fan, skimmer; `loop/users.py`) sends `--session` requests through the `openai` client and gives the
   feedback `--algo` learns from: pairwise choices (dpo), thumbs (kto), 1–5 ratings (ratings), or engagement events
   on one of two samples shown uniformly, logged with propensity ½ (engagement); a loop round trains a candidate
   (DPO / KTO, or a reward model on the ratings / engagement and GRPO against it) and promotes it if a trusted reward
   (`reviews_gold` on 128 samples of held-out prompts) rises — for engagement also only if the off-policy (SNIPS)
   estimate of its engagement on the held-out logged events is not below the serving model's by more than the
   tolerance; the server swaps to it; the users' hidden reward of the served model is measured on 128 samples
   through the server (per persona and for the mix);
4. then one round of bad feedback — the gate must refuse it: poisoned users who report the opposite of their
   preference, or, for engagement, an outrage population that engages most with the most negative reviews, which the gold reward penalises
   (an engagement-hacking candidate: proxy up, gold down) — and a rollback to the previous version.

Prints one JSON document (every round's metrics) and a markdown table; writes a plot of the hidden reward and the
decisions per round to `--out`. `tests/integration/test_loop.py` runs `simulate` and asserts on it (slow tier).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

LOOP = {
    "min_events": 300,
    "heldout_fraction": 0.15,
    "trainer": {"steps": 40, "optim.lr": 1e-4, "optim.warmup_steps": 5, "eval_every": 40, "eval_size": 20},
    "gate": {"reward": "reviews_gold", "n_prompts": 128, "margin": 0.0},
}
# Ratings / engagement: a reward model on the round's feedback, then GRPO against it (samples as the users see them).
REWARD_THEN_GRPO = {
    "heldout_fraction": 0.25,
    "reward_trainer": {"steps": 150, "batch_size": 32, "eval_every": 150, "optim.warmup_steps": 10},
    "trainer": {
        "steps": 30,
        "prompts_per_step": 8,
        "group_size": 4,
        "optim.lr": 1e-4,
        "kl_coef": 0.05,
        "gen.max_new_tokens": 40,
        "gen.stop": ["\n"],
        "eval_every": 30,
        "eval_size": 14,
    },
}
ALGO_CONFIG = {
    "dpo": {},
    "kto": {},
    "ratings": REWARD_THEN_GRPO,
    "engagement": REWARD_THEN_GRPO | {"gate": LOOP["gate"] | {"ope": "snips", "ope_tolerance": 0.25}},
}
FEEDBACK = {"dpo": "pairwise", "kto": "thumbs", "ratings": "rating", "engagement": "engagement"}


def sft_reviews(root: Path, steps: int = 300) -> str:
    from rewardloop.algorithms.sft import SFTConfig, train
    from rewardloop.config import load_config

    overrides = ["task.name=reviews", f"steps={steps}", f"eval_every={steps}", "eval_size=20", "model.max_length=96"]
    overrides += ["gen.max_new_tokens=40", f"run.root={root}", "run.name=sft", "run.progress=false"]
    return str(train(load_config(SFTConfig, None, overrides))["model_dir"])


def wait_for_version(app, name: str, timeout_s: float = 120.0) -> float:
    """Seconds until the server serves ``name`` (it follows the registry)."""
    start = time.monotonic()
    while app.state.server.live[1] != name:
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"the server did not swap to {name} within {timeout_s} s")
        time.sleep(0.1)
    return time.monotonic() - start


def simulate(
    work: Path,
    model_dir: str,
    rounds: int = 3,
    session: int = 330,
    poison: bool = True,
    algo: str = "dpo",
    personas: bool = False,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the loop on ``model_dir`` for ``rounds`` rounds of ``algo`` (+ a bad-feedback round and a rollback);
    ``overrides`` replace top-level keys of the loop config (e.g. a smaller ``trainer`` for a test)."""
    from rewardloop.loop import LoopConfig, run_round
    from rewardloop.loop.users import BALANCED, OUTRAGE, PERSONAS, UserPopulation
    from rewardloop.serve import ServeConfig, create_app
    from rewardloop.serve.background import BackgroundServer
    from rewardloop.store import Store
    from rewardloop.store.rounds import LoopState

    url = f"sqlite:///{work / 'loop.db'}"
    model = {"path": model_dir, "max_length": 96}
    loop = LOOP | ALGO_CONFIG[algo] | {"algo": algo, "store": {"url": url}, "model": model}
    loop |= {"root": str(work / "rounds")} | (overrides or {})
    cfg = LoopConfig.model_validate(loop)
    scfg = ServeConfig.model_validate(
        {"model": model, "serve": {"model_name": "reviews", "follow_registry": True, "registry_poll_seconds": 0.5}}
    )
    kind, tastes = FEEDBACK[algo], (BALANCED, *PERSONAS) if personas else (BALANCED,)
    out: dict[str, Any] = {"algo": algo, "personas": [p.name for p in tastes], "ope": cfg.gate.ope, "rounds": []}
    with Store.open(url) as store:
        app = create_app(scfg, store=store)
        server = BackgroundServer(app).start()
        try:
            users = UserPopulation(server.url, "reviews", n_users=8, noise=0.1, personas=tastes, seed=0)
            out["hidden_start"] = users.hidden_rewards(128)
            out["hidden_reward_start"] = out["hidden_start"]["mix"]
            for _ in range(rounds):
                t0 = time.monotonic()
                sent = users.session(session, kind)
                record = run_round(cfg, store)
                swap_s = wait_for_version(app, record["candidate"]) if record["status"] == "promoted" else None
                hidden = users.hidden_rewards(128)
                out["rounds"].append(
                    {**_summary(record), "feedback": sent, "hidden_reward": hidden["mix"], "hidden": hidden}
                    | {"swap_s": swap_s, "seconds": time.monotonic() - t0}
                )
            if poison:
                serving = LoopState(store).serving()["name"]
                if algo == "engagement":  # engagement hacking: users who engage with what the gold reward penalises
                    bad = UserPopulation(server.url, "reviews", n_users=8, personas=(OUTRAGE,), seed=1)
                else:  # poisoned: users who report the opposite of what they prefer
                    bad = UserPopulation(server.url, "reviews", n_users=8, noise=0.0, flip=True, seed=1)
                sent = bad.session(session, kind)
                record = run_round(cfg, store)
                out["poisoned"] = {**_summary(record), "feedback": sent, "serving_after": LoopState(store).serving()}
                out["poisoned"]["serving_unchanged"] = out["poisoned"]["serving_after"]["name"] == serving
                if LoopState(store).serving()["parent_id"] is not None:
                    parent = LoopState(store).rollback()
                    out["rollback"] = {"serving": parent["name"], "swap_s": wait_for_version(app, parent["name"])}
            out["unused_feedback"] = sum(f["round_id"] is None for f in store.feedback_since(0))
        finally:
            server.stop()
    return out


def _summary(record: dict[str, Any]) -> dict[str, Any]:
    m = record["metrics"]
    keep = ("improvement", "heldout_accuracy", "reward_parent", "reward_candidate", "train_rows")
    keep += ("ope_serving", "ope_candidate", "ope_lo", "ope_hi", "ope_pass")
    head = {"round": record["id"], "status": record["status"], "candidate": record["candidate"]}
    return head | {k: m.get(k) for k in keep} | {"alarm": "alarm" in m}


def table(result: dict[str, Any]) -> str:
    ope = any("ope_candidate" in r and r["ope_candidate"] is not None for r in result["rounds"])
    personas = [p for p in result.get("personas", []) if len(result.get("personas", [])) > 1]
    head = ["round", "feedback", "decision", "trusted reward: serving → candidate", "held-out accuracy"]
    method = result.get("ope", "snips").upper()
    head += [f"engagement ({method}): serving → candidate [90 % CI]"] * ope + ["users' hidden reward after"]
    head += [f"{p} after" for p in personas]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    start = result.get("hidden_start", {"mix": result["hidden_reward_start"]})
    lines.append("| start | – | – | – | – |" + " – |" * ope + f" {start['mix']:.3f} |" + _cells(start, personas))
    rows = [(str(r["round"]), r, r.get("hidden")) for r in result["rounds"]]
    if "poisoned" in result:
        label = "engagement-hacking" if result.get("algo") == "engagement" else "poisoned"
        rows.append((f"{result['poisoned']['round']} ({label})", result["poisoned"], None))
    for label, r, hidden in rows:
        cells = [label, str(r["feedback"]), r["status"] + " (alarm)" * r["alarm"]]
        cells += [f"{r['reward_parent']:.3f} → {r['reward_candidate']:.3f}", f"{r['heldout_accuracy']:.3f}"]
        if ope:
            cells.append(f"{r['ope_serving']:.2f} → {r['ope_candidate']:.2f} [{r['ope_lo']:.2f}, {r['ope_hi']:.2f}]")
        cells.append(f"{hidden['mix']:.3f}" if hidden else "–")
        lines.append("| " + " | ".join(cells) + " |" + (_cells(hidden, personas) if hidden else " – |" * len(personas)))
    return "\n".join(lines)


def _cells(hidden: dict[str, float], personas: list[str]) -> str:
    return "".join(f" {hidden[p]:.3f} |" for p in personas)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = result["rounds"]
    xs = list(range(len(rounds) + 1))
    ys = [result["hidden_reward_start"]] + [r["hidden_reward"] for r in rounds]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.plot(xs, ys, marker="o", color="#1a5fb4", label="users' hidden reward of the served model")
    for name in result.get("personas", [])[1:] if len(result.get("personas", [])) > 1 else []:
        per = [result["hidden_start"][name]] + [r["hidden"][name] for r in rounds]
        ax.plot(xs, per, lw=0.8, ls="--", alpha=0.7, label=name)
    for x, r in zip(xs[1:], rounds, strict=True):
        ax.annotate(r["status"], (x, ys[x]), textcoords="offset points", xytext=(0, 8), ha="center", fontsize=8)
    if "poisoned" in result:
        p = result["poisoned"]
        bad = "engagement-hacking" if result.get("algo") == "engagement" else "poisoned"
        ax.scatter([len(rounds) + 1], [p["reward_candidate"]], marker="x", color="#c01c28", label=f"{bad} candidate")
        ax.annotate(p["status"], (len(rounds) + 1, p["reward_candidate"]), xytext=(0, 8), textcoords="offset points")
    ax.set_xlabel("round")
    ax.set_ylabel("hidden reward (−1 … 1)")
    learner = {"dpo": "DPO", "kto": "KTO", "ratings": "ratings → RM → GRPO", "engagement": "engagement → RM → GRPO"}
    ax.set_title(f"simulated users → {learner[result.get('algo', 'dpo')]} rounds → gated promotion", fontsize=10)
    ax.set_xticks(range(len(rounds) + 1 + ("poisoned" in result)))
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--algo", choices=sorted(FEEDBACK), default="dpo")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--session", type=int, default=330, help="requests (feedback items or shown answers) per round")
    ap.add_argument("--personas", action="store_true", help="four tastes instead of the gold reward alone")
    ap.add_argument("--out", default="docs/guides/img/loop.png")
    ap.add_argument("--json", default=None)
    ap.add_argument("--model", default=None, help="start from this SFT model directory instead of training one")
    ap.add_argument("--ope", choices=["snips", "dr"], default="snips", help="engagement: the gate's OPE estimator")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)  # the server's engine thread and the trainer share the CPUs
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t0 = time.monotonic()
        model = args.model or sft_reviews(work / "sft")
        gate = {"gate": ALGO_CONFIG["engagement"]["gate"] | {"ope": args.ope}} if args.algo == "engagement" else {}
        result = simulate(
            work, model, args.rounds, args.session, algo=args.algo, personas=args.personas, overrides=gate
        )
        result["seconds"] = time.monotonic() - t0
    print(json.dumps(result, indent=1, default=str))
    print(table(result))
    plot(result, Path(args.out))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
