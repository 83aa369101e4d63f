"""The sandbox contains each attack (the host is unharmed and the next program runs), and the code reward scores
(forgery battery: test_sandbox_forgery.py).

Tests that need namespaces (network, PID, private /tmp) skip on the rlimits-only backend; those that rely on the
child not being the test's own user skip when rlimits-only runs as non-root (see docs/guides/sandbox.md).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import subprocess
import sys

import pytest

from rewardloop.rewards import sandbox
from rewardloop.rewards.code_tests import build_program, code_tests_reward, extract_code
from rewardloop.rewards.sandbox import (
    BACKEND_ENV,
    BACKENDS,
    SandboxLimits,
    run_many,
    run_python,
    sandbox_backend,
)

FAST = SandboxLimits(cpu_seconds=1, wall_seconds=2, memory_mb=256, max_output_bytes=8192)
ISOLATED = sandbox_backend() == "unshare"
# namespaces, or at least a different uid than the test's own (rlimits-only as root drops to a fresh uid)
CONTAINED = ISOLATED or os.geteuid() == 0
needs_namespaces = pytest.mark.skipif(not ISOLATED, reason="rlimits-only backend: no network/PID/mount isolation")
needs_containment = pytest.mark.skipif(not CONTAINED, reason="rlimits-only as non-root runs programs as this user")


def assert_next_program_runs() -> None:
    result = run_python("import sys; print(sum(range(10)), sys.stdin.read())", limits=FAST, stdin="still fine")
    assert result.ok, result
    assert result.stdout == "45 still fine\n"


def processes_with_cwd_containing(marker: str) -> list[int]:
    """Host pids whose working directory path contains ``marker`` (each attack chdirs into a uniquely named dir)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker in os.readlink(f"/proc/{entry}/cwd"):
                    found.append(int(entry))
            except OSError:
                continue
    return found


def test_backend_is_detected_and_limits_are_validated():
    assert sandbox_backend() in BACKENDS
    with pytest.raises(ValueError, match="cpu_seconds"):
        SandboxLimits(cpu_seconds=0)
    with pytest.raises(ValueError, match="memory_mb"):
        SandboxLimits(memory_mb=-1)


def test_falls_back_to_rlimits_only_with_a_warning_when_unshare_fails(monkeypatch, caplog):
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(sandbox, "_unshare_prefix", lambda root: ["/bin/false", "--"])  # as if unshare were refused
    with caplog.at_level(logging.WARNING, logger=sandbox.__name__):
        assert sandbox._detect_backend() == "rlimits-only"
    assert "NO network, process or filesystem isolation" in caplog.text
    monkeypatch.setenv(BACKEND_ENV, "docker")
    with pytest.raises(ValueError, match="allowed"):
        sandbox._detect_backend()


def test_infinite_loop_is_stopped_by_the_cpu_limit():
    # a generous wall limit, so that on a loaded machine the CPU limit (1 s of CPU) is still what ends it
    result = run_python("while True:\n    pass\n", limits=SandboxLimits(cpu_seconds=1, wall_seconds=20))
    assert result.timed_out and result.killed_reason == "cpu_time"
    assert result.returncode < 0
    assert_next_program_runs()


def test_sleeping_forever_is_stopped_by_the_wall_limit():
    result = run_python("import time\nprint('started', flush=True)\ntime.sleep(60)\n", limits=FAST)
    assert result.timed_out and result.killed_reason == "wall_timeout"
    assert result.stdout == "started\n"
    assert_next_program_runs()


def test_fork_bomb_is_capped_and_leaves_no_process_behind():
    marker = f"bomb-{secrets.token_hex(6)}"
    code = f"""
import os
os.mkdir({marker!r}); os.chdir({marker!r})
failures = 0
while True:
    try:
        os.fork()
    except OSError:
        failures += 1
        if failures == 1:
            print("fork refused", flush=True)
"""
    result = run_python(code, limits=FAST)
    assert "fork refused" in result.stdout  # RLIMIT_NPROC held: fork failed instead of flooding the host
    assert result.killed_reason in ("cpu_time", "wall_timeout")
    assert processes_with_cwd_containing(marker) == []
    assert_next_program_runs()


