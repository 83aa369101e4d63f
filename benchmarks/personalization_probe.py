"""How much of the feed's signal the frozen LM's states carry: a supervised ridge probe, not RL.

    python -m benchmarks.personalization_probe [--steps 3000] [--rank 32] [--context all|persona]

Logs ``--steps`` feed steps of users from seed 123 under a uniformly random policy; for every candidate records the
LM's states as ``LMSlatePolicy(read="towers")`` reads them and the simulator's exact single-slot value
y_i = P(click i | i alone) · E[r | click i]. Fits ridge regression on the first two thirds — on the bilinear features
[vec(z_x ⊗ z_i), z_i] of the rank-r whitened LM states (the scoring head's inputs), and on LinUCB's hand-made
features φ(x, i) — and ranks greedily on the last third: exact normalised regret of each probe. A bound on what the
head can reach from these states, separate from how efficiently policy gradient finds it.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from rewardloop.algorithms.bandits import joint_features, top
from rewardloop.algorithms.slate_pg import LMSlatePolicy, SlatePGConfig, load_lm
from rewardloop.envs.personalization import FeedEnv
from rewardloop.models import build_tokenizer


def log_states(steps: int, context: str = "all") -> dict:
    tokenizer = build_tokenizer()
    policy = LMSlatePolicy(load_lm(SlatePGConfig(), tokenizer), tokenizer, read="towers", context=context)
    env, rng = FeedEnv(), np.random.default_rng(0)
    env.reset(seed=123)
    out = {k: [] for k in ("h_x", "h_i", "y", "values", "phi")}
    for _ in range(steps):
        f = policy.features(*env.context())
        v, value = env.click_values()  # [K], [K]
        no_click = env.cfg.behaviour.no_click_utility
        out["h_x"].append(f.h_context), out["h_i"].append(f.h_items)
        out["y"].append(np.exp(v) / (np.exp(v) + np.exp(no_click)) * value)
        out["values"].append(env.slate_values()), out["phi"].append(joint_features(*env.numeric()))
        slate = rng.choice(env.cfg.n_candidates, env.cfg.slate_size, replace=False)
        _, _, done, _ = env.step(" ".join(env.candidate_ids[i] for i in slate))
        if done:
            env.reset()
    return {k: np.array(v) for k, v in out.items()} | {"slates": env.slates}


def whiten(h: np.ndarray, rank: int) -> np.ndarray:
    """(h − μ) P / σ on the top-``rank`` principal directions (as ``ScoringHead.fit_projection``). [N, d] → [N, r]"""
    _, _, vt = np.linalg.svd(h - h.mean(0), full_matrices=False)
    z = (h - h.mean(0)) @ vt[:rank].T
    return z / z.std(0)


def probe_regret(features: np.ndarray, d: dict, lam: float = 1.0) -> float:
    """Ridge on the first 2/3 of the steps, greedy top-L on the rest: exact normalised regret. features [N, K, D]"""
    n = 2 * len(features) // 3
    a, y = features[:n].reshape(-1, features.shape[-1]), d["y"][:n].reshape(-1)
    w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ y)
    size = d["slates"].shape[1]
    chosen = [np.flatnonzero((d["slates"] == top(s, size)).all(1))[0] for s in features[n:] @ w]
    values = d["values"][n:]
    value = values[np.arange(len(chosen)), chosen]
    return float((values.max(1) - value).sum() / (values.max(1) - values.mean(1)).sum())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--context", choices=["all", "persona"], default="all", help="what the LM reads as context")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    d = log_states(args.steps, args.context)
    n, k, dim = d["h_i"].shape
    z_x, z_i = whiten(d["h_x"], args.rank), whiten(d["h_i"].reshape(-1, dim), args.rank).reshape(n, k, args.rank)
    bilinear = np.concatenate([(z_x[:, None, :, None] * z_i[:, :, None, :]).reshape(n, k, -1), z_i], -1)
    result = {"steps": args.steps, "rank": args.rank, "context": args.context, "regret_lm_states": probe_regret(bilinear, d), "regret_linucb_features": probe_regret(d["phi"], d)}  # fmt: skip
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
