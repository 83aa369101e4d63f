"""The ``code_tests`` reward: the fraction of a problem's unit tests that a completion's code passes in the sandbox.

Each test is one ``assert`` statement. The host splits it: the comparisons, boolean logic, arithmetic, subscripts,
literals and calls of a few pure builtins stay on the host; every call into the candidate's code (``add(1, 2)``) is
a *probe* that runs in the sandbox, in the candidate's process, whose value comes back as plain data (builtin types
only, checked by exact type, encoded as JSON). Expressions that need the row's ``setup`` but not the candidate run
in a second sandboxed process without the candidate. The host then evaluates the assertion on those plain values:
the expected values never enter the candidate's process, and no object of the candidate's is ever compared, so
walking the harness's frames, returning an object whose ``__eq__`` is always true, printing fake results or
exiting early cannot raise the score. Reward name ``code_tests``; see docs/guides/sandbox.md.
"""

from __future__ import annotations

import ast
import builtins
import json
import math
import operator
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from rewardloop.rewards.sandbox import DEFAULT_LIMITS, SandboxLimits, SandboxResult, run_many

_RESULT_MARK = "__rewardloop_values__"
_FENCE_RE = re.compile(r"```[ \t]*(python3?|py)?[ \t]*\n(.*?)(?:\n[ \t]*```|\Z)", re.S | re.I)

# In the sandbox: run setup, then (unless PAYLOAD says it is the reference run) the candidate, then evaluate each
# probe expression and print their values as one JSON line. A value is accepted only when it is built from builtin
# types alone (checked with `type(x) is ...`, recursively, calling none of the value's methods); anything else is
# reported as an error. Nothing here needs to be trusted: the host checks the assertions, and a forged line can only
# claim values, which must still equal what the host expects.
_HARNESS = r"""
import json, os, sys


def _main(payload):
    setup, code, probes, entry = payload
    run, comp, ev, dumps, write, out = exec, compile, eval, json.dumps, os.write, os.dup(1)
    t, none, isx, cal = type, type(None), BaseException, callable
    lst, tup, dct, st, fst = list, tuple, dict, set, frozenset

    def enc(x, depth):
        k = t(x)
        if depth > 100:
            raise ValueError("nested too deeply")
        if k is bytes:
            return {"b": x.hex()}
        if k is complex:
            return {"c": [x.real, x.imag]}
        if k is int or k is float or k is str or k is bool or k is none:  # identity only: no method of x runs
            return x
        if k is lst:
            return [enc(v, depth + 1) for v in x]
        if k is tup or k is st or k is fst:
            return {"t" if k is tup else "s" if k is st else "fs": [enc(v, depth + 1) for v in x]}
        if k is dct:
            return {"d": [[enc(a, depth + 1), enc(b, depth + 1)] for a, b in x.items()]}
        raise TypeError("not a plain value: " + k.__name__)

    ns = {"__name__": "solution"}
    ready, values = True, []
    for source, filename in ((setup, "setup.py"), (code, "solution.py")):
        if ready and source is not None:
            try:
                run(comp(source, filename, "exec"), ns)
            except isx as e:
                sys.__excepthook__(t(e), e, e.__traceback__)
                ready = False
    if ready and entry is not None and not cal(ns.get(entry)):
        write(2, b"entry point is not defined: " + entry.encode() + b"\n")
        ready = False
    for probe in probes if ready else ():
        try:
            values.append(["ok", enc(ev(comp(probe, "test.py", "eval"), ns), 0)])
        except isx as e:
            values.append(["error", t(e).__name__])
    try:
        sys.stdout.flush()
    except isx:
        pass
    write(out, b"\nMARK " + dumps({"ready": ready, "values": values}).encode() + b"\n")


_main(PAYLOAD)
"""

