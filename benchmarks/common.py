"""Helpers shared by every benchmark worker: machine facts, timing, peak memory, the worker result protocol.

Imports only the standard library and torch, so TRL workers (in their own virtual environments, without rewardloop)
use it too.
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

RESULT_MARK = "BENCH_RESULT "


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (falls back to platform.processor())."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """CPU model, cores, torch version and threads: printed beside every table."""
    import torch

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


def setup_torch(threads: int | None = None, seed: int = 0) -> None:
    """Same thread count and seed on both sides of every comparison."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def clock() -> float:
    """The benchmark clock: wall time, or this process's CPU time when BENCH_CLOCK=cpu.

    CPU time (with one torch thread) is what a side costs regardless of other jobs on a shared machine; wall time with
    several threads on busy cores mostly measures the scheduler (threads wait for each other at every parallel op).
    """
    return time.process_time() if os.environ.get("BENCH_CLOCK") == "cpu" else time.perf_counter()


def patch_module_clock(module) -> None:
    """Make ``module``'s ``time.perf_counter()`` calls read ``clock()`` (used on rewardloop's algorithms, which log
    their phase times with time.perf_counter)."""
    if os.environ.get("BENCH_CLOCK") == "cpu" and hasattr(module, "time"):
        module.time = SimpleNamespace(**{k: getattr(time, k) for k in dir(time) if not k.startswith("_")})
        module.time.perf_counter = time.process_time


def timed(fn: Callable[[], Any], repeats: int = 3, warmup: int = 1) -> tuple[float, Any]:
    """Median ``clock()`` seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs; returns (seconds, result)."""
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeats):
        t0 = clock()
        out = fn()
        times.append(clock() - t0)
    return statistics.median(times), out


def finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def read_spec() -> dict[str, Any]:
    """A worker's spec: the JSON object given as its only argument."""
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: python -m {sys.argv[0]} '<json spec>'")
    return json.loads(sys.argv[1])


def emit(result: dict[str, Any]) -> None:
    """Print the worker's result as one marked JSON line (the orchestrator ignores everything else on stdout)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result.setdefault("peak_rss_mb", round(peak_rss_mb(), 1))
    result.setdefault("cpu_seconds", round(usage.ru_utime + usage.ru_stime, 2))  # whole process, load included
    print(RESULT_MARK + json.dumps(result), flush=True)


def parse_result(stdout: str) -> dict[str, Any] | None:
    """The last marked JSON line of a worker's stdout, or None."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK) :])
    return None


def exact_match(completions: list[str], answers: list[str]) -> list[float]:
    """The arithmetic task's reward, also used by the TRL workers (same definition as rewardloop's exact_match)."""
    return [float(c.strip() == str(a).strip()) for c, a in zip(completions, answers, strict=True)]
