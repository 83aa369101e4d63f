"""Several reward terms as one weighted sum, with every component kept for the logs.

In a config, ``rewards:`` is a list of ``RewardSpec`` (a built-in name or plug-in path, a weight and keyword
arguments); ``build_rewards`` turns it plus the task's own reward into the ``{name: fn}`` / ``{name: weight}`` pair
that ``rollout.collect`` and ``score_completions`` take (they log each component as ``reward/<name>``).
``weighted_sum`` is the same composite as a single RewardFn, for callers that want one function.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from pydantic import Field

from rewardloop.config import Section
from rewardloop.rewards.registry import RewardFn, resolve_reward


class RewardSpec(Section):
    """One reward term: ``fn`` (built-in name, ``pkg.mod:fn`` or ``path/file.py:fn``), weight, keyword arguments."""

    fn: str = Field(description="built-in name (see rewards.BUILTIN_REWARDS), 'pkg.module:fn' or 'file.py:fn'")
    name: str | None = Field(None, description="component name in the logs (default: the function's name)")
    weight: float = 1.0
    kwargs: dict[str, Any] = Field(default_factory=dict, description="fixed keyword arguments (e.g. pattern)")

    def label(self) -> str:
        return self.name or self.fn.rpartition(":")[2] or self.fn


def bind(fn: RewardFn, kwargs: dict[str, Any]) -> RewardFn:
    """``fn`` with fixed keyword arguments (a named partial, so logs and errors still show the function name)."""
    if not kwargs:
        return fn
    bound = functools.partial(fn, **kwargs)
    functools.update_wrapper(bound, fn)
    return bound


def build_rewards(
    specs: list[RewardSpec], task_reward: RewardFn | None, task_weight: float = 1.0
) -> tuple[dict[str, RewardFn], dict[str, float]]:
    """``({"task": task_reward, <label>: fn, ...}, {name: weight})``; the task term is left out when its weight is 0
    or the task has no reward. Raises ValueError on duplicate labels or when no reward term remains."""
    fns: dict[str, RewardFn] = {}
    weights: dict[str, float] = {}
    if task_reward is not None and task_weight != 0:
        fns["task"], weights["task"] = task_reward, task_weight
    for i, spec in enumerate(specs):
        label = spec.label()
        if label in fns:
            raise ValueError(f"rewards[{i}]: component name {label!r} is used twice; set `name:` to tell them apart")
        fns[label], weights[label] = bind(resolve_reward(spec.fn), spec.kwargs), spec.weight
    if not fns:
        raise ValueError("no reward: the task has none (or task_reward_weight is 0) and `rewards:` is empty")
    return fns, weights


def weighted_sum(terms: dict[str, tuple[RewardFn, float]]) -> Callable[..., list[float]]:
    """One RewardFn r = Σ_k w_k · r_k(prompts, completions, **columns); ``fn.last_components`` holds the last call's
    per-component values ``{name: [B]}`` so a caller can log them."""

    def composite(prompts: list[str], completions: list[str], **columns: Any) -> list[float]:
        comps = {name: [float(v) for v in fn(prompts, completions, **columns)] for name, (fn, _) in terms.items()}
        composite.last_components = comps
        return [sum(terms[k][1] * comps[k][i] for k in terms) for i in range(len(completions))]

    composite.last_components = {}
    return composite
