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
import logging
import math
import threading
from collections.abc import Callable, Sequence
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

    ``seconds=None`` returns ``fn`` unchanged. Wrapping twice keeps the innermost deadline semantics.
    """
    if seconds is None:
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


def _call_one(fn, name: str, prompts, completions, columns, i: int) -> tuple[float | None, str | None]:
    try:
        value = fn([prompts[i]], [completions[i]], **{k: [v[i]] for k, v in columns.items()})[0]
        value = float(value) if value is not None else float("nan")
    except RewardTimeout as e:
        return None, f"hang: {e}"
    except Exception as e:
        return None, f"{type(e).__name__}: {e}"
    return (None, "returned NaN/inf/None") if not math.isfinite(value) else (value, None)


def call_reward(
    fn: Callable[..., list[float]], name: str, prompts: list[str], completions: list[str], columns: dict[str, list]
) -> tuple[list[float | None], list[str | None]]:
    """Values (None where it failed) and error messages per sample for one reward function."""
    try:
        values = fn(prompts, completions, **columns)
        if len(values) != len(prompts):
            raise ValueError(f"returned {len(values)} values for {len(prompts)} samples")
        out, errs = [], []
        for v in values:
            v = float(v) if v is not None else float("nan")
            ok = math.isfinite(v)
            out.append(v if ok else None)
            errs.append(None if ok else "returned NaN/inf/None")
        return out, errs
    except Exception:
        results = [_call_one(fn, name, prompts, completions, columns, i) for i in range(len(prompts))]
        return [r[0] for r in results], [r[1] for r in results]


def score_completions(
    reward_fns: dict[str, Callable[..., list[float]]],
    prompts: list[str],
    completions: list[str],
    columns: dict[str, Sequence] | None = None,
    weights: dict[str, float] | None = None,
    on_error: OnError = "skip",
    timeout: float | None = None,
) -> ScoredBatch:
    """Score with every named reward function; reward = Σ_k w_k · r_k. Failures handled per ``on_error``.

    ``timeout``: seconds per reward call (see the module docstring); None = no deadline.
    """
    columns = {k: list(v) for k, v in (columns or {}).items()}
    weights = weights or {}
    n = len(prompts)
    total, valid = [0.0] * n, [True] * n
    components: dict[str, list[float]] = {}
    errors: list[dict[str, Any]] = []
    for name, fn in reward_fns.items():
        values, errs = call_reward(with_timeout(fn, timeout), name, prompts, completions, columns)
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
