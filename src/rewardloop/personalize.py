"""``rewardloop personalize``: run and compare slate policies on a personalization environment, with plots.

    rewardloop personalize env=feed steps=3000 seeds=5 out=runs/personalize
    rewardloop personalize env=search 'policies=[random, linucb, oracle]'
    rewardloop personalize 'policies=[lm, linucb]' train.rounds=10          # train the LM slate policy, compare
    rewardloop personalize 'policies=[random]' steps=3 fairness_model=runs/rm/final

Each policy runs ``steps`` steps on each seed (new users as sessions end, learning online through
``algorithms.bandits.run_bandit``). Normalised regret is exact: Σ_t (oracle_t − π_t) / Σ_t (oracle_t − random_t),
each term the simulator's expected step reward of the best, the shown and a uniformly random slate in the state the
policy reached (0 = oracle, 1 = random). Also CTR, watch time, session length, intra-list diversity, catalogue
coverage, provider exposure Gini and the expected-reward gap between user groups. Prints a markdown table; with
``out``, writes ``results.json`` and ``regret.png`` there. See docs/guides/personalization.md.

``lm`` trains the language-model slate policy first (``algorithms.slate_pg``, the ``train`` section) on training
users, then evaluates it frozen; ``lm-online`` trains the same way, then ranks by a LinUCB posterior on the trained
head's features that starts from the training logs and updates online (``slate_pg.NeuralLinearPolicy``, the
``online`` section); ``lm-tuned`` is ``lm-online`` with the LM's own weights trained by the same loss
(``algorithms.slate_lm``, ``train.lm_lr``); ``lm-untrained`` is the LM's own log-probability scores. ``fairness_model`` adds the
matched-pair fairness report of a reward model (``eval.fairness``) on feed texts.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from rewardloop.algorithms.bandits import BASELINES, LinUCB, OraclePolicy, joint_features, make_policy, run_bandit
from rewardloop.algorithms.slate_lm import LMTuner
from rewardloop.algorithms.slate_pg import (
    LMSlatePolicy,
    NeuralLinearConfig,
    NeuralLinearPolicy,
    SlatePGConfig,
    lm_states,
    load_lm,
    train,
)
from rewardloop.config import Section
from rewardloop.envs.personalization import FeedConfig, FeedEnv, PlaylistConfig, PlaylistEnv, SearchConfig, SearchEnv
from rewardloop.eval.metrics import (
    catalogue_coverage,
    ctr,
    gini,
    group_disparity,
    intra_list_diversity,
    mean_watch_time,
    normalised_regret,
    provider_exposure,
    session_lengths,
)

LM_POLICIES = ("lm-untrained", "lm", "lm-online", "lm-tuned")
POLICIES = (*BASELINES, *LM_POLICIES, "oracle")
ENVS = {"feed": (FeedEnv, FeedConfig), "playlist": (PlaylistEnv, PlaylistConfig), "search": (SearchEnv, SearchConfig)}
COLUMNS = ("regret", "regret_last_third", "mean_reward", "ctr", "watch_s", "session_steps", "coverage", "exposure_gini", "group_gap")  # fmt: skip


class PersonalizeConfig(Section):
    """``rewardloop personalize``: compare policies on ``env`` (docs/guides/personalization.md)."""

    env: Literal["feed", "playlist", "search"] = Field("feed", description="feed | playlist | search")
    policies: list[str] = Field(
        [p for p in POLICIES if p not in LM_POLICIES], description=f"any of {', '.join(POLICIES)}"
    )
    steps: int = Field(3000, ge=3, description="steps per policy and seed")
    seeds: int = Field(5, ge=1)
    out: str | None = Field(None, description="folder for results.json and regret.png")
    train: SlatePGConfig = Field(default_factory=SlatePGConfig, description="training of the `lm` policy")
    online: NeuralLinearConfig = Field(
        default_factory=NeuralLinearConfig, description="the online layer of `lm-online` (trained as `lm`)"
    )
    fairness_model: str | None = Field(None, description="a reward model: print its matched-pair fairness report")
    fairness_steps: int = Field(200, ge=1, description="feed steps whose (context, item) texts form the pairs")

    @field_validator("policies")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        if unknown := [p for p in v if p not in POLICIES]:
            raise ValueError(f"unknown policy {unknown[0]!r}; known: {', '.join(POLICIES)}")
        if not v:
            raise ValueError("name at least one policy")
        return v


def make_env(env_name: str):
    env_cls, config_cls = ENVS[env_name]
    return env_cls(config_cls())


def run_policy(env_name: str, name: str, steps: int, seed: int, lm: dict | None = None) -> dict[str, Any]:
    """One policy on one seed of ``env_name``: its metrics and the cumulative normalised-regret curve. ``lm``: the
    language model, tokenizer, trained head and training config for the ``lm`` / ``lm-untrained`` policies."""
    env = make_env(env_name)
    env.reset(seed=seed)
    dim = joint_features(*env.numeric()).shape[1]
    if name == "oracle":
        policy = OraclePolicy(env)
    elif name == "lm":  # the trained policy, frozen: it does not update during the evaluation
        policy = lm["cfg"].policy(lm["model"], lm["tokenizer"], lm["head"], explore=False)
    elif name in ("lm-online", "lm-tuned"):  # a trained head's features + a LinUCB posterior from its logs, online
        trained = lm["tuned"] if name == "lm-tuned" else lm  # lm-tuned: the LM's own weights were trained too
        online, reader = (
            lm["online"],
            lm["cfg"].policy(trained["model"], lm["tokenizer"], trained["head"], explore=False),
        )
        bandit = LinUCB(online.dim, alpha=online.alpha, lam=online.lam)
        policy = NeuralLinearPolicy(reader, trained["head"], online, bandit, trained["logs"])
    elif name == "lm-untrained":  # the LM's own log-probabilities of the item texts, Plackett–Luce at T = 1
        policy = LMSlatePolicy(lm["model"], lm["tokenizer"])
    else:
        policy = make_policy(name, dim)
    return evaluate(env, policy, steps, seed)


def evaluate(env, policy, steps: int, seed: int) -> dict[str, Any]:
    """Run ``policy`` on ``env`` for ``steps`` steps from ``seed`` (``run_bandit``) and measure it."""
    start, cpu = time.perf_counter(), time.process_time()
    log = run_bandit(env, policy, steps, seed=seed)
    seconds, cpu_s = time.perf_counter() - start, time.process_time() - cpu
    value, oracle, rand = (np.array([r[k] for r in log]) for k in ("expected_reward", "oracle_reward", "random_reward"))
    third = steps // 3
    curve = np.cumsum(oracle - value) / np.maximum(np.cumsum(oracle - rand), 1e-12)
    examination = getattr(env, "examination", np.ones(env.slates.shape[1]))  # position weights of exposure
    exposure = provider_exposure([r["items"] for r in log], env.catalogue.providers, env.catalogue.n_providers, examination)  # fmt: skip
    return {
        "regret": normalised_regret(value.sum(), oracle.sum(), rand.sum()),
        "regret_last_third": normalised_regret(value[-third:].sum(), oracle[-third:].sum(), rand[-third:].sum()),
        "mean_reward": float(np.mean([r["reward"] for r in log])),
        "ctr": ctr([r["clicked"] for r in log]),
        "watch_s": mean_watch_time([r["events"] for r in log]),
        "session_steps": float(np.mean(session_lengths([r["done"] for r in log]) or [steps])),
        "diversity": float(np.mean([intra_list_diversity(r["features"][r["slate"]]) for r in log])),
        "coverage": catalogue_coverage([r["items"] for r in log], len(env.catalogue)),
        "exposure_gini": gini(exposure),
        "group_gap": group_disparity(value.tolist(), [r["group"] for r in log])["gap"],
        "seconds": seconds,
        "cpu_s": cpu_s,
        "curve": curve[:: max(1, steps // 200)].tolist(),
    }


def train_lm(cfg: PersonalizeConfig) -> dict[str, Any]:
    """The LM (``cfg.train.model``) and, when ``lm`` or ``lm-online`` is compared, its scoring head (and the
    training logs) trained on simulated users whose seeds (``train.user_seed`` + round) differ from the evaluation
    users' (0 .. seeds − 1)."""
    from rewardloop.models import build_tokenizer

    tokenizer = build_tokenizer()
    model = load_lm(cfg.train, tokenizer)
    lm: dict[str, Any] = {"model": model, "tokenizer": tokenizer, "cfg": cfg.train, "online": cfg.online}
    lm |= {"head": None, "history": [], "logs": []}
    if {"lm", "lm-online"} & set(cfg.policies):
        lm["head"], lm["history"], lm["logs"] = train(cfg.train, model, tokenizer, lambda: make_env(cfg.env))
    if "lm-tuned" in cfg.policies:
        lm["tuned"] = train_tuned(cfg, tokenizer)
    return lm