def test_memory_bomb_gets_memory_error():
    code = "chunks = []\nwhile True:\n    chunks.append(bytearray(32 * 2**20))\n"
    result = run_python(code, limits=FAST)
    assert "MemoryError" in result.stderr
    assert result.returncode == 1 and result.killed_reason is None
    assert_next_program_runs()


def test_output_flood_is_capped_and_killed():
    result = run_python("while True:\n    print('x' * 1000)\n", limits=FAST)
    assert result.killed_reason == "output_limit"
    assert len(result.stdout) <= FAST.max_output_bytes
    assert result.stdout.startswith("x" * 1000)
    assert_next_program_runs()


@needs_containment
def test_files_outside_the_workdir_cannot_be_changed(tmp_path):
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("original")
    code = f"""
import os, shutil
attempts = [
    ("remove", lambda: os.remove({str(sentinel)!r})),
    ("overwrite", lambda: open({str(sentinel)!r}, "w").write("pwned")),
    ("rmtree", lambda: shutil.rmtree({str(tmp_path)!r})),
    ("etc", lambda: open("/etc/rewardloop-sandbox-test", "w").write("pwned")),
]
for name, attempt in attempts:
    try:
        attempt()
        print(name, "succeeded")
    except OSError as e:
        print(name, "failed", type(e).__name__)
with open("inside.txt", "w") as f:
    f.write("workdir is writable")
print(open("inside.txt").read())
try:
    with open("big.bin", "wb") as f:
        f.write(b"0" * (2 * 2**20))
    print("big file written")
except OSError as e:
    print("big file refused", e.errno)
"""
    result = run_python(code, limits=FAST)
    assert result.ok, result.stderr
    assert sentinel.read_text() == "original"
    assert "succeeded" not in result.stdout
    assert not os.path.exists("/etc/rewardloop-sandbox-test")
    assert "workdir is writable" in result.stdout  # the throwaway working directory is usable
    assert "big file refused 27" in result.stdout  # EFBIG: RLIMIT_FSIZE (file_size_mb=1)
    assert_next_program_runs()


@needs_containment
def test_parent_environment_is_not_visible(monkeypatch):
    secret = f"s3cret-{secrets.token_hex(8)}"
    monkeypatch.setenv("REWARDLOOP_TEST_SECRET", secret)
    code = f"""
import os
print(sorted(os.environ))
print(os.environ.get("REWARDLOOP_TEST_SECRET"))
for pid in (os.getppid(), 1, {os.getpid()}):
    try:
        print(open(f"/proc/{{pid}}/environ", "rb").read())
    except OSError as e:
        print(pid, type(e).__name__)
"""
    result = run_python(code, limits=FAST)
    assert result.ok, result.stderr
    assert secret not in result.stdout + result.stderr
    assert result.stdout.splitlines()[0] == "['HOME', 'LANG', 'PATH', 'TMPDIR']"
    assert_next_program_runs()


@needs_namespaces
def test_network_connections_fail():
    server = socket.create_server(("127.0.0.1", 0))  # the kernel would queue a connection even without accept()
    port = server.getsockname()[1]
    code = f"""
import socket
for host in ("127.0.0.1", "1.1.1.1"):
    try:
        socket.create_connection((host, {port}), timeout=1).close()
        print(host, "connected")
    except OSError as e:
        print(host, "refused", type(e).__name__)
"""
    try:
        result = run_python(code, limits=FAST)
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.accept()  # nothing arrived
    finally:
        server.close()
    assert result.ok, result.stderr
    assert "connected" not in result.stdout and result.stdout.count("refused") == 2
    assert_next_program_runs()


@needs_containment
def test_killing_the_parent_or_host_processes_fails():
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    code = f"""
import os, signal
for pid in (os.getppid(), 1, {os.getpid()}, {bystander.pid}):
    try:
        os.kill(pid, signal.SIGKILL)
        print(pid, "signalled")
    except OSError as e:
        print(pid, "failed", type(e).__name__)
print("done", flush=True)
os.kill(-1, signal.SIGKILL)  # every process this uid may signal
"""
    try:
        result = run_python(code, limits=FAST)
        assert bystander.poll() is None  # a host process the program aimed at is alive
    finally:
        bystander.kill()
        bystander.wait()
    assert "done" in result.stdout
    assert f"{bystander.pid} signalled" not in result.stdout
    assert_next_program_runs()  # and so are the test process and the sandbox machinery