# Evaluated on the host, on plain values only. `range` is left out (size), as is everything that reaches objects.
_SAFE_CALLS = {
    name: getattr(builtins, name)
    for name in [
        "abs",
        "all",
        "any",
        "bool",
        "bytes",
        "complex",
        "dict",
        "divmod",
        "float",
        "frozenset",
        "int",
        "isinstance",
        "len",
        "list",
        "max",
        "min",
        "repr",
        "reversed",
        "round",
        "set",
        "sorted",
        "str",
        "sum",
        "tuple",
        "type",
    ]
}
_SAFE_MATH = {
    n: getattr(math, n)
    for n in ["ceil", "e", "fabs", "floor", "inf", "isclose", "isfinite", "isinf", "isnan", "nan", "pi", "sqrt"]
}
_SAFE_NAMES = {**_SAFE_CALLS, "None": None, "True": True, "False": False, "NoneType": type(None)}
_HOST_NODES = (
    ast.Constant, ast.Tuple, ast.List, ast.Set, ast.Dict, ast.Compare, ast.BoolOp, ast.UnaryOp, ast.BinOp,
    ast.IfExp, ast.Subscript, ast.Slice, ast.Starred, ast.Load,
)  # fmt: skip
_BINOPS = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow, ast.LShift: operator.lshift,
    ast.RShift: operator.rshift, ast.BitAnd: operator.and_, ast.BitOr: operator.or_, ast.BitXor: operator.xor,
    ast.MatMult: operator.matmul,
}  # fmt: skip
_MAX_ITEMS = 10_000_000  # host-side arithmetic on candidate values: no result larger than this many items or bits


class CodeTestFormatError(ValueError):
    """A test that cannot be checked outside the candidate's process (see docs/guides/sandbox.md)."""


@dataclass(frozen=True)
class _Test:
    """An assertion split into a host-side check (``check``, with ``__p(i)`` for probe i) and sandbox probes."""

    check: Any  # code object, evaluated on the host
    probes: tuple[tuple[str, bool], ...]  # (expression source, runs in the candidate's process)


