"""Driving a slate policy through a personalization environment: ``run_bandit`` (one loop for the bandit baselines
and the language-model policy), the ``Choice`` a policy returns, and the helpers every slate policy shares.

A policy has ``select(context, features, arms, size, rng) → Choice`` on the numeric view (``env.numeric()``) or
``select_text(context, items, size, rng) → Choice`` on the text (``env.context()``), and
``update(context, features, arms, rewards)`` with one reward per shown position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class Choice:
    slate: np.ndarray  # [L] candidate positions, best first
    propensity: float  # P(this ordered slate | context) under the policy


def n_slates(k: int, size: int) -> int:
    """Ordered slates of ``size`` out of ``k``: k! / (k − size)!."""
    return math.perm(k, size)


def top(scores: np.ndarray, size: int) -> np.ndarray:
    """The ``size`` best positions, best first; ties go to the lower position (stable). [K] → [L]"""
    return np.argsort(-scores, kind="stable")[:size]


def position_rewards(reward: float, info: dict, size: int) -> np.ndarray:
    """The step reward credited to each shown position: the clicked one (feed), the clicks in equal shares
    (search), or the single track (playlist). [L]"""
    out = np.zeros(size)
    if info.get("position") is not None:
        out[info["position"]] = reward
    elif "clicks" in info and sum(info["clicks"]) > 0:
        clicks = np.asarray(info["clicks"], dtype=float)
        out = reward * clicks / clicks.sum()
    elif size == 1:
        out[0] = reward
    return out


def run_bandit(env, policy, steps: int, seed: int = 0) -> list[dict]:
    """Drive ``policy`` on ``env`` for ``steps`` steps (new users as sessions end), updating it online.

    One record per step: the logged context, candidate features and arms, the shown slate and its propensity, the
    reward, and the simulator's exact expected reward of the shown, the oracle's and the random slate.
    """
    rng = np.random.default_rng([seed, 1])  # the policy's own stream: never the environment's (seeded with ``seed``)
    env.reset(seed=seed)
    size = env.slates.shape[1]
    log = []
    for _ in range(steps):
        context, features = env.numeric()
        arms = np.asarray(env.candidates)
        if hasattr(policy, "select_text"):  # a language-model policy reads the text: context and candidates
            choice = policy.select_text(*env.context(), size, rng)
        else:
            choice = policy.select(context, features, arms, size, rng)
        _, reward, done, info = env.step(" ".join(env.candidate_ids[i] for i in choice.slate))
        per_position = position_rewards(reward, info, size)
        policy.update(context, features[choice.slate], arms[choice.slate], per_position)
        log.append(
            {"context": context, "features": features, "arms": arms, "slate": choice.slate, "propensity": choice.propensity,
             "reward": reward, **{k: info[k] for k in ("expected_reward", "oracle_reward", "random_reward", "group", "items")},
             "clicked": info.get("clicked"), "events": info["events"], "done": done}
        )  # fmt: skip
        if done:
            env.reset()
    return log
