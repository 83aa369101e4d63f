"""Reward forgery battery for ``code_tests``: every attack scores 0, honest code keeps its score.

All attacks target ``add(a, b)`` with four tests; a wrong answer (``return 0``) passes exactly one of them
(``add(0, 0) == 0``), so an attack "succeeds" when it scores above 0.25 (above 0 for those that never return 0).
They run in one batch together with honest and partial solutions, which also shows that no program takes the
batch down. The assertions are checked on the host (see docs/guides/sandbox.md), so these are the attacks the old
in-process harness fell to, plus the ones it already caught.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from rewardloop.rewards import sandbox
from rewardloop.rewards.code_tests import (
    CodeTestFormatError,
    build_program,
    code_tests_reward,
    harness_program,
    split_test,
)
from rewardloop.rewards.sandbox import SandboxLimits

LIMITS = SandboxLimits(cpu_seconds=2, wall_seconds=10, memory_mb=256)
PROMPT = 'def add(a, b):\n    """Return a + b."""\n'
TESTS = ["assert add(1, 2) == 3", "assert add(0, 0) == 0", "assert add(-1, 5) == 4", "assert add(2, 2) == 4"]


def body(code: str) -> str:
    return textwrap.indent(textwrap.dedent(code).strip("\n") + "\n", "    ")


ALWAYS_EQUAL = """
class Equal:
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __bool__(self): return True
    def __hash__(self): return 0
