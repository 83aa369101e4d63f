"""The exploration–exploitation sweep of the language-model slate policy on the feed.

    python -m benchmarks.personalization_sweep [--steps 1000] [--seeds 2] [--rounds 20] [--plots DIR]

1. **Deployment**: one scoring head trained as in ``rewardloop personalize`` (``SlatePGConfig`` with ``--rounds``
   rounds of ``--steps-per-round`` steps on training users), then evaluated on users 0 .. seeds − 1 at Plackett–Luce
   temperature T ∈ ``TEMPERATURES`` (ε = 0) and at ε ∈ ``EPSILONS`` (T = eval temperature).
2. **Training**: the entropy bonus η ∈ ``ENTROPY`` — one head trained per η with ``--entropy-rounds`` rounds, each
   evaluated at the eval temperature.

Each point: exact normalised regret, intra-list diversity (mean pairwise cosine distance of a slate's public
features), catalogue coverage and provider exposure Gini. Prints JSON and a markdown table; ``--plots DIR`` writes
personalization_sweep.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from rewardloop.algorithms.slate_pg import LMSlatePolicy, SlatePGConfig, load_lm, train
from rewardloop.models import build_tokenizer
from rewardloop.personalize import evaluate, make_env

TEMPERATURES = (0.05, 0.2, 0.5, 1.0, 2.0)
EPSILONS = (0.0, 0.1, 0.3, 0.6)
ENTROPY = (0.0, 0.03, 0.3)
METRICS = ("regret", "diversity", "coverage", "exposure_gini")


def point(model, tokenizer, head, read: str, t: float, eps: float, steps: int, seeds: int) -> dict[str, float]:
    """One exploration setting, mean over evaluation users 0 .. seeds − 1."""
    policy = LMSlatePolicy(model, tokenizer, t, score_fn=head.score, epsilon=eps, read=read)
    runs = [evaluate(make_env("feed"), policy, steps, s) for s in range(seeds)]
    return {k: float(np.mean([r[k] for r in runs])) for k in METRICS}


def sweep(steps: int, seeds: int, cfg: SlatePGConfig, entropy_rounds: int) -> dict:
    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    model = load_lm(cfg, tokenizer)
    head, history, _ = train(cfg, model, tokenizer, lambda: make_env("feed"))
    args = (model, tokenizer, head, cfg.read)
    rows = [{"knob": "T", "value": t, **point(*args, t, 0.0, steps, seeds)} for t in TEMPERATURES]
    rows += [{"knob": "ε", "value": e, **point(*args, cfg.eval_temperature, e, steps, seeds)} for e in EPSILONS]
    for eta in ENTROPY:
        c = cfg.model_copy(update={"entropy_coef": eta, "rounds": entropy_rounds})
        h, _, _ = train(c, model, tokenizer, lambda: make_env("feed"))
        rows.append({"knob": "η", "value": eta, **point(model, tokenizer, h, c.read, c.eval_temperature, 0.0, steps, seeds)})  # fmt: skip
    return {
        "steps": steps,
        "seeds": seeds,
        "train": cfg.model_dump(),
        "train_cpu_s": history[-1]["cpu_s"],
        "rows": rows,
    }


def markdown(result: dict) -> str:
    lines = [
        f"Exploration sweep, feed, {result['steps']} steps × {result['seeds']} evaluation users per point",
        "",
        "| knob | value | " + " | ".join(METRICS) + " |",
        "|---|---:|" + "---:|" * len(METRICS),
    ]
    lines += [f"| {r['knob']} | {r['value']} | " + " | ".join(f"{r[m]:.3f}" for m in METRICS) + " |" for r in result["rows"]]  # fmt: skip
    return "\n".join(lines)


def plot(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for knob, marker in (("T", "o"), ("ε", "s"), ("η", "^")):
        rows = [r for r in result["rows"] if r["knob"] == knob]
        for ax, x in zip(axes, ("diversity", "coverage"), strict=True):
            ax.plot([r[x] for r in rows], [r["regret"] for r in rows], marker=marker, label=knob)
            for r in rows:
                ax.annotate(f"{knob}={r['value']}", (r[x], r["regret"]), fontsize=7)
    for ax, x in zip(axes, ("intra-list diversity", "catalogue coverage"), strict=True):
        ax.set(xlabel=x, ylabel="normalised regret")
        ax.legend(fontsize=8)
    fig.suptitle("LM slate policy on the feed: exploration vs regret")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=SlatePGConfig().rounds)
    parser.add_argument("--steps-per-round", type=int, default=SlatePGConfig().steps_per_round)
    parser.add_argument("--entropy-rounds", type=int, default=8)
    parser.add_argument("--plots", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg = SlatePGConfig(rounds=args.rounds, steps_per_round=args.steps_per_round)
    result = sweep(args.steps, args.seeds, cfg, args.entropy_rounds)
    if args.plots:
        result["plot"] = str(plot(result, args.plots / "personalization_sweep.png"))
    print(json.dumps(result, indent=1))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
