"""The Environment protocol (DESIGN.md §3) and the adapter from a prompt dataset + reward function.

An environment hands the policy an observation (prompt text or chat messages), takes the generated text as the
action, and returns ``(next_observation, reward, done, info)``. Single-turn tasks are one-step environments.
Environments never import training code: a server or a Ray worker can drive them too.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from rewardloop.types import Message as Message  # re-exported: the environment's side of the contract
from rewardloop.types import Observation

RewardFn = Callable[..., list[float]]  # reward(prompts, completions, **columns) -> list[float]


@runtime_checkable
class Environment(Protocol):
    """reset() → first observation; step(action_text) → (observation | None, reward, done, info)."""

    def reset(self, *, seed: int | None = None) -> Observation: ...

    def step(self, action: str) -> tuple[Observation | None, float, bool, dict]: ...


@dataclass
class Example:
    """One row of a task split: the prompt, the reference answer and any extra columns a reward needs."""

    prompt: str
    answer: str = ""
    columns: dict[str, Any] = field(default_factory=dict)

    def as_row(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "answer": self.answer, **self.columns}


class DatasetEnv:
    """A single-turn environment over a list of rows: reset() samples a row, step(text) scores it and ends.

    ``reward_fn`` follows the RewardFn convention and receives the row's other columns as keyword lists.
    """

    def __init__(self, rows: Sequence[dict[str, Any]], reward_fn: RewardFn, *, seed: int = 0) -> None:
        if not rows:
            raise ValueError("DatasetEnv needs at least one row")
        self.rows = list(rows)
        self.reward_fn = reward_fn
        self._rng = random.Random(seed)
        self._row: dict[str, Any] | None = None

    def reset(self, *, seed: int | None = None) -> Observation:
        if seed is not None:
            self._rng.seed(seed)
        self._row = self.rows[self._rng.randrange(len(self.rows))]
        return self._row["prompt"]

    def step(self, action: str) -> tuple[Observation | None, float, bool, dict]:
        if self._row is None:
            raise RuntimeError("call reset() before step()")
        row, self._row = self._row, None
        columns = {k: [v] for k, v in row.items() if k != "prompt"}
        reward = float(self.reward_fn([row["prompt"]], [action], **columns)[0])
        return None, reward, True, {"row": row}
