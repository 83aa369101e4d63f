"""Calling reward functions safely: per-sample errors, NaNs and hangs are reported with the sample and handled.

``on_error``: ``"skip"`` (the sample is marked invalid and left out of the update), ``"zero"`` (its reward becomes 0)
or ``"abort"`` (raise ``RewardError`` naming the function and the sample). A function that raises for a whole batch is
retried one sample at a time, so one bad sample cannot take the batch down with it.

``timeout`` (seconds, per call): the function runs in a daemon worker thread and is abandoned when the deadline
passes (Python cannot kill a thread; a hung call keeps its thread until it returns, the run goes on). A batch call
that times out is retried per sample, each with its own deadline, so the hang is reported with the sample that hangs.
Sandboxed code rewards (``rewards/sandbox.py``) enforce their own per-program limits on top of this.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

log = logging.getLogger(__name__)
OnError = Literal["skip", "zero", "abort"]


class RewardError(RuntimeError):
    """A reward function failed on a sample and the config says abort."""


class RewardTimeout(RewardError):
    """A reward function call did not return before its deadline."""


@dataclass
class ScoredBatch:
    """rewards[i] is the weighted sum of components; valid[i] is False for skipped samples (reward 0 there)."""

    rewards: list[float]
    valid: list[bool]
    components: dict[str, list[float]]
    errors: list[dict[str, Any]] = field(default_factory=list)


def with_timeout(fn: Callable[..., list[float]], seconds: float | None) -> Callable[..., list[float]]:
    """``fn`` run in a daemon thread; raises ``RewardTimeout`` when it has not returned after ``seconds``.

    ``seconds=None`` returns ``fn`` unchanged, and so does a function marked ``inline = True`` (trusted in-process
    scorers such as reward models: a worker thread would run their forward passes with another torch thread pool).
    Wrapping twice keeps the innermost deadline semantics.
    """
    if seconds is None or getattr(fn, "inline", False):
        return fn

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> list[float]:
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["value"] = fn(*args, **kwargs)
            except BaseException as e:  # re-raised in the caller's thread
                box["error"] = e

        worker = threading.Thread(target=run, name=f"reward-{getattr(fn, '__name__', 'fn')}", daemon=True)
        worker.start()
        worker.join(seconds)
        if worker.is_alive():
            raise RewardTimeout(f"timed out after {seconds:g} s")
        if "error" in box:
            raise box["error"]
        return box["value"]

    call.timeout = seconds  # type: ignore[attr-defined]
    return call


def reward_call(fn: Callable[..., Any], kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """(args, kwargs) to call ``fn`` with. TRL's convention is keywords only (``prompts=``, ``completions=``, ...):
    all of them when ``fn`` takes ``**kwargs``, else those it names. A function whose first parameters have other
    names (``def f(p, c, **kw)``) gets prompts and completions positionally."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # builtins / C callables: keywords
        return [], kwargs
    args: list[Any] = []
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if positional and positional[0].name not in kwargs:
        args = [kwargs["prompts"], kwargs["completions"]][: len(positional)]
        kwargs = {k: v for k, v in kwargs.items() if k not in ("prompts", "completions")}
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        kwargs = {k: v for k, v in kwargs.items() if k in names}
    return args, kwargs


def _label(fn: Callable[..., Any], name: str) -> str:
    where = getattr(fn, "__module__", None)
    qual = getattr(fn, "__qualname__", None) or type(fn).__name__
    return f"{name!r} ({where}:{qual})" if where else repr(name)


def _shown(value: Any) -> str:
    """A short repr that cannot fail (a huge int's repr raises ValueError)."""
    try:
        return f"{value!r:.80}"
    except Exception:
        return f"<{type(value).__name__}>"


def _to_float(value: Any, fn, name: str, i: int) -> float:
    if value is None:
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        raise RewardError(
            f"reward {_label(fn, name)} returned {_shown(value)} for sample {i}: expected a number"
        ) from None


def _call_one(fn, name: str, kwargs: dict[str, Any], i: int) -> tuple[float | None, str | None]:
    one = {k: [v[i]] if isinstance(v, list) else v for k, v in kwargs.items()}
    try:
        args, kw = reward_call(fn, one)
        value = _to_float(fn(*args, **kw)[0], fn, name, i)
    except RewardTimeout as e:
        return None, f"hang: {e}"
    except Exception as e:
        return None, f"{type(e).__name__}: {e}"
    return (None, "returned NaN/inf/None") if not math.isfinite(value) else (value, None)


