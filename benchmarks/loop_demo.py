"""The feedback loop end to end, measured: simulated users → server → store → `rewardloop loop` rounds → promotion.

    python -m benchmarks.loop_demo [--rounds 3] [--session 330] [--out docs/guides/img/loop.png] [--json F]

1. SFT a small model on the `reviews` task (300 steps; its samples are the users' starting point);
2. serve it (`create_app` with `serve.follow_registry`, uvicorn on loopback, a SQLite store);
3. each round: a population of 8 simulated users sends `--session` two-sample requests through the `openai` client and
   posts which answer they prefer by their hidden utility (the reviews gold score, 10 % random choices); a loop round
   trains a DPO candidate on the new pairs and promotes it if a trusted reward (`reviews_gold` on 128 samples of
   held-out prompts) rises; the server swaps to it; the users' hidden reward of the served model is measured on 128
   samples through the server;
4. then one round of poisoned feedback (users who report the opposite of their preference) — the gate must refuse it —
   and a rollback to the previous version.

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


def simulate(work: Path, model_dir: str, rounds: int = 3, session: int = 330, poison: bool = True) -> dict[str, Any]:
    """Run the loop on ``model_dir`` for ``rounds`` rounds (+ a poisoned one and a rollback); every round's record."""
    from rewardloop.loop import LoopConfig, run_round
    from rewardloop.loop.users import UserPopulation
    from rewardloop.serve import ServeConfig, create_app
    from rewardloop.serve.background import BackgroundServer
    from rewardloop.store import Store
    from rewardloop.store.rounds import LoopState

    url = f"sqlite:///{work / 'loop.db'}"
    model = {"path": model_dir, "max_length": 96}
    cfg = LoopConfig.model_validate({**LOOP, "store": {"url": url}, "model": model, "root": str(work / "rounds")})
    scfg = ServeConfig.model_validate(
        {"model": model, "serve": {"model_name": "reviews", "follow_registry": True, "registry_poll_seconds": 0.5}}
    )
    out: dict[str, Any] = {"rounds": []}
    with Store.open(url) as store:
        app = create_app(scfg, store=store)
        server = BackgroundServer(app).start()
        try:
            users = UserPopulation(server.url, "reviews", n_users=8, noise=0.1, seed=0)
            out["hidden_reward_start"] = users.hidden_reward(128)
            for _ in range(rounds):
                t0 = time.monotonic()
                sent = users.session(session)
                record = run_round(cfg, store)
                swap_s = wait_for_version(app, record["candidate"]) if record["status"] == "promoted" else None
                hidden = users.hidden_reward(128)
                out["rounds"].append(
                    {**_summary(record), "feedback": sent, "hidden_reward": hidden, "swap_s": swap_s}
                    | {"seconds": time.monotonic() - t0}
                )
            if poison:
                serving = LoopState(store).serving()["name"]
                liars = UserPopulation(server.url, "reviews", n_users=8, noise=0.0, flip=True, seed=1)
                sent = liars.session(session)
                record = run_round(cfg, store)
                out["poisoned"] = {**_summary(record), "feedback": sent, "serving_after": LoopState(store).serving()}
                out["poisoned"]["serving_unchanged"] = out["poisoned"]["serving_after"]["name"] == serving
                parent = LoopState(store).rollback()
                out["rollback"] = {"serving": parent["name"], "swap_s": wait_for_version(app, parent["name"])}
            out["unused_feedback"] = sum(f["round_id"] is None for f in store.feedback_since(0))
        finally:
            server.stop()
    return out


def _summary(record: dict[str, Any]) -> dict[str, Any]:
    m = record["metrics"]
    keep = ("improvement", "heldout_accuracy", "reward_parent", "reward_candidate", "train_rows")
    head = {"round": record["id"], "status": record["status"], "candidate": record["candidate"]}
    return head | {k: m.get(k) for k in keep} | {"alarm": "alarm" in m}


def table(result: dict[str, Any]) -> str:
    lines = [
        "| round | feedback | decision | trusted reward: serving → candidate | held-out accuracy | users' hidden "
        "reward after |",
        "|---|---|---|---|---|---|",
        f"| start | – | – | – | – | {result['hidden_reward_start']:.3f} |",
    ]
    rows = [(str(r["round"]), r, f"{r['hidden_reward']:.3f}") for r in result["rounds"]]
    if "poisoned" in result:
        rows.append((f"{result['poisoned']['round']} (poisoned)", result["poisoned"], "–"))
    for label, r, hidden in rows:
        lines.append(
            f"| {label} | {r['feedback']} | {r['status']} | {r['reward_parent']:.3f} → {r['reward_candidate']:.3f} | "
            f"{r['heldout_accuracy']:.3f} | {hidden} |"
        )
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = result["rounds"]
    xs = list(range(len(rounds) + 1))
    ys = [result["hidden_reward_start"]] + [r["hidden_reward"] for r in rounds]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.plot(xs, ys, marker="o", color="#1a5fb4", label="users' hidden reward of the served model")
    for x, r in zip(xs[1:], rounds, strict=True):
        ax.annotate(r["status"], (x, ys[x]), textcoords="offset points", xytext=(0, 8), ha="center", fontsize=8)
    if "poisoned" in result:
        p = result["poisoned"]
        ax.scatter([len(rounds) + 1], [p["reward_candidate"]], marker="x", color="#c01c28", label="poisoned candidate")
        ax.annotate(p["status"], (len(rounds) + 1, p["reward_candidate"]), xytext=(0, 8), textcoords="offset points")
    ax.set_xlabel("round")
    ax.set_ylabel("gold reward (−1 … 1)")
    ax.set_title("rewardloop loop: simulated users → DPO rounds → gated promotion")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--session", type=int, default=330, help="two-sample requests (feedback items) per round")
    ap.add_argument("--out", default="docs/guides/img/loop.png")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t0 = time.monotonic()
        result = simulate(work, sft_reviews(work / "sft"), rounds=args.rounds, session=args.session)
        result["seconds"] = time.monotonic() - t0
    print(json.dumps(result, indent=1, default=str))
    print(table(result))
    plot(result, Path(args.out))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