def train_tuned(cfg: PersonalizeConfig, tokenizer) -> dict[str, Any]:
    """``lm-tuned``: a fresh copy of the LM whose own weights the slate policy gradient trains with the head
    (``slate_lm.LMTuner``, ``train.lm_lr``); the logged steps are then read again by the trained LM (the prior)."""
    if cfg.train.read != "towers":
        raise ValueError(f"lm-tuned needs train.read=towers (the LM reads each text alone), got {cfg.train.read!r}")
    tuner = LMTuner(load_lm(cfg.train, tokenizer), tokenizer, lm_states)
    head, history, logs = train(cfg.train, tuner.model, tokenizer, lambda: make_env(cfg.env), tuner=tuner)
    model = tuner.freeze()
    tuner.refresh(logs)
    return {"model": model, "head": head, "history": history, "logs": logs}


def compare(cfg: PersonalizeConfig) -> dict[str, Any]:
    """Every policy × seed; per metric the mean and sd over seeds, and the regret curves (and the LM's training)."""
    lm = train_lm(cfg) if set(cfg.policies) & set(LM_POLICIES) else None
    runs = {
        name: [run_policy(cfg.env, name, cfg.steps, seed, lm) for seed in range(cfg.seeds)] for name in cfg.policies
    }
    summary = {
        name: {
            k: (float(np.mean([r[k] for r in rs])), float(np.std([r[k] for r in rs]))) for k in rs[0] if k != "curve"
        }
        for name, rs in runs.items()
    }
    curves = {name: [r["curve"] for r in rs] for name, rs in runs.items()}
    result = {"env": cfg.env, "steps": cfg.steps, "seeds": cfg.seeds, "summary": summary, "curves": curves}
    for key, trained in (("train", lm), ("train_tuned", (lm or {}).get("tuned"))):
        if trained and trained["history"]:
            last = trained["history"][-1]
            result[key] = {"history": trained["history"], "cpu_s": last["cpu_s"], "steps": last["steps"], "config": cfg.train.model_dump()}  # fmt: skip
    return result


