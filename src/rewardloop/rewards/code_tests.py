"""The ``code_tests`` reward: the fraction of a problem's unit tests that a completion's code passes in the sandbox.

Each completion's program runs inside ``rewards.sandbox`` (one isolated process per program, in parallel) under a
harness that executes the tests and reports ``passed/total`` signed with a per-run key, so a program cannot print
its own score. Reward name ``code_tests``; see docs/guides/sandbox.md.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from typing import Any

from rewardloop.rewards.sandbox import DEFAULT_LIMITS, SandboxLimits, run_many

_RESULT_MARK = "__rewardloop_result__"
_RESULT_RE = re.compile(rf"{_RESULT_MARK} (\d+)/(\d+) ([0-9a-f]{{64}})")
_FENCE_RE = re.compile(r"```[ \t]*(python3?|py)?[ \t]*\n(.*?)(?:\n[ \t]*```|\Z)", re.S | re.I)

# Runs setup, then the candidate, then each test in the candidate's namespace, and prints "passed/total" with an
# HMAC-SHA256 tag keyed by a random key read from stdin before any candidate code runs: printing a valid line needs
# the key. Everything the count depends on (payload, builtins, hash, write) is bound to locals before the candidate
# runs, so rebinding names in builtins/__main__ or monkeypatching modules cannot change it; only introspecting the
# harness's own frame (sys._getframe, ctypes) could. Cheap imports only: it starts once per completion.
_HARNESS = r"""
import hashlib, os, sys


def _main(payload):
    setup, code, tests, entry = payload
    key = sys.stdin.buffer.readline().strip().ljust(64, b"\0")
    k_in, k_out = bytes(x ^ 0x36 for x in key), bytes(x ^ 0x5C for x in key)  # RFC 2104 inner/outer keys
    run, comp, hook, exc_info, is_callable = exec, compile, sys.__excepthook__, sys.exc_info, callable
    sha, write, out, n = hashlib.sha256, os.write, os.dup(1), len(tests)
    ns = {"__name__": "solution"}
    ready = True
    for source, filename in ((setup, "setup.py"), (code, "solution.py")):
        if ready:
            try:
                run(comp(source, filename, "exec"), ns)
            except BaseException:
                hook(*exc_info())
                ready = False
    if ready and entry is not None and not is_callable(ns.get(entry)):
        write(2, b"entry point is not defined: " + entry.encode() + b"\n")
        ready = False
    passed = 0
    for test in tests:
        if ready:
            try:
                run(comp(test, "test.py", "exec"), ns)
                passed += 1
            except BaseException:
                hook(*exc_info())
    score = b"%d/%d" % (passed, n)
    tag = sha(k_out + sha(k_in + score).digest()).hexdigest().encode()
    try:
        sys.stdout.flush()
    except BaseException:
        pass
    write(out, b"\nMARK " + score + b" " + tag + b"\n")


_main(PAYLOAD)
"""


def extract_code(completion: str) -> str:
    """The first fenced ```python block of a completion (else the first untagged fence), or the raw text."""
    blocks = _FENCE_RE.findall(completion)
    for tag, body in blocks:
        if tag:
            return body
    return blocks[0][1] if blocks else completion


def build_program(prompt: str, completion: str, entry_point: str | None = None) -> str:
    """The candidate program: the completion's code alone when it defines ``entry_point``, else prompt + code when
    the prompt is Python (HumanEval style: the completion continues the signature), else the code alone."""
    code = extract_code(completion)
    if entry_point and re.search(rf"^\s*(async\s+)?def\s+{re.escape(entry_point)}\s*\(", code, re.M):
        return code
    try:
        compile(prompt, "<prompt>", "exec")
    except (SyntaxError, ValueError):
        return code
    return prompt + ("" if prompt.endswith("\n") else "\n") + code


def harness_program(program: str, tests: Sequence[str], *, entry_point: str | None = None, setup: str = "") -> str:
    """The harness source that runs ``program`` then each test (its stdin must be the HMAC key, one line)."""
    payload = (setup, program, tuple(str(t) for t in tests), entry_point)  # immutable once unpacked
    return f"PAYLOAD = {payload!r}\n" + _HARNESS.replace("MARK", _RESULT_MARK)


def _score(stdout: str, key: bytes, n_tests: int) -> float:
    for match in reversed(list(_RESULT_RE.finditer(stdout))):
        passed, total, tag = int(match[1]), int(match[2]), match[3]
        expected = hmac.new(key, f"{passed}/{total}".encode(), hashlib.sha256).hexdigest()
        if hmac.compare_digest(tag, expected) and total == n_tests and passed <= total:
            return passed / total
    return 0.0


def _text(completion: Any) -> str:
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):  # chat messages
        return str(completion[-1].get("content", ""))
    raise ValueError(f"completion must be text or a list of chat messages, got {type(completion).__name__}")


def _column(name: str, values: Sequence[Any] | None, n: int) -> list[Any]:
    if values is None:
        return [None] * n
    if len(values) != n:
        raise ValueError(f"code_tests_reward: column {name!r} has {len(values)} rows, completions have {n}")
    return list(values)


def _tests_row(i: int, row: Any) -> list[str]:
    if isinstance(row, str) or not hasattr(row, "__iter__"):
        raise ValueError(f"code_tests_reward: tests[{i}] must be a list of assert strings, got {row!r}")
    tests = list(row)
    if not tests or not all(isinstance(t, str) for t in tests):
        raise ValueError(f"code_tests_reward: tests[{i}] must be a non-empty list of assert strings, got {row!r}")
    return tests


def code_tests_reward(
    prompts: list[Any],
    completions: list[Any],
    *,
    tests: list[list[str]],
    entry_point: list[str | None] | None = None,
    setup: list[str | None] | None = None,
    limits: SandboxLimits = DEFAULT_LIMITS,
    **_: Any,
) -> list[float]:
    """Fraction of each row's test statements that pass when its completion's code runs in the sandbox.

    The program is the completion's fenced code (or raw text), prefixed with the prompt when the prompt is code and
    the completion continues it; a syntax error, a crash at import, a missing ``entry_point`` or a timeout scores 0.
    """
    n = len(completions)
    prompts = _column("prompt", prompts, n)
    rows = [_tests_row(i, row) for i, row in enumerate(_column("tests", tests, n))]
    entries, setups = _column("entry_point", entry_point, n), _column("setup", setup, n)
    keys = [secrets.token_hex(32).encode() for _ in range(n)]
    programs = [
        harness_program(build_program(_text(p), _text(c), e), t, entry_point=e, setup=s or "")
        for p, c, t, e, s in zip(prompts, completions, rows, entries, setups, strict=True)
    ]
    results = run_many(programs, limits=limits, stdins=[k.decode() + "\n" for k in keys])
    return [_score(r.stdout, k, len(t)) for r, k, t in zip(results, keys, rows, strict=True)]