def _bound_names(setup: str) -> set[str]:
    """Names the row's setup code binds at module level (its functions, classes, imports, assignments)."""
    if not setup:
        return set()
    names: set[str] = set()
    for node in ast.walk(ast.parse(setup)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names


def _is_candidate_name(name: str, setup_names: set[str]) -> bool:
    """Whether a name in a test refers to the candidate's code: the entry point (always, put in ``setup_names``
    negated as ``"!name"``), else anything that is not bound by setup, a builtin or a standard-library module."""
    if "!" + name in setup_names:
        return True
    return not (name in setup_names or hasattr(builtins, name) or name in sys.stdlib_module_names)


def _host_evaluable(node: ast.AST) -> bool:
    """Whether ``node`` itself (not its children) can be evaluated by the host on plain values."""
    if isinstance(node, (_HOST_NODES, ast.operator, ast.cmpop, ast.boolop, ast.unaryop)):
        return True
    if isinstance(node, ast.Name):
        return node.id in _SAFE_NAMES
    if isinstance(node, ast.Attribute):
        return isinstance(node.value, ast.Name) and node.value.id == "math" and node.attr in _SAFE_MATH
    if isinstance(node, ast.Call):
        func = node.func
        return (isinstance(func, ast.Name) and func.id in _SAFE_CALLS) or (
            isinstance(func, ast.Attribute) and _host_evaluable(func) and callable(_SAFE_MATH[func.attr])
        )
    return isinstance(node, ast.keyword)


def _candidate_rooted(node: ast.AST, setup_names: set[str]) -> bool:
    """``f(...)``, ``f(...).method(...)``, ``f(...)[i]``, ``f``: a value the candidate's own code produces."""
    while isinstance(node, (ast.Call, ast.Attribute, ast.Subscript)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return isinstance(node, ast.Name) and _is_candidate_name(node.id, setup_names)


class _Splitter(ast.NodeTransformer):
    def __init__(self, setup_names: set[str], test: str) -> None:
        self.setup_names, self.test, self.probes = setup_names, test, []  # type: list[tuple[str, bool]]

    def _probe(self, node: ast.expr) -> ast.expr:
        uses_candidate = any(
            isinstance(n, ast.Name) and _is_candidate_name(n.id, self.setup_names) for n in ast.walk(node)
        )
        if uses_candidate and not _candidate_rooted(node, self.setup_names):
            raise CodeTestFormatError(
                f"test {self.test!r}: {ast.unparse(node)!r} would be checked inside the candidate's process; "
                "call the candidate's functions directly and compare in the assert "
                "(e.g. `assert [f(0), f(1)] == [0, 2]`, `assert abs(f(x) - 1.5) < 1e-9`)"
            )
        self.probes.append((ast.unparse(node), uses_candidate))
        call = ast.Call(ast.Name("__p", ast.Load()), [ast.Constant(len(self.probes) - 1)], [])
        return ast.copy_location(call, node)

    def visit(self, node: ast.AST) -> ast.AST:
        if isinstance(node, ast.expr) and not _host_evaluable(node):
            return self._probe(node)
        if isinstance(node, (ast.Attribute, ast.Name)):  # math.isclose, abs, True: nothing inside to split
            return node
        if isinstance(node, ast.BinOp):
            self.generic_visit(node)
            call = ast.Call(
                ast.Name("__op", ast.Load()), [ast.Constant(type(node.op).__name__), node.left, node.right], []
            )
            return ast.copy_location(call, node)
        return self.generic_visit(node)


def split_test(test: str, setup: str = "", entry_point: str | None = None) -> _Test:
    """Split one ``assert`` statement into its host-side check and its sandbox probes (``CodeTestFormatError`` if the
    test is not a single assert, or would need a check inside the candidate's process)."""
    try:
        tree = ast.parse(test)
    except SyntaxError as e:
        raise CodeTestFormatError(f"test {test!r} is not valid Python: {e.msg}") from None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        raise CodeTestFormatError(f"test {test!r} must be a single `assert` statement")
    names = _bound_names(setup or "") - {entry_point} | ({"!" + entry_point} if entry_point else set())
    splitter = _Splitter(names, test)
    expr = ast.Expression(splitter.visit(tree.body[0].test))
    ast.fix_missing_locations(expr)
    return _Test(compile(expr, "<test>", "eval"), tuple(splitter.probes))


def _guarded_op(name: str, a: Any, b: Any) -> Any:
    """Host-side arithmetic on candidate values, refusing results too large to compute (``'x' * 10**12``)."""
    op = _BINOPS[getattr(ast, name)]
    if name == "Mult":
        for seq, n in ((a, b), (b, a)):
            if isinstance(seq, (str, bytes, list, tuple)) and isinstance(n, int) and len(seq) * n > _MAX_ITEMS:
                raise OverflowError("result too large")
    elif name == "Pow" and isinstance(a, int) and isinstance(b, int) and b > 0:
        if max(a.bit_length(), 1) * b > _MAX_ITEMS:
            raise OverflowError("result too large")
    elif name == "LShift" and isinstance(b, int) and b > _MAX_ITEMS:
        raise OverflowError("result too large")
    return op(a, b)


def _decode(x: Any) -> Any:
    if isinstance(x, list):
        return [_decode(v) for v in x]
    if isinstance(x, dict):
        ((tag, v),) = x.items()
        if tag == "t":
            return tuple(_decode(i) for i in v)
        if tag in ("s", "fs"):
            return (set if tag == "s" else frozenset)(_decode(i) for i in v)
        if tag == "d":
            return {_decode(k): _decode(val) for k, val in v}
        if tag == "b":
            return bytes.fromhex(v)
        if tag == "c":
            return complex(*v)
        raise ValueError(f"unknown tag {tag!r}")
    if x is None or type(x) in (int, float, str, bool):
        return x
    raise ValueError(f"not a plain value: {type(x).__name__}")


class _ProbeFailed(Exception):
    pass


def _values(result: SandboxResult, n_probes: int) -> list[Any] | None:
    """The probe values of a run's last result line (``None``: killed, no line, not ready, malformed)."""
    if result.killed_reason is not None:
        return None
    for line in reversed(result.stdout.splitlines()):
        if line.startswith(_RESULT_MARK + " "):
            try:
                data = json.loads(line[len(_RESULT_MARK) + 1 :])
                if not data["ready"]:
                    return None
                values = [_decode(v) if kind == "ok" else _ProbeFailed(v) for kind, v in data["values"]]
                return values if len(values) == n_probes else None
            except (ValueError, TypeError, KeyError, RecursionError, MemoryError, OverflowError):
                return None
    return None


def _check(test: _Test, values: list[Any]) -> bool:
    def probe(i: int) -> Any:
        if isinstance(values[i], _ProbeFailed):
            raise values[i]
        return values[i]

    scope = {
        "__builtins__": {},
        **_SAFE_NAMES,
        "math": SimpleNamespace(**_SAFE_MATH),
        "__p": probe,
        "__op": _guarded_op,
    }
    try:
        return bool(eval(test.check, scope))  # only host-evaluable nodes, plain values
    except Exception:
        return False


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


def harness_program(
    program: str | None, probes: Sequence[str], *, entry_point: str | None = None, setup: str = ""
) -> str:
    """The sandbox program: ``setup``, then ``program`` (``None``: the reference run, setup only), then each probe
    expression, whose values it prints as one JSON line (plain builtin types only)."""
    payload = (setup, program, tuple(str(p) for p in probes), entry_point)  # immutable once unpacked
    return f"PAYLOAD = {payload!r}\n" + _HARNESS.replace("MARK", _RESULT_MARK)


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
    """Fraction of each row's ``assert`` tests that hold for its completion's code, checked on the host.

    The program is the completion's fenced code (or raw text), prefixed with the prompt when the prompt is code and
    the completion continues it; a syntax error, a crash at import, a missing ``entry_point`` or a timeout scores 0.
    A test that is not a single ``assert``, or that would need a check inside the candidate's process, raises
    ``CodeTestFormatError`` (a ``ValueError``) naming it.
    """
    n = len(completions)
    prompts = _column("prompt", prompts, n)
    rows = [_tests_row(i, row) for i, row in enumerate(_column("tests", tests, n))]
    entries, setups = _column("entry_point", entry_point, n), [s or "" for s in _column("setup", setup, n)]
    cache: dict[tuple[str, str, str | None], _Test] = {}
    split: list[list[_Test]] = []
    for i, (row, entry, row_setup) in enumerate(zip(rows, entries, setups, strict=True)):
        try:
            for t in row:
                if (t, row_setup, entry) not in cache:
                    cache[(t, row_setup, entry)] = split_test(t, row_setup, entry)
        except CodeTestFormatError as e:
            raise CodeTestFormatError(f"code_tests_reward: tests[{i}]: {e}") from None
        split.append([cache[(t, row_setup, entry)] for t in row])
    own_probes = [[src for t in row for src, mine in t.probes if mine] for row in split]
    ref_probes = [tuple(src for t in row for src, mine in t.probes if not mine) for row in split]
    programs = [
        harness_program(build_program(_text(p), _text(c), e), probes, entry_point=e, setup=s)
        for p, c, probes, e, s in zip(prompts, completions, own_probes, entries, setups, strict=True)
    ]
    # Expressions that need setup but not the candidate: one run without the candidate, shared by equal rows.
    references = list(dict.fromkeys((s, ref) for s, ref in zip(setups, ref_probes, strict=True) if ref))
    programs += [harness_program(None, ref, setup=s) for s, ref in references]
    results = run_many(programs, limits=limits)
    ref_values = {key: _values(r, len(key[1])) for key, r in zip(references, results[n:], strict=True)}
    rewards = []
    for row, r, s, mine, ref in zip(split, results[:n], setups, own_probes, ref_probes, strict=True):
        own = _values(r, len(mine))
        if own is None:  # did not load, lacks the entry point, was killed, or left no (well-formed) result
            rewards.append(0.0)
            continue
        theirs = (ref_values[(s, ref)] or [_ProbeFailed("reference run failed")] * len(ref)) if ref else []
        own_it, ref_it = iter(own), iter(theirs)
        passed = sum(_check(t, [next(own_it) if m else next(ref_it) for _, m in t.probes]) for t in row)
        rewards.append(passed / len(row))
    return rewards
