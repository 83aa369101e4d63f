"""One reward section for every trainer: reward terms as one weighted sum, with every component kept for the logs.

In a config, ``rewards:`` is a list of ``RewardSpec`` (a function — built-in name, plug-in path or callable — or a
reward model, with a weight and keyword arguments); ``build_rewards`` turns it plus the task's own reward into a
``RewardSet`` that ``rollout.collect`` and evaluation score with (each component logged as ``reward/<name>``).
``weighted_sum`` is the same composite as a single RewardFn, for callers that want one function.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import Field, field_serializer, model_validator

from rewardloop.config import Section
from rewardloop.rewards.registry import RewardFn, resolve_reward
from rewardloop.rewards.scoring import OnError, ScoredBatch, score_completions


def bind(fn: RewardFn, kwargs: dict[str, Any]) -> RewardFn:
    """``fn`` with fixed keyword arguments (a named partial, so logs and errors still show the function name)."""
    if not kwargs:
        return fn
    bound = functools.partial(fn, **kwargs)
    functools.update_wrapper(bound, fn)
    return bound


class RewardSpec(Section):
    """One reward term: a function (``fn``) or a reward model (``model``), its weight and keyword arguments.

    ``fn``: a built-in name, ``pkg.mod:fn``, ``path/file.py:fn`` or (Python API) a callable with TRL's signature.
    ``model``: a reward-model directory (rewardloop's or any HF sequence-classification model with one label), an
    ensemble directory or a list of directories, scored by ``rewards.model.RewardModelScorer``.
    """

    fn: str | Callable[..., Any] | None = Field(
        None, description="built-in name (see rewards.BUILTIN_REWARDS), 'pkg.module:fn', 'file.py:fn' or a callable"
    )
    model: str | list[str] | None = Field(None, description="reward-model dir, ensemble dir, or a list of dirs")
    uncertainty_penalty: float = Field(0.0, ge=0.0, description="model ensembles: λ in mean − λ·std")
    normalize: bool = Field(True, description="model: (r − μ) / σ with the statistics saved with the model")
    name: str | None = Field(None, description="component name in the logs (default: the function's name or 'rm')")
    weight: float = 1.0
    kwargs: dict[str, Any] = Field(default_factory=dict, description="fixed keyword arguments (e.g. pattern)")

    @model_validator(mode="after")
    def _one_source(self) -> RewardSpec:
        if (self.fn is None) == (self.model is None):
            raise ValueError("a reward spec needs exactly one of `fn` (a reward function) or `model` (a reward model)")
        return self

    @field_serializer("fn")
    def _fn_name(self, fn: Any) -> str | None:
        return fn if fn is None or isinstance(fn, str) else f"{fn.__module__}:{getattr(fn, '__qualname__', fn)}"

    def label(self) -> str:
        if self.name:
            return self.name
        if self.model is not None:
            return "rm"
        if callable(self.fn):
            return getattr(self.fn, "__name__", type(self.fn).__name__)
        return self.fn.rpartition(":")[2] or self.fn

    def build(self, device: str = "auto") -> RewardFn:
        """The reward function this spec names, with its kwargs bound."""
        if self.model is not None:
            from rewardloop.rewards.model import cached_scorer

            return cached_scorer(
                self.model, device, uncertainty_penalty=self.uncertainty_penalty, normalize=self.normalize
            )
        return bind(resolve_reward(self.fn), self.kwargs)


class RewardSection(Section):
    """The reward section every RL trainer and evaluation shares (one code path: ``build_rewards`` → RewardSet)."""

    rewards: list[RewardSpec] = Field(
        default_factory=list, description="reward terms (functions or reward models) added to the task's own"
    )
    task_reward_weight: float = Field(1.0, description="weight of the task's own reward (0 = only `rewards`)")
    on_reward_error: OnError = Field(
        "skip", description="a sample whose reward raises / is NaN / hangs: skip|zero|abort"
    )
    reward_timeout: float | None = Field(60.0, gt=0.0, description="seconds per reward call (None = no deadline)")

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        """The old PPO ``reward:`` section: say what replaced each key instead of 'unknown key'."""
        if isinstance(data, dict) and isinstance(data.get("reward"), dict) and "reward" not in cls.model_fields:
            raise ValueError(
                "the `reward:` section was replaced by top-level keys: reward.functions → rewards: [{fn: NAME}], "
                "reward.model → rewards: [{model: DIR, uncertainty_penalty: λ}], reward.weights → each spec's "
                "`weight`, reward.on_error → on_reward_error, reward.env → env, reward.max_turns → max_turns, "
                "reward.missing_eos_penalty / normalize / clip → score.missing_eos_penalty / normalize / clip"
            )
        return data


@dataclass
class RewardSet:
    """The reward terms of a run: ``score`` gives r = Σ_k w_k · r_k with every component, failures handled per
    ``on_error``, each call bounded by ``timeout`` (see ``rewards.scoring``)."""

    fns: dict[str, RewardFn]
    weights: dict[str, float]
    on_error: OnError = "skip"
    timeout: float | None = None

    def score(
        self,
        prompts: list[Any],
        completions: list[Any],
        columns: dict[str, list] | None = None,
        completion_ids: list[list[int]] | None = None,
    ) -> ScoredBatch:
        return score_completions(
            self.fns, prompts, completions, columns, self.weights, self.on_error, self.timeout, completion_ids
        )

    def model_stats(self) -> dict[str, dict[str, Any]]:
        """{name: {"mean", "std"} [B]} of the reward-model terms' last call (ensemble spread)."""
        return {k: f.last_stats for k, f in self.fns.items() if getattr(f, "last_stats", None)}


def build_rewards(
    specs: list[RewardSpec],
    task_reward: RewardFn | None,
    task_weight: float = 1.0,
    *,
    on_error: OnError = "skip",
    timeout: float | None = None,
    device: str = "auto",
) -> RewardSet:
    """The task's reward (named ``"task"``, left out when its weight is 0 or the task has none) plus each spec.
    Raises ValueError on duplicate labels or when no reward term remains."""
    fns: dict[str, RewardFn] = {}
    weights: dict[str, float] = {}
    if task_reward is not None and task_weight != 0:
        fns["task"], weights["task"] = task_reward, task_weight
    for i, spec in enumerate(specs):
        label = spec.label()
        if label in fns:
            raise ValueError(f"rewards[{i}]: component name {label!r} is used twice; set `name:` to tell them apart")
        fns[label], weights[label] = spec.build(device), spec.weight
    if not fns:
        raise ValueError("no reward: the task has none (or task_reward_weight is 0) and `rewards:` is empty")
    return RewardSet(fns, weights, on_error, timeout)


def weighted_sum(terms: dict[str, tuple[RewardFn, float]]) -> Callable[..., list[float]]:
    """One RewardFn r = Σ_k w_k · r_k(prompts, completions, **columns); ``fn.last_components`` holds the last call's
    per-component values ``{name: [B]}`` so a caller can log them."""

    def composite(prompts: list[str], completions: list[str], **columns: Any) -> list[float]:
        comps = {name: [float(v) for v in fn(prompts, completions, **columns)] for name, (fn, _) in terms.items()}
        composite.last_components = comps
        return [sum(terms[k][1] * comps[k][i] for k in terms) for i in range(len(completions))]

    composite.last_components = {}
    return composite
