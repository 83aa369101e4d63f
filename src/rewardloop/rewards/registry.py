"""Reward functions by name: one table of built-ins, or a plug-in by dotted path / file path.

A reward function is a plain callable ``reward(prompts, completions, **columns) -> list[float]`` (DESIGN.md §3):
extra dataset columns arrive as keyword lists aligned with the prompts. ``resolve_reward`` accepts

* a built-in name (``"exact_match"``),
* a dotted path ``"my_pkg.my_module:my_reward"``,
* a file path ``"/path/to/rewards.py:my_reward"`` (loaded without installing anything).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

RewardFn = Callable[..., list[float]]

BUILTIN_REWARDS: dict[str, str | RewardFn] = {
    # name → "module:function" (imported lazily so optional pieces cost nothing until used)
    "exact_match": "rewardloop.rewards.builtin:exact_match",
    "reviews_gold": "rewardloop.rewards.reviews:reviews_reward",
    "code_tests": "rewardloop.rewards.code_tests:code_tests_reward",
    "exact_answer": "rewardloop.rewards.builtin:exact_answer",
    "numeric_match": "rewardloop.rewards.builtin:numeric_match",
    "numeric_closeness": "rewardloop.rewards.builtin:numeric_closeness",
    "edit_similarity": "rewardloop.rewards.builtin:edit_similarity",
    "rouge_l": "rewardloop.rewards.text_metrics:rouge_l",
    "chrf": "rewardloop.rewards.text_metrics:chrf",
    "bleu": "rewardloop.rewards.text_metrics:bleu",
    "regex_format": "rewardloop.rewards.builtin:regex_format",
    "length_penalty": "rewardloop.rewards.builtin:length_penalty",
    "repetition_penalty": "rewardloop.rewards.builtin:repetition_penalty",
    "reward_model": "rewardloop.rewards.builtin:reward_model",
    "engagement": "rewardloop.rewards.engagement:engagement_reward",
}


def register_reward(name: str, target: str | RewardFn) -> None:
    """Make ``name`` resolve to ``target``: a callable, or a ``"module:function"`` / ``"file.py:function"`` path."""
    if not (callable(target) or isinstance(target, str)):
        raise TypeError(f"register_reward({name!r}, ...): expected a callable or 'module:function', got {target!r}")
    BUILTIN_REWARDS[name] = target


def _load_file(path: Path, attr: str, given: str) -> RewardFn:
    module_name = f"rewardloop_plugin_{path.stem}_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import reward plug-in file {path} (from {given!r}): not a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as e:  # a syntax error, a raising import, a directory named *.py
        sys.modules.pop(module_name, None)
        raise ValueError(f"cannot import reward plug-in file {path} (from {given!r}): {type(e).__name__}: {e}") from e
    return _attr(module, attr, str(path))


def _attr(module, attr: str, where: str) -> RewardFn:
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        names = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        raise ValueError(f"reward {attr!r} not found in {where}; callables there: {names}")
    return fn


def resolve_reward(spec: str | RewardFn) -> RewardFn:
    """A reward function from a built-in name, ``module:function`` or ``path/to/file.py:function``."""
    if callable(spec):
        return spec
    target = BUILTIN_REWARDS.get(spec, spec)
    if callable(target):
        return target
    module_part, sep, attr = target.rpartition(":")
    if not sep or not module_part or not attr:
        raise ValueError(
            f"unknown reward {spec!r}; built-ins: {sorted(BUILTIN_REWARDS)}, or give 'package.module:function' "
            "or 'path/to/file.py:function'"
        )
    if module_part.endswith(".py") or "/" in module_part:
        path = Path(module_part)
        if not path.exists():
            raise FileNotFoundError(f"reward plug-in file not found: {path} (from {spec!r})")
        return _load_file(path, attr, spec)
    try:
        module = importlib.import_module(module_part)
    except (Exception, SystemExit) as e:  # not found, a relative name ('.x'), or the module fails at import
        raise ValueError(f"cannot import module {module_part!r} for reward {spec!r}: {type(e).__name__}: {e}") from None
    return _attr(module, attr, module_part)
