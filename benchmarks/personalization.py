"""Personalization baselines: normalised regret of the bandit baselines on the feed, and the Vowpal Wabbit sanity gate.

    python -m benchmarks.personalization [--steps 3000] [--seeds 5] [--vw-iterations 5000] [--plots DIR] [--lm]

``--lm`` adds the language-model slate policy: untrained (its own log-probabilities), RL-trained
(``algorithms.slate_pg``: ``--train-rounds`` rounds of ``--train-steps-per-round`` steps on training users, reading
the ``--train-context``, then evaluated frozen on the same evaluation users as the baselines) and ``lm-online`` (the
same trained head, then a neural-linear LinUCB on its features, prior from the training logs, updated online).

1. Feed (default ``FeedConfig``: 200 items, K = 8 candidates, slates of L = 3), each baseline for ``--steps`` steps
   on each seed (new users as sessions end, the policy learning online). Normalised regret is exact:
   Σ_t (oracle_t − π_t) / Σ_t (oracle_t − random_t), where each term is the simulator's expected step reward of the
   best slate, of the shown slate and of a uniformly random slate in the state the policy reached. Also CTR, watch
   time, session length, catalogue coverage, provider exposure Gini and the expected-reward gap between user groups.
2. The sanity gate: Vowpal Wabbit's "Tom and Anna" news example (two users, two times of day, seven articles; each
   (user, time) likes one article) driven through our ``run_bandit`` harness with VW ``--cb_explore_adf``, ε = 0.2,
   with and without the ``-q UA`` interaction — VW's own tutorial reports CTR 0.780 and 0.410 over 5000 iterations
   (measured with vowpalwabbit 9.11.9) — and our LinUCB on the same problem. Needs ``pip install vowpalwabbit``.

Prints one JSON document and markdown tables; ``--plots DIR`` writes personalization_regret.png and
personalization_vw.png there.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from rewardloop.algorithms.bandits import (
    Choice,
    LinUCB,
    run_bandit,
)
from rewardloop.algorithms.slate_pg import SlatePGConfig
from rewardloop.envs.personalization.common import all_slates
from rewardloop.eval.metrics import ctr
from rewardloop.personalize import LM_POLICIES, PersonalizeConfig, compare, plot, table


# -- 1. the feed: rewardloop.personalize (the `rewardloop personalize` command) ---------------------------------
def feed_benchmark(steps: int, seeds: int, train: SlatePGConfig | None = None) -> dict:
    """Every baseline and the oracle; with ``train``, also the untrained and the RL-trained LM slate policies."""
    cfg = PersonalizeConfig(env="feed", steps=steps, seeds=seeds)
    if train is not None:
        lm = [p for p in LM_POLICIES if p != "lm-tuned"]  # lm-tuned needs its own, cheaper training settings
        cfg = cfg.model_copy(update={"policies": [*cfg.policies[:-1], *lm, "oracle"], "train": train})
    return compare(cfg)


# -- 2. the Vowpal Wabbit "Tom and Anna" gate -----------------------------------------------------------------------
USERS, TIMES = ("Tom", "Anna"), ("morning", "afternoon")
ARTICLES = ("politics", "sports", "music", "food", "finance", "health", "camping")
LIKES = {("Tom", "morning"): "politics", ("Tom", "afternoon"): "music", ("Anna", "morning"): "sports", ("Anna", "afternoon"): "politics"}  # fmt: skip


class NewsEnv:
    """The tutorial's problem behind the same interface as the feed (one-step sessions, a slate of one article):
    a uniformly random (user, time of day); reward 1 if the user likes the article shown, else 0."""

    def __init__(self) -> None:
        self.slates = all_slates(len(ARTICLES), 1)
        self.candidates = np.arange(len(ARTICLES))
        self.candidate_ids = list(ARTICLES)
        self.rng = np.random.default_rng()

    def reset(self, *, seed: int | None = None) -> str:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.user, self.time = USERS[self.rng.integers(2)], TIMES[self.rng.integers(2)]
        return f"user={self.user} time_of_day={self.time}"

    def numeric(self) -> tuple[np.ndarray, np.ndarray]:
        context = np.array([self.user == u for u in USERS] + [self.time == t for t in TIMES], dtype=float)
        return context, np.eye(len(ARTICLES))

    def step(self, action: str) -> tuple[None, float, bool, dict]:
        liked = LIKES[(self.user, self.time)] == action
        info = {"expected_reward": float(liked), "oracle_reward": 1.0, "random_reward": 1.0 / len(ARTICLES)}
        info |= {"group": self.user, "items": [ARTICLES.index(action)], "clicked": action if liked else None}
        return None, float(liked), True, info | {"events": [{"type": "click"}] if liked else []}


class VWPolicy:
    """Vowpal Wabbit ``--cb_explore_adf`` as a bandit policy: the shared context (the active one-hot names of the
    user and time) and one line per article; it samples from VW's pmf, logs that probability, learns with cost
    −reward, as the tutorial does."""

    def __init__(self, args: str) -> None:
        from vowpalwabbit import Workspace

        self.vw = Workspace(args + " --quiet")
        self.pmf: list[float] = []

    @staticmethod
    def _example(context: np.ndarray, label: tuple[int, float, float] | None = None) -> str:
        names = [f"user={u}" for u in USERS] + [f"time_of_day={t}" for t in TIMES]
        lines = ["shared |User " + " ".join(n for n, on in zip(names, context, strict=True) if on)]
        for i, article in enumerate(ARTICLES):
            prefix = f"0:{label[1]}:{label[2]} " if label and label[0] == i else ""
            lines.append(f"{prefix}|Action article={article}")
        return "\n".join(lines)

    def select(self, context, features, arms, size, rng) -> Choice:
        pmf = np.asarray(self.vw.predict(self._example(context)), dtype=float)
        a = int(rng.choice(len(pmf), p=pmf / pmf.sum()))
        self.pmf = pmf.tolist()
        return Choice(np.array([a]), float(pmf[a]))

    def finish(self) -> None:
        self.vw.finish()

    def update(self, context, features, arms, rewards) -> None:
        a = int(arms[0])
        self.vw.learn(self._example(context, (a, -float(rewards[0]), self.pmf[a])))


def vw_direct(args: str, iterations: int, seed: int) -> float:
    """The same problem in a plain loop that bypasses our harness (Python's ``random`` for the contexts and the
    draw from VW's pmf, as the tutorial does): the spread VW itself shows over seeds, to judge our harness by."""
    import random

    rnd, policy, clicks = random.Random(seed), VWPolicy(args), 0
    for _ in range(iterations):
        user, when = rnd.choice(USERS), rnd.choice(TIMES)
        context = np.array([user == u for u in USERS] + [when == t for t in TIMES], dtype=float)
        pmf = np.asarray(policy.vw.predict(policy._example(context)), dtype=float)
        a = min(int(np.searchsorted(np.cumsum(pmf / pmf.sum()), rnd.random(), side="right")), len(pmf) - 1)
        liked = LIKES[(user, when)] == ARTICLES[a]
        clicks += liked
        policy.pmf = pmf.tolist()
        policy.update(context, None, np.array([a]), np.array([float(liked)]))
    policy.finish()
    return clicks / iterations


VW_ARGS = {"vw -q UA": "--cb_explore_adf -q UA --epsilon 0.2", "vw (no interaction)": "--cb_explore_adf --epsilon 0.2"}
GATE_TOLERANCE = 0.03  # |our harness's mean CTR − the tutorial's| allowed


def vw_benchmark(iterations: int, seeds: int) -> dict:
    sides = {name: (lambda args=args: VWPolicy(args)) for name, args in VW_ARGS.items()}
    sides["ours: LinUCB"] = lambda: LinUCB(dim=4 * len(ARTICLES) + len(ARTICLES))
    out = {}
    for name, make in sides.items():
        ctrs, curves = [], []
        for seed in range(seeds):
            policy = make()
            log = run_bandit(NewsEnv(), policy, iterations, seed=seed)
            if isinstance(policy, VWPolicy):
                policy.finish()
            clicks = np.array([r["clicked"] is not None for r in log], dtype=float)
            ctrs.append(ctr([r["clicked"] for r in log]))
            curves.append((np.cumsum(clicks) / np.arange(1, iterations + 1))[:: max(1, iterations // 200)].tolist())
        out[name] = {"ctr": float(np.mean(ctrs)), "ctr_sd": float(np.std(ctrs)), "per_seed": ctrs, "curves": curves}
    reference = {"vw -q UA": 0.780, "vw (no interaction)": 0.410}
    direct = {name: [vw_direct(args, iterations, seed) for seed in range(seeds)] for name, args in VW_ARGS.items()}
    gate = all(abs(out[name]["ctr"] - ref) <= GATE_TOLERANCE for name, ref in reference.items())
    return {"iterations": iterations, "seeds": seeds, "reference": reference, "direct": direct, "gate_passed": gate, "sides": out}  # fmt: skip


# -- report ---------------------------------------------------------------------------------------------------------
def markdown(feed: dict, vw: dict | None) -> str:
    lines = table(feed).splitlines()
    if vw:
        lines += ["", f"Tom and Anna, {vw['iterations']} iterations × {vw['seeds']} seeds (gate ±{GATE_TOLERANCE}: {'passed' if vw['gate_passed'] else 'FAILED'})", ""]  # fmt: skip
        lines += [
            "| side | CTR, our harness | CTR, VW in a plain loop (min–max) | VW tutorial |",
            "|---|---:|---:|---:|",
        ]
        for name, side in vw["sides"].items():
            ref, direct = vw["reference"].get(name), vw["direct"].get(name)
            spread = f"{np.mean(direct):.3f} ({min(direct):.3f}–{max(direct):.3f})" if direct else "—"
            lines.append(
                f"| {name} | {side['ctr']:.3f} ± {side['ctr_sd']:.3f} | {spread} | {f'{ref:.3f}' if ref else '—'} |"
            )
    return "\n".join(lines)


def plots(feed: dict, vw: dict | None, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = [str(plot(feed, out / "personalization_regret.png"))]
    if vw:
        fig, ax = plt.subplots(figsize=(7, 4))
        every = max(1, vw["iterations"] // 200)
        for name, side in vw["sides"].items():
            mean = np.mean(side["curves"], axis=0)
            ax.plot(np.arange(len(mean)) * every + 1, mean, label=f"{name}: {side['ctr']:.3f}")
        ax.set(
            xlabel="iteration",
            ylabel="cumulative CTR",
            title="Tom and Anna (VW's news example), our harness",
            ylim=(0, 1),
        )
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "personalization_vw.png", dpi=110)
        written.append(str(out / "personalization_vw.png"))
    plt.close("all")
    return written


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--vw-iterations", type=int, default=5000)
    parser.add_argument("--vw-seeds", type=int, default=5)
    parser.add_argument("--lm", action="store_true", help="add the untrained, RL-trained and online LM slate policies")
    parser.add_argument("--train-rounds", type=int, default=SlatePGConfig().rounds)
    parser.add_argument("--train-steps-per-round", type=int, default=SlatePGConfig().steps_per_round)
    parser.add_argument("--train-context", choices=["all", "persona"], default="persona")
    parser.add_argument("--plots", type=Path, default=None, help="write the PNG plots into this folder")
    args = parser.parse_args(argv)
    train = SlatePGConfig(
        rounds=args.train_rounds, steps_per_round=args.train_steps_per_round, context=args.train_context
    )
    train = train if args.lm else None
    feed = feed_benchmark(args.steps, args.seeds, train)
    try:
        vw = vw_benchmark(args.vw_iterations, args.vw_seeds)
    except ImportError:
        vw = None  # vowpalwabbit is bench-only
    result = {"feed": feed, "vw": vw}
    if args.plots:
        result["plots"] = plots(feed, vw, args.plots)
    slim = {"feed": {k: v for k, v in feed.items() if k != "curves"}}
    slim["vw"] = vw and {
        **vw,
        "sides": {n: {k: v for k, v in s.items() if k != "curves"} for n, s in vw["sides"].items()},
    }
    print(json.dumps(slim, indent=1))
    print(markdown(feed, vw))
    return result


if __name__ == "__main__":
    main()