def table(result: dict[str, Any]) -> str:
    s = result["summary"]
    lines = [
        f"{result['env'].capitalize()}, {result['steps']} steps × {result['seeds']} seeds (mean ± sd over seeds)",
        "",
        "| policy | " + " | ".join(COLUMNS) + " |",
        "|---|" + "---:|" * len(COLUMNS),
    ]
    for name in s:
        lines.append(f"| {name} | " + " | ".join(f"{s[name][c][0]:.3f} ± {s[name][c][1]:.3f}" for c in COLUMNS) + " |")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> Path:
    """Cumulative normalised regret per policy (mean over seeds) → ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    every = max(1, result["steps"] // 200)
    for name, curves in result["curves"].items():
        mean = np.mean(curves, axis=0)
        ax.plot(np.arange(len(mean)) * every, mean, label=name)
    title = f"{result['env'].capitalize()}: cumulative regret (mean over seeds)"
    ax.set(xlabel="step", ylabel="cumulative normalised regret", title=title)
    ax.axhline(1.0, color="grey", lw=0.5)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def feed_texts(steps: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """(context, item text) rows from ``steps`` feed steps under a random policy: each candidate against its context."""
    env, rng = FeedEnv(), np.random.default_rng(seed)
    env.reset(seed=seed)
    prompts, responses = [], []
    for _ in range(steps):
        context, items = env.context()
        prompts += [context] * len(items)
        responses += items
        slate = rng.choice(len(items), size=env.cfg.slate_size, replace=False)
        _, _, done, _ = env.step(" ".join(env.candidate_ids[i] for i in slate))
        if done:
            env.reset()
    return prompts, responses


def fairness(cfg: PersonalizeConfig) -> list[dict]:
    """The matched-pair fairness report of ``cfg.fairness_model`` on feed texts (``eval.fairness``), printed."""
    from rewardloop.eval.fairness import fairness_report
    from rewardloop.rewards.model import RewardModelScorer

    report = fairness_report(RewardModelScorer(cfg.fairness_model), *feed_texts(cfg.fairness_steps))
    print(
        "\n| attribute | a | b | gap r(a) − r(b) | 95 % CI | share a higher | pairs |\n|---|---|---|---:|---|---:|---:|"
    )
    for r in report:
        print(f"| {r['attribute']} | {r['a']} | {r['b']} | {r['gap']:.4f} | [{r['lo']:.4f}, {r['hi']:.4f}] | {r['share_a_higher']:.3f} | {r['n']} |")  # fmt: skip
    return report


def run(cfg: PersonalizeConfig, resume: bool = False) -> dict[str, Any]:
    """The ``rewardloop personalize`` command (``resume`` is ignored: runs are minutes long)."""
    result = compare(cfg)
    print(table(result))
    for key, what in (("train", "lm"), ("train_tuned", "lm-tuned (head + the LM's weights)")):
        if key in result:
            t = result[key]
            print(f"\n{what}: trained on {t['steps']} steps of simulated users ({t['cpu_s']:.0f} CPU-s)")
    if cfg.fairness_model:
        result["fairness"] = fairness(cfg)
    out = {"env": cfg.env, "regret": {name: s["regret"][0] for name, s in result["summary"].items()}}
    if cfg.out:
        folder = Path(cfg.out)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "results.json").write_text(json.dumps(result, indent=1))
        out |= {"results": str(folder / "results.json"), "plot": str(plot(result, folder / "regret.png"))}
    return out
