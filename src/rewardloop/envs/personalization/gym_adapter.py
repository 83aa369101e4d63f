"""The personalization environments behind the Gymnasium API, for bandit / RL libraries (Ray RLlib included).

``reset(seed=, options=)`` → ``(obs, info)``; ``step(a)`` → ``(obs, reward, terminated, truncated, info)``. The
observation is the text observation's public content as numbers — the user context followed by the K candidates'
features, flattened into a ``Box`` in [0, 1] — and the action is a ``Discrete`` index into every ordered slate of
the candidate positions (``env.slates``), so no action can be malformed. This module is the only one importing
``gymnasium``: the environments themselves do not need it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np


class GymAdapter(gym.Env):
    """Wrap a FeedEnv / PlaylistEnv / SearchEnv (anything with ``numeric``, ``slates``, ``candidate_ids``)."""

    metadata: ClassVar[dict] = {"render_modes": []}

    def __init__(self, env: Any) -> None:
        self.env = env
        env.reset(seed=0)
        context, feats = env.numeric()
        self._dim = context.size + feats.size
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(self._dim,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(len(env.slates))

    def _obs(self) -> np.ndarray:
        context, feats = self.env.numeric()
        return np.concatenate([context, feats.ravel()]).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        text = self.env.reset(seed=seed)
        return self._obs(), {"text": text}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is not in Discrete({self.action_space.n})")
        slate = self.env.slates[int(action)]
        text, reward, done, info = self.env.step(" ".join(self.env.candidate_ids[i] for i in slate))
        obs = np.zeros(self._dim, dtype=np.float32) if text is None else self._obs()
        return obs, float(reward), bool(done), False, info