@needs_namespaces
def test_shell_commands_are_contained():
    token = secrets.token_hex(6)
    targets = [f"/tmp/rewardloop-escape-{token}", f"/var/tmp/rewardloop-escape-{token}"]
    code = f"""
import os, subprocess
print("system", os.system("touch {targets[0]}"))
print("run", subprocess.run(["sh", "-c", "echo x > {targets[1]}"]).returncode)
print("visible inside", os.path.exists("{targets[0]}"))
"""
    result = run_python(code, limits=FAST)
    assert result.ok, result.stderr
    assert "system 0" in result.stdout and "visible inside True" in result.stdout  # ran, in a private /tmp
    assert not any(os.path.exists(t) for t in targets)
    assert_next_program_runs()


ADD_PROMPT = 'def add(a, b):\n    """Return a + b."""\n'
ADD_TESTS = ["assert add(1, 2) == 3", "assert add(0, 0) == 0", "assert add(-1, 5) == 4", "assert add(2, 2) == 4"]


def test_code_tests_reward_measures_the_fraction_of_tests_passed():
    completions = [
        "    return a + b\n",  # continues the prompt (HumanEval style)
        "Here you go:\n```python\ndef add(a, b):\n    return b + a\n```\n",  # fenced full function
        "    return a * 2\n",  # right only when a == b: tests 2 and 4
        "    return a +\n",  # syntax error
        "def plus(a, b):\n    return a + b\n",  # wrong name: only the prompt's stub add() exists, returning None
        "    raise SystemExit(0)\n",
    ]
    rewards = code_tests_reward(
        [ADD_PROMPT] * len(completions), completions, tests=[ADD_TESTS] * len(completions), entry_point=["add"] * 6
    )
    assert rewards == [1.0, 1.0, 0.5, 0.0, 0.0, 0.0]


def test_code_tests_reward_cannot_be_forged_from_inside():
    forged_line = "print('\\n__rewardloop_result__ 4/4 ' + 'a' * 64, flush=True)\n"
    completions = [
        "    return 0\n" + "import os\n" + forged_line + "os._exit(0)\n",  # print a result line, skip the harness
        "    return 0\nimport builtins\nbuiltins.exec = lambda *a, **k: None\nbuiltins.compile = lambda *a, **k: None\n",
        "    return 0\nimport hashlib\nhashlib.sha256 = None\nimport __main__\n__main__.PAYLOAD = ('', '', (), None)\n",
    ]
    rewards = code_tests_reward(
        [ADD_PROMPT] * 3, completions, tests=[ADD_TESTS] * 3, entry_point=["add"] * 3, limits=FAST
    )
    assert rewards == [0.0, 0.25, 0.25]  # only add(0, 0) == 0 really passes


def test_code_tests_reward_rejects_bad_rows():
    with pytest.raises(ValueError, match=r"tests\[1\]"):
        code_tests_reward(["", ""], ["", ""], tests=[["assert True"], "assert True"])
    with pytest.raises(ValueError, match="entry_point"):
        code_tests_reward([""], [""], tests=[["assert True"]], entry_point=["a", "b"])


def test_run_many_keeps_order_and_results():
    programs = [f"import time\ntime.sleep({(7 - i) * 0.02})\nprint({i} * {i})" for i in range(8)]
    results = run_many(programs, limits=FAST, max_workers=4, stdins=[""] * 8)
    assert [r.stdout for r in results] == [f"{i * i}\n" for i in range(8)]
    assert all(r.ok for r in results)


def test_extract_code_and_build_program():
    assert extract_code("text\n```python\nx = 1\n```\nmore ```py\ny = 2\n```") == "x = 1"
    assert extract_code("```\nz = 3\n```") == "z = 3"
    assert extract_code("```python\nunterminated = 1\n") == "unterminated = 1\n"
    assert extract_code("plain = 4") == "plain = 4"
    assert build_program(ADD_PROMPT, "    return a + b\n", "add") == ADD_PROMPT + "    return a + b\n"
    full = "def add(a, b):\n    return a + b\n"
    assert build_program(ADD_PROMPT, full, "add") == full
    assert build_program("Write add(a, b).", full, "add") == full
    assert build_program("Write a function.", "x = 1", None) == "x = 1"  # prose prompt: code alone