return Equal()
"""

ATTACKS = {
    # the two open forgeries of the old harness
    "frame_walk_sys_getframe": body("""
        import sys
        f = sys._getframe(1)
        while f is not None:
            for name, value in list(f.f_locals.items()):
                if isinstance(value, list) and name in ("values", "passed"):
                    value[:] = [["ok", True]] * 4
                if isinstance(value, int) and not isinstance(value, bool):
                    f.f_locals[name] = 4
            f = f.f_back
        return True
    """),
    "frame_walk_inspect_f_back": body("""
        import inspect
        frame = inspect.currentframe().f_back
        harness = frame.f_back.f_locals if frame.f_back else {}
        for key, value in frame.f_locals.items():
            if callable(value) and key == "enc":
                frame.f_globals["json"].dumps = lambda *a, **k: '{"ready": true, "values": [["ok", 4]]}'
        return 0
    """),
    "gc_get_objects_payload": body("""
        import gc
        for obj in gc.get_objects():
            if isinstance(obj, list) and obj and obj[0] == ["ok", 0]:
                obj[:] = [["ok", 3], ["ok", 0], ["ok", 4], ["ok", 4]]
        for obj in gc.get_objects():
            if isinstance(obj, tuple) and len(obj) == 4 and isinstance(obj[2], tuple):
                print("probes seen:", obj[2])
        return 0
    """),
    "always_equal_object": body(ALWAYS_EQUAL),
    "int_subclass_always_equal": body("""
        class Sneaky(int):
            def __eq__(self, other): return True
            __hash__ = int.__hash__
        return Sneaky(0)
    """),
    "nan_result": body("return float('nan')"),
    # forgeries the old harness already caught
    "fake_old_pass_marker": body("return 0")
    + "import os\nprint('\\n__rewardloop_result__ 4/4 ' + 'a' * 64, flush=True)\nos._exit(0)\n",
    "fake_result_line_then_exit": body("return 0")
    + 'import os\nprint(\'\\n__rewardloop_values__ \' + \'{"ready": true, "values": [["ok", true], '
    '["ok", true], ["ok", true], ["ok", true]]}\', flush=True)\nos._exit(0)\n',
    "fake_result_line_at_exit": body("return 0")
    + 'import atexit, os\natexit.register(lambda: os.write(1, b\'\\n__rewardloop_values__ {"ready": true, '
    '"values": [["ok", 1], ["ok", 1], ["ok", 1], ["ok", 1]]}\\n\'))\n',
    "swallowed_asserts": body("return 0")
    + "import builtins\nbuiltins.AssertionError = type('Nope', (Exception,), {})\n"
    "import sys\nsys.excepthook = lambda *a: None\n",
    "sys_exit_0_at_import": body("return 0") + "import sys\nsys.exit(0)\n",
    "sys_exit_0_when_called": body("import sys\nsys.exit(0)"),
    "monkeypatch_builtins": body("return 0")
    + "import builtins\nbuiltins.exec = lambda *a, **k: None\nbuiltins.compile = lambda *a, **k: None\n"
    "builtins.eval = lambda *a, **k: True\nbuiltins.type = lambda *a: int\n",
    "monkeypatch_json_dumps": body("return 0")
    + 'import json\njson.dumps = lambda *a, **k: \'{"ready": true, "values": [["ok", true]] }\'\n',
    "read_own_program_for_answers": body("""
        src = open(__file__ if "__file__" in globals() else "main.py").read()
        import re
        nums = [int(n) for n in re.findall(r"-?\\d+", src)]
        return nums[-1] if nums else 0
    """),
    "kill_pid1_sigalrm": body("return 0") + "import os, signal\nos.kill(1, signal.SIGALRM)\n",
    "kill_pid1_sigkill": body("return 0") + "import os\nos.kill(1, 9)\n",
}
HONEST = {"honest": "    return a + b\n", "honest_fenced": "```python\ndef add(a, b):\n    return b + a\n```\n"}
PARTIAL = {"partial_double_a": "    return a * 2\n", "wrong_zero": "    return 0\n"}
EXPECTED_HONEST = {"honest": 1.0, "honest_fenced": 1.0, "partial_double_a": 0.5, "wrong_zero": 0.25}


@pytest.fixture(scope="module")
def scores() -> dict[str, float]:
    names = [*ATTACKS, *HONEST, *PARTIAL]
    completions = [*ATTACKS.values(), *HONEST.values(), *PARTIAL.values()]
    n = len(completions)
    rewards = code_tests_reward([PROMPT] * n, completions, tests=[TESTS] * n, entry_point=["add"] * n, limits=LIMITS)
    return dict(zip(names, rewards, strict=True))


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_attack_scores_no_more_than_a_wrong_answer(scores, attack):
    # `return 0` legitimately passes add(0, 0) == 0; nothing may score more than that
    assert scores[attack] <= 0.25, f"{attack} forged a score of {scores[attack]}"


def test_the_open_forgeries_score_zero(scores):
    for attack in ("frame_walk_sys_getframe", "always_equal_object", "int_subclass_always_equal", "nan_result"):
        assert scores[attack] == 0.0, attack


def test_honest_and_partial_solutions_keep_their_scores_in_the_same_batch(scores):
    assert {k: scores[k] for k in EXPECTED_HONEST} == EXPECTED_HONEST


def test_expected_values_never_enter_the_candidates_process():
    program = harness_program(
        build_program(PROMPT, "    return 0\n", "add"),
        [src for t in TESTS for src, mine in split_test(t, "", "add").probes if mine],
        entry_point="add",
    )
    assert "add(1, 2)" in program and "== 3" not in program and "assert" not in program


def test_tests_that_would_be_checked_in_process_are_refused():
    for test in ("assert all(add(x, 0) == x for x in range(3))", "assert check(add)", "x = add(1, 2)"):
        with pytest.raises(CodeTestFormatError):
            code_tests_reward(
                [PROMPT],
                ["    return a + b\n"],
                tests=[[test]],
                entry_point=["add"],
                setup=["def check(f): return True"],
            )


def test_host_side_checks_cover_the_usual_assert_forms():
    tests = [
        "assert add(1, 2) == 3 and type(add(1, 2)) is int",
        "assert isinstance(add(1.5, 1), float)",
        "assert abs(add(0.1, 0.2) - 0.3) < 1e-9",
        "assert math.isclose(add(0.1, 0.2), 0.3)",
        "assert [add(0, 0), add(1, 1)] == [0, 2]",
        "assert add((1,), (2,)) == (1, 2) and add([1], [2]) != (1, 2)",
        "assert add('a', 'b')[0] == 'a' and len(add('ab', 'c')) == 3",
        "assert add(1, 2) == EXPECTED",  # from setup: evaluated in a run without the candidate
        "assert add(1, 2) == helper(1, 2)",
    ]
    setup = "EXPECTED = 3\ndef helper(a, b):\n    return 3\n"
    honest, equal = "    return a + b\n", body(ALWAYS_EQUAL)
    rewards = code_tests_reward(
        [PROMPT] * 2, [honest, equal], tests=[tests] * 2, entry_point=["add"] * 2, setup=[setup] * 2, limits=LIMITS
    )
    assert rewards == [1.0, 0.0]


def test_candidate_cannot_change_what_setup_computes():
    # the candidate rebinds the setup's expected value; the host takes it from a run without the candidate
    cheat = "    return 0\nEXPECTED = 0\n"
    rewards = code_tests_reward(
        [PROMPT], [cheat], tests=[["assert add(1, 2) == EXPECTED"]], entry_point=["add"], setup=["EXPECTED = 3"]
    )
    assert rewards == [0.0]


SIGNALS_PROGRAMS = [
    "print('before')",
    "import os, signal\nos.kill(1, signal.SIGALRM)\nprint('alive')",
    "import os\nos.kill(1, 9)\nprint('alive')",
    "import os, signal\nos.kill(1, signal.SIGTERM)\nprint('alive')",
    "print('after')",
]


def _check_signal_results(results: list[dict]) -> None:
    assert [r["stdout"] for r in (results[0], results[-1])] == ["before\n", "after\n"]
    for r in results[1:-1]:  # contained: the signal is refused (root backend) or dropped/ignored (user namespace)
        assert r["killed_reason"] in (None, "sandbox_killed"), r


def test_signalling_pid_1_does_not_take_down_the_batch_root_or_current_backend():
    results = sandbox.run_many(SIGNALS_PROGRAMS, limits=LIMITS)
    _check_signal_results([{"stdout": r.stdout, "killed_reason": r.killed_reason} for r in results])


USERNS_SCRIPT = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("sb", sys.argv[1])
sb = importlib.util.module_from_spec(spec); sys.modules["sb"] = sb; spec.loader.exec_module(sb)
programs = json.loads(sys.argv[2])
results = sb.run_many(programs, limits=sb.SandboxLimits(cpu_seconds=2, wall_seconds=10))
print(json.dumps({"backend": sb.sandbox_backend(), "uid": __import__("os").geteuid(),
                  "results": [{"stdout": r.stdout, "killed_reason": r.killed_reason} for r in results]}))
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None or not os.path.exists("/usr/bin/python3"),
    reason="needs root (to run the user-namespace backend as uid 65534), setpriv and a world-readable /usr/bin/python3",
)
def test_signalling_pid_1_does_not_take_down_the_batch_user_namespace_backend():
    """As uid 65534 the sandbox uses its non-root (user-namespace) backend, where pid 1 shares the program's uid."""
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "REWARDLOOP_SANDBOX_BACKEND": "unshare"}
    argv = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "/usr/bin/python3",
        "-I",
        "-c",
        USERNS_SCRIPT,
    ]
    proc = subprocess.run(
        [*argv, sandbox.__file__, json.dumps(SIGNALS_PROGRAMS)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd="/",
        check=False,
    )
    if proc.returncode != 0 and ("does not work here" in proc.stderr or "Permission denied" in proc.stderr):
        pytest.skip(f"user-namespace backend unavailable here: {proc.stderr.strip()[-300:]}")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["backend"] == "unshare" and report["uid"] == 65534
    _check_signal_results(report["results"])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