def call_reward(
    fn: Callable[..., list[float]],
    name: str,
    prompts: list[Any],
    completions: list[Any],
    columns: dict[str, list],
    completion_ids: list[list[int]] | None = None,
) -> tuple[list[float | None], list[str | None]]:
    """Values (None where it failed) and error messages per sample for one reward function.

    Called with keywords as TRL's trainers call them: ``fn(prompts=, completions=, completion_ids=, **columns)``
    (only the keywords ``fn`` accepts unless it takes ``**kwargs``). A wrong number of values or a value that is not
    a number is an error naming the function (``RewardError``), not a per-sample failure.
    """
    kwargs: dict[str, Any] = {"prompts": prompts, "completions": completions, **columns}
    if completion_ids is not None:
        kwargs["completion_ids"] = completion_ids
    try:
        args, kw = reward_call(fn, kwargs)
        values = fn(*args, **kw)
    except Exception:  # retry one sample at a time, so one bad sample cannot take the batch down
        results = [_call_one(fn, name, kwargs, i) for i in range(len(prompts))]
        return [r[0] for r in results], [r[1] for r in results]
    if isinstance(values, str | bytes | Mapping) or not hasattr(values, "__len__"):
        raise RewardError(
            f"reward {_label(fn, name)} returned {_shown(values)}: expected a list of {len(prompts)} numbers"
        )
    if len(values) != len(prompts):
        raise RewardError(f"reward {_label(fn, name)} returned {len(values)} values for {len(prompts)} samples")
    out, errs = [], []
    for i, v in enumerate(values):
        v = _to_float(v, fn, name, i)
        ok = math.isfinite(v)
        out.append(v if ok else None)
        errs.append(None if ok else "returned NaN/inf/None")
    return out, errs


def score_completions(
    reward_fns: dict[str, Callable[..., list[float]]],
    prompts: list[str],
    completions: list[str],
    columns: dict[str, Sequence] | None = None,
    weights: dict[str, float] | None = None,
    on_error: OnError = "skip",
    timeout: float | None = None,
    completion_ids: list[list[int]] | None = None,
) -> ScoredBatch:
    """Score with every named reward function; reward = Σ_k w_k · r_k. Failures handled per ``on_error``; a
    function that fails on every sample of the batch raises ``RewardError`` whatever ``on_error`` says (training on
    nothing is never what the user wants).

    ``timeout``: seconds per reward call (see the module docstring); None = no deadline.
    """
    columns = {k: list(v) for k, v in (columns or {}).items()}
    weights = weights or {}
    n = len(prompts)
    total, valid = [0.0] * n, [True] * n
    components: dict[str, list[float]] = {}
    errors: list[dict[str, Any]] = []
    for name, fn in reward_fns.items():
        values, errs = call_reward(with_timeout(fn, timeout), name, prompts, completions, columns, completion_ids)
        if n and all(e is not None for e in errs):
            raise RewardError(
                f"reward {name!r} failed on all {n} samples of the batch; first error: {errs[0]}\n"
                f"  prompt: {prompts[0]!r:.200}\n  completion: {completions[0]!r:.200}"
            )
        for i, err in enumerate(errs):
            if err is None:
                continue
            sample = {"reward": name, "index": i, "prompt": prompts[i], "completion": completions[i], "error": err}
            if on_error == "abort":
                raise RewardError(
                    f"reward {name!r} failed on sample {i}: {err}\n  prompt: {prompts[i]!r}\n"
                    f"  completion: {completions[i]!r}"
                )
            log.warning(
                "reward %r failed on sample %d (%s); %s it. prompt=%r completion=%r",
                name,
                i,
                err,
                "skipping" if on_error == "skip" else "zeroing",
                prompts[i][:80],
                completions[i][:80],
            )
            errors.append(sample)
            if on_error == "skip":
                valid[i] = False
        comp = [v if v is not None else 0.0 for v in values]
        components[name] = comp
        w = weights.get(name, 1.0)
        total = [t + w * c for t, c in zip(total, comp, strict=True)]
    total = [t if ok else 0.0 for t, ok in zip(total, valid, strict=True)]
    return ScoredBatch(total, valid, components, errors)
