"""Run untrusted generated Python in a contained child process, and score code completions by unit tests.

Every program runs in its own short-lived process tree (backend ``"unshare"``, used wherever it works)::

    host ── unshare: new PID, network, mount, IPC, UTS, cgroup namespaces
              └─ pid 1: this file's ``_boot`` (sets up mounts, stays privileged, waits)
                   └─ python -I -S -B main.py   (the program: unprivileged, rlimited, clean environment)

What is contained, and how:

* **CPU time**: RLIMIT_CPU (SIGXCPU at ``cpu_seconds``, SIGKILL a second later).
* **wall time**: the host kills the process group after ``wall_seconds``; pid 1 also arms an alarm. When pid 1
  dies the kernel kills every process left in the PID namespace (background children, fork bombs).
* **memory**: RLIMIT_AS, so large allocations raise MemoryError in the child.
* **file size**: RLIMIT_FSIZE; the only writable places are small private tmpfs (``/tmp``, ``/var/tmp``, ``/dev/shm``).
* **process count**: RLIMIT_NPROC, which the kernel ignores for root, so the program never runs as root: a root host
  gives each concurrent run a fresh unused uid (no groups, no capabilities); a normal user gets a user namespace
  that maps it to uid 65534, with the capabilities pid 1 needed dropped before the program starts.
* **network**: the new network namespace holds only a downed loopback, so no connection reaches anything.
* **filesystem**: in the private mount namespace every other mount is remounted read-only and nosuid; ``/root``,
  ``/home`` and ``/run`` are hidden behind empty tmpfs (the interpreter's prefix is bound back, read-only).
* **other processes**: the PID namespace has its own ``/proc``; no host process is visible or can be signalled.
* **environment**: only PATH, LANG, HOME and TMPDIR; stdin is a pipe carrying the given text, then EOF.
* **output**: stdout and stderr are read with a cap each (``max_output_bytes``); past it the run is killed.

Backend ``"rlimits-only"`` (``unshare`` missing or not permitted, e.g. unprivileged user namespaces disabled) keeps
the rlimits, the clean environment, the output cap, the throwaway directory and, when run as root, the uid drop, but
has no network, PID or filesystem isolation; a warning says so. ``sandbox_backend()`` tells which one is active and
``REWARDLOOP_SANDBOX_BACKEND`` forces one. Details and limitations: docs/guides/sandbox.md.
"""

from __future__ import annotations

# Only what the in-sandbox boot needs: this file is also the boot script, started once per program.
import json
import math
import os
import resource
import signal
import sys

BACKENDS = ("unshare", "rlimits-only")
BACKEND_ENV = "REWARDLOOP_SANDBOX_BACKEND"
_UID_BASE = 1_500_000_000  # root hosts: uids nobody owns files or processes with; one per concurrent run
_UID_SLOTS = 64  # concurrent runs per host process (more wait for a free uid)
_NS_UID = 65534  # the program's uid inside a user namespace (non-root hosts)
_WORKDIR_NS = "/tmp/work"
_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm")  # private tmpfs, writable
_HIDDEN = ("/root", "/home", "/run")  # private empty tmpfs, read-only
_CHILD_PATH = "/usr/local/bin:/usr/bin:/bin"
_MAX_OPEN_FILES = 256

# mount(2) / prctl(2) constants (linux/mount.h, linux/prctl.h)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC, MS_RELATIME, MS_STRICTATIME = 1024, 2048, 4096, 16384, 1 << 21, 1 << 24
_KEPT_MOUNT_FLAGS = {"nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME, "nodiratime": MS_NODIRATIME}
PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 38, 47, 4


# ---------------------------------------------------------------------------------------------------------------
# Inside the sandbox: `python -I -S -B sandbox.py --boot CONFIG` (pid 1 of the namespaces, or a plain child)
# ---------------------------------------------------------------------------------------------------------------


def _boot(config_json: str) -> int:
    """Set up the filesystem, fork the program, wait for it and report its status on the status pipe."""
    cfg = json.loads(config_json)
    status_fd = cfg["status_fd"]
    os.set_inheritable(status_fd, False)
    try:
        stdin_data = sys.stdin.buffer.read()
        with open(os.path.join(cfg["hostdir"], "main.py"), "rb") as f:
            program = f.read()
        libc = _libc()
        workdir = _prepare_workdir(cfg, program, libc)
    except Exception as e:
        _report(status_fd, {"setup_error": f"{type(e).__name__}: {e}"})
        return 125
    stdin_r, stdin_w = os.pipe()  # a pipe, not a file: the program cannot seek back to text it was not meant to see
    pid = os.fork()
    if pid == 0:
        os.close(stdin_w)
        _exec_program(cfg, workdir, stdin_r, libc)
    os.close(stdin_r)
    _report(status_fd, {"started": True})  # from here on, a missing final status is the program's doing
    _write_stdin(stdin_w, stdin_data)
    import time

    deadline = time.monotonic() + math.ceil(cfg["limits"]["wall_seconds"]) + 2

    def on_alarm(*_: object) -> None:  # the host is gone or late: end the run ourselves
        if time.monotonic() < deadline - 0.5:  # not our alarm: the program (same uid in a user namespace) sent it
            return
        # the program's own group when it called setsid; else the host kills the rest of the group
        _quietly(os.killpg if cfg["isolate"] else os.kill, pid, signal.SIGKILL)
        _report(status_fd, {"kind": "signal", "code": signal.SIGKILL, "cpu_s": 0.0})
        os._exit(137)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(math.ceil(cfg["limits"]["wall_seconds"]) + 2)
    _, wstatus, usage = os.wait4(pid, 0)  # a handler that returns (spurious SIGALRM): retried (PEP 475)
    signal.alarm(0)
    cpu_s = usage.ru_utime + usage.ru_stime
    if os.WIFSIGNALED(wstatus):
        _report(status_fd, {"kind": "signal", "code": os.WTERMSIG(wstatus), "cpu_s": cpu_s})
        return 128 + os.WTERMSIG(wstatus)
    _report(status_fd, {"kind": "exit", "code": os.WEXITSTATUS(wstatus), "cpu_s": cpu_s})
    return os.WEXITSTATUS(wstatus)


def _write_stdin(fd: int, data: bytes) -> None:
    def write() -> None:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError:  # the program exited without reading it all
            pass
        os.close(fd)

    if len(data) <= 4096:  # fits in any pipe buffer: cannot block
        write()
    else:
        import threading

        threading.Thread(target=write, daemon=True).start()


def _report(fd: int, status: dict) -> None:  # one JSON object a line: {"started": true}, then how it ended
    _quietly(os.write, fd, json.dumps(status).encode() + b"\n")


def _quietly(fn, *args) -> bool:  # contextlib.suppress without importing contextlib here
    try:
        fn(*args)
    except OSError:
        return False
    return True


def _libc():  # -> ctypes.CDLL
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if sys.platform.startswith("linux"):
        libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
        libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return libc


def _check(ret: int, what: str) -> None:
    if ret != 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _prepare_workdir(cfg: dict, program: bytes, libc) -> str:
    os.umask(0o022)
    if cfg["isolate"]:
        _isolate_filesystem(cfg, libc)
        workdir = _WORKDIR_NS
        os.mkdir(workdir, 0o700)
    else:
        workdir = cfg["hostdir"]
    path = os.path.join(workdir, "main.py")
    with open(path, "wb") as f:
        f.write(program)
    if cfg["uid"] is not None:
        for p in (workdir, path):
            os.chown(p, cfg["uid"], cfg["uid"])
    return workdir


def _isolate_filesystem(cfg: dict, libc) -> None:
    """Private tmpfs over the writable and hidden places, the interpreter bound back, everything else read-only."""
    tmpfs_mb = max(16, 4 * int(cfg["limits"]["file_size_mb"]))
    exposed = [(p, os.open(p, os.O_PATH | os.O_DIRECTORY)) for p in cfg["expose"]]  # before tmpfs hides them
    for target in _WRITABLE + _HIDDEN:
        if os.path.isdir(target) and not os.path.islink(target):
            mode = "1777" if target in _WRITABLE else "755"
            opts = f"size={tmpfs_mb}m,nr_inodes=4096,mode={mode}".encode()
            _check(libc.mount(b"tmpfs", target.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, opts), f"tmpfs on {target}")
    for path, fd in exposed:
        os.makedirs(path, exist_ok=True)
        _check(libc.mount(f"/proc/self/fd/{fd}".encode(), path.encode(), None, MS_BIND | MS_REC, None), f"bind {path}")
        os.close(fd)
    for mountpoint, options in _mounts():
        if mountpoint in _WRITABLE or mountpoint == "/proc" or mountpoint.startswith("/proc/"):
            continue
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID
        flags |= sum(bit for name, bit in _KEPT_MOUNT_FLAGS.items() if name in options)
        # keep the atime mode: a user namespace may not change it, and remount defaults to relatime
        flags |= MS_RELATIME if "relatime" in options else 0 if "noatime" in options else MS_STRICTATIME
        ret = libc.mount(None, mountpoint.encode(), None, flags, None)
        if ret != 0 and os.path.exists(mountpoint):  # a mount under a hidden directory is unreachable anyway
            _check(ret, f"read-only remount of {mountpoint}")


def _mounts() -> list[tuple[str, set[str]]]:
    """(mount point, per-mount options) from /proc/self/mountinfo, in mount order."""
    mounts = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            head, *escaped = fields[4].split("\\")  # every backslash starts an octal escape (\040 = space)
            point = head + "".join(chr(int(e[:3], 8)) + e[3:] for e in escaped)
            mounts.append((point, set(fields[5].split(","))))
    return mounts


def _exec_program(cfg: dict, workdir: str, stdin_fd: int, libc) -> None:
    """Child after fork: limits, privileges dropped, clean environment, exec. Never returns."""
    try:
        if cfg["isolate"]:
            os.setsid()  # its own process group: killpg(0) inside cannot reach pid 1's group
        os.dup2(stdin_fd, 0)
        os.chdir(workdir)
        os.closerange(3, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        _set_rlimits(cfg["limits"], cfg["nproc"])
        if cfg["uid"] is not None:  # root host: a fresh uid, no supplementary groups; capabilities go with uid 0
            os.setgroups([])
            os.setresgid(cfg["uid"], cfg["uid"], cfg["uid"])
            os.setresuid(cfg["uid"], cfg["uid"], cfg["uid"])
        if sys.platform.startswith("linux"):
            # user namespace: the ambient capabilities `unshare --keep-caps` gave pid 1 must not survive exec
            _check(libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient capabilities")
            _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")  # setuid binaries stay powerless
        env = {"PATH": _CHILD_PATH, "LANG": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir}
        os.execve(cfg["python"], [cfg["python"], "-I", "-S", "-B", "main.py"], env)
    except BaseException as e:
        _quietly(os.write, 2, f"sandbox: cannot start the program: {e}\n".encode())
    os._exit(127)


def _set_rlimits(limits: dict, nproc: int) -> None:
    cpu = max(1, math.ceil(limits["cpu_seconds"]))
    mb = 1 << 20
    wanted = {
        resource.RLIMIT_CPU: (cpu, cpu + 1),  # SIGXCPU at the soft limit, SIGKILL at the hard one
        resource.RLIMIT_AS: (int(limits["memory_mb"] * mb),) * 2,
        resource.RLIMIT_FSIZE: (int(limits["file_size_mb"] * mb),) * 2,
        resource.RLIMIT_CORE: (0, 0),
        resource.RLIMIT_NOFILE: (_MAX_OPEN_FILES, _MAX_OPEN_FILES),
    }
    if nproc:
        wanted[resource.RLIMIT_NPROC] = (nproc, nproc)
    for res, (soft, hard) in wanted.items():
        _, hard_now = resource.getrlimit(res)
        if hard_now != resource.RLIM_INFINITY:  # an unprivileged process can only lower its hard limits
            soft, hard = min(soft, hard_now), min(hard, hard_now)
        resource.setrlimit(res, (soft, hard))


if __name__ == "__main__" and sys.argv[1:2] == ["--boot"]:
    sys.exit(_boot(sys.argv[2]))

# Host side. Imported after the boot entry point above, so the sandboxed process never pays for them.
import contextlib  # noqa: E402
import logging  # noqa: E402
import selectors  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator, Sequence  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from typing import Any  # noqa: E402

logger = logging.getLogger(__name__)


class SandboxError(RuntimeError):
    """The sandbox itself could not be set up (never raised for anything the program does)."""


@dataclass(frozen=True)
class SandboxLimits:
    """Limits for one program. ``cpu_seconds`` is rounded up to whole seconds (RLIMIT_CPU's unit); ``wall_seconds``
    includes the ~0.1 s of sandbox start-up."""

    cpu_seconds: float = 2
    wall_seconds: float = 5
    memory_mb: int = 512
    file_size_mb: int = 1
    max_processes: int = 16
    max_output_bytes: int = 65536

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"SandboxLimits.{name} must be a positive number, got {value!r}")


DEFAULT_LIMITS = SandboxLimits()


@dataclass
class SandboxResult:
    """What one program did. ``returncode`` is -N when signal N ended it (or the sandbox killed it)."""

    returncode: int
    stdout: str
    stderr: str
    timed_out: bool  # the CPU or wall time limit ended it
    killed_reason: (
        str | None
    )  # "wall_timeout" | "cpu_time" | "output_limit" | "signal:SIGSEGV" | "sandbox_killed" | ... | None
    duration_s: float

    @property
    def ok(self) -> bool:
        """Exited with status 0 by itself."""
        return self.returncode == 0 and self.killed_reason is None


# ---------------------------------------------------------------------------------------------------------------
# Backend detection
# ---------------------------------------------------------------------------------------------------------------

_backend_lock = threading.Lock()
_backend: str | None = None


def sandbox_backend() -> str:
    """The active backend, ``"unshare"`` or ``"rlimits-only"``, detected (by a trial run) on first use."""
    global _backend
    with _backend_lock:
        if _backend is None:
            _backend = _detect_backend()
        return _backend


def _detect_backend() -> str:
    forced = os.environ.get(BACKEND_ENV)
    if forced:
        if forced not in BACKENDS:
            raise ValueError(f"{BACKEND_ENV}={forced!r} is not a sandbox backend; allowed: {list(BACKENDS)}")
        problem = _probe(forced)
        if problem:
            raise SandboxError(f"{BACKEND_ENV}={forced} does not work here: {problem}")
        logger.info("sandbox backend: %s (forced by %s)", forced, BACKEND_ENV)
        return forced
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        problem = "not Linux" if not sys.platform.startswith("linux") else "no `unshare` on PATH"
    else:
        problem = _probe("unshare")
    if problem is None:
        who = "as root: uid drop per run" if os.geteuid() == 0 else "user namespace, uid 65534"
        logger.info("sandbox backend: unshare (pid+net+mount+ipc+uts namespaces, %s)", who)
        return "unshare"
    logger.warning(
        "sandbox backend: rlimits-only (%s): programs get resource limits but NO network, process or filesystem "
        "isolation; see docs/guides/sandbox.md",
        problem,
    )
    problem = _probe("rlimits-only")
    if problem:
        raise SandboxError(f"the sandbox cannot run programs here: {problem}")
    return "rlimits-only"


def _probe(backend: str) -> str | None:
    try:
        result = _run("print('ok')", SandboxLimits(wall_seconds=10), "", backend)
    except (OSError, SandboxError) as e:
        return str(e)
    if result.returncode != 0 or result.stdout.strip() != "ok":
        return f"trial run failed (returncode {result.returncode}): {result.stderr.strip()[-400:]}"
    return None


# ---------------------------------------------------------------------------------------------------------------
# Host side: start, feed, read with caps, kill, clean up
# ---------------------------------------------------------------------------------------------------------------


class _UidPool:
    """Distinct uids for concurrent runs on a root host, so RLIMIT_NPROC counts each run's processes alone."""

    def __init__(self, slots: int) -> None:
        self._free = list(range(slots))
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def uid(self) -> Iterator[int]:
        with self._cond:
            while not self._free:
                self._cond.wait()
            slot = self._free.pop()
        try:  # offset by pid so two host processes rarely share a uid
            yield _UID_BASE + (os.getpid() % 10_000) * _UID_SLOTS + slot
        finally:
            with self._cond:
                self._free.append(slot)
                self._cond.notify()


_UID_POOL = _UidPool(_UID_SLOTS)


def run_python(code: str, *, limits: SandboxLimits = DEFAULT_LIMITS, stdin: str = "") -> SandboxResult:
    """Run ``code`` as a Python program (stdlib only) in the sandbox; return its status and capped output."""
    return _run(code, limits, stdin, sandbox_backend())


def run_many(
    programs: Sequence[str],
    *,
    limits: SandboxLimits = DEFAULT_LIMITS,
    max_workers: int | None = None,
    stdins: Sequence[str] | None = None,
) -> list[SandboxResult]:
    """Run programs in parallel (threads driving sandboxed processes); results are in the order of ``programs``."""
    from concurrent.futures import ThreadPoolExecutor

    if stdins is not None and len(stdins) != len(programs):
        raise ValueError(f"run_many: {len(stdins)} stdins for {len(programs)} programs")
    backend = sandbox_backend()
    inputs = list(stdins) if stdins is not None else [""] * len(programs)
    workers = max(1, min(max_workers or os.cpu_count() or 1, _UID_SLOTS, len(programs) or 1))
    with ThreadPoolExecutor(workers, thread_name_prefix="sandbox") as pool:
        return list(pool.map(lambda p, s: _run(p, limits, s, backend), programs, inputs))


def _run(code: str, limits: SandboxLimits, stdin: str, backend: str) -> SandboxResult:
    isolate, root = backend == "unshare", os.geteuid() == 0
    start = time.monotonic()
    with (
        _UID_POOL.uid() as uid,
        tempfile.TemporaryDirectory(prefix="rewardloop-sandbox-", ignore_cleanup_errors=True) as hostdir,
    ):
        with open(os.path.join(hostdir, "main.py"), "w", encoding="utf-8") as f:
            f.write(code)
        status_r, status_w = os.pipe()  # pid 1 reports how the program ended; the program cannot write to it
        try:
            cfg = _boot_config(hostdir, status_w, limits, isolate=isolate, uid=uid if root else None)
            prefix = _unshare_prefix(root) if isolate else []
            argv = [*prefix, sys.executable, "-I", "-S", "-B", os.path.abspath(__file__), "--boot", json.dumps(cfg)]
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(status_w,),
                start_new_session=True,  # one process group to kill
                env={"PATH": _CHILD_PATH, "LANG": "C.UTF-8"},
                cwd=hostdir,
            )
        except BaseException:
            os.close(status_r)
            raise
        finally:
            os.close(status_w)
        try:
            threading.Thread(target=_feed, args=(proc.stdin, stdin.encode()), daemon=True).start()
            out, err, status, reason = _collect(proc, status_r, limits, start + limits.wall_seconds)
        finally:
            os.close(status_r)
            _stop(proc, isolate=isolate, kill_uid=uid if root and not isolate else None)
    if "setup_error" in status:
        raise SandboxError(f"sandbox setup failed: {status['setup_error']}")
    return _result(proc, out, err, status, reason, limits, time.monotonic() - start)


def _unshare_prefix(root: bool) -> list[str]:
    unshare = shutil.which("unshare") or "unshare"
    namespaces = ["--pid", "--fork", "--kill-child", "--mount-proc", "--net", "--ipc", "--uts", "--cgroup"]
    # Not root: a user namespace makes the mounts possible; pid 1 keeps capabilities (as uid 65534) until the fork.
    user = [] if root else ["--user", f"--map-user={_NS_UID}", f"--map-group={_NS_UID}", "--keep-caps"]
    return [unshare, *user, *namespaces, "--"]


def _boot_config(hostdir: str, status_fd: int, limits: SandboxLimits, *, isolate: bool, uid: int | None) -> dict:
    python, prefixes = _interpreter(uid is not None and not isolate)
    if uid is not None:
        nproc = limits.max_processes
    elif isolate:
        nproc = limits.max_processes + 1  # pid 1 shares the namespace uid
    else:
        nproc = _count_processes(os.getuid()) + limits.max_processes if sys.platform.startswith("linux") else 0
    hidden = _WRITABLE + _HIDDEN
    expose = sorted(p for p in prefixes if any(p == h or p.startswith(h + "/") for h in hidden))
    return {
        "hostdir": hostdir,
        "status_fd": status_fd,
        "isolate": isolate,
        "uid": uid,
        "python": python,
        "expose": [p for p in expose if not any(p.startswith(q + "/") for q in expose)],
        "nproc": nproc,
        "limits": asdict(limits),
    }


def _interpreter(needs_world_access: bool) -> tuple[str, set[str]]:
    """The program's interpreter (the base one behind a venv) and the prefixes it loads from."""
    python = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    prefixes = {os.path.realpath(p) for p in (sys.base_prefix, sys.base_exec_prefix)}
    prefixes.add(os.path.dirname(os.path.dirname(python)))
    if not needs_world_access or all(_world_usable(p) for p in (python, *prefixes)):
        return python, prefixes
    # rlimits-only as root: the program's uid may not reach e.g. /root/.pyenv; use a system interpreter instead.
    for candidate in ("/usr/local/bin/python3", "/usr/bin/python3"):
        real = os.path.realpath(candidate)
        if os.path.exists(real) and _world_usable(real) and _world_usable(os.path.dirname(os.path.dirname(real))):
            return real, {os.path.dirname(os.path.dirname(real))}
    raise SandboxError(f"no Python interpreter an unprivileged uid can run ({python} is not world-accessible)")


def _world_usable(path: str) -> bool:
    """Every component of ``path`` has the others-execute bit (directories traversable, the file runnable)."""
    parts = os.path.abspath(path).split("/")
    return all(os.stat("/".join(parts[:i])).st_mode & 0o001 for i in range(2, len(parts) + 1))


def _count_processes(uid: int) -> int:
    count = 0
    for entry in _proc_entries():
        if entry.isdigit():
            with contextlib.suppress(OSError):
                count += os.stat(f"/proc/{entry}").st_uid == uid
    return count


def _feed(pipe: Any, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the sandbox may exit (or be killed) without reading
        if data:
            pipe.write(data)
        pipe.close()


def _collect(
    proc: subprocess.Popen, status_r: int, limits: SandboxLimits, deadline: float
) -> tuple[bytes, bytes, dict, str | None]:
    """Read stdout, stderr and the status pipe until EOF, the deadline or an output cap (the reason to kill)."""
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    bufs = {out_fd: bytearray(), err_fd: bytearray(), status_r: bytearray()}
    caps = {out_fd: limits.max_output_bytes, err_fd: limits.max_output_bytes, status_r: 65536}
    reason = None
    with selectors.DefaultSelector() as sel:
        for fd in bufs:
            sel.register(fd, selectors.EVENT_READ)
        while sel.get_map() and reason is None:
            left = deadline - time.monotonic()
            if left <= 0:
                reason = "wall_timeout"
                break
            for key, _ in sel.select(left):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fd)
                    continue
                buf = bufs[key.fd]
                buf += chunk
                if len(buf) > caps[key.fd]:
                    del buf[caps[key.fd] :]
                    reason = "output_limit"
    if reason is None and not _exited(proc.pid, deadline):
        reason = "wall_timeout"  # pipes closed but the process lingers (rlimits-only: a detached child)
    status: dict = {}
    for line in bytes(bufs[status_r]).splitlines():
        with contextlib.suppress(ValueError, TypeError):
            status.update(json.loads(line))
    return bytes(bufs[out_fd]), bytes(bufs[err_fd]), status, reason


def _exited(pid: int, deadline: float) -> bool:
    """Wait (without reaping, so the process group id cannot be reused) until ``pid`` exits or the deadline."""
    while True:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)


def _killpg(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _stop(proc: subprocess.Popen, *, isolate: bool, kill_uid: int | None) -> None:
    """End the run for good, then reap it. With namespaces, killing pid 1 makes the kernel kill every process in
    them and ``unshare`` exits only once they are all gone, so nothing outlives the run (or holds its uid)."""
    if isolate and not _exited(proc.pid, time.monotonic()):
        for pid in _children(proc.pid):  # pid 1 of the namespaces
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _exited(proc.pid, time.monotonic() + 10)
    _killpg(proc.pid)
    deadline = time.monotonic() + 5
    while not isolate and _group_alive(proc.pid) and time.monotonic() < deadline:  # wait until SIGKILL took effect
        time.sleep(0.02)
        _killpg(proc.pid)
    if kill_uid is not None:  # rlimits-only as root: detached children escaped the group; all of this uid are ours
        for _ in range(3):
            subprocess.run(
                ["kill", "-s", "KILL", "--", "-1"],  # run as the uid: signals exactly its processes
                user=kill_uid,
                group=kill_uid,
                extra_groups=[],
                env={"PATH": _CHILD_PATH},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=10,
                check=False,
            )
            if _count_processes(kill_uid) == 0:
                break
            time.sleep(0.05)
    proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        pipe.close()


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` other than its (zombie) leader is still running."""
    for entry in _proc_entries():
        if entry.isdigit() and int(entry) != pgid:
            try:
                with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as f:
                    state, _ppid, pgrp = f.read().rsplit(")", 1)[1].split()[:3]
            except (OSError, ValueError):
                continue
            if int(pgrp) == pgid and state != "Z":
                return True
    return False


def _proc_entries() -> list[str]:
    return os.listdir("/proc") if os.path.isdir("/proc") else []  # no /proc (macOS): skip these checks


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def _result(
    proc: subprocess.Popen,
    out: bytes,
    err: bytes,
    status: dict,
    reason: str | None,
    limits: SandboxLimits,
    duration: float,
) -> SandboxResult:
    if "kind" in status:
        code = int(status["code"])
        returncode = code if status["kind"] == "exit" else -code
    elif reason is not None or proc.returncode < 0:  # killed before pid 1 could report
        returncode = proc.returncode if proc.returncode < 0 else -signal.SIGKILL
    elif status.get("started"):  # the program ran, and pid 1 died without a word: the program's doing, not ours
        returncode, reason = -signal.SIGKILL, "sandbox_killed"
    else:
        tail = err.decode("utf-8", errors="replace").strip()[-400:]
        raise SandboxError(f"the sandbox exited ({proc.returncode}) without a status: {tail}")
    if reason is None and returncode < 0:
        if -returncode == signal.SIGXCPU or status.get("cpu_s", 0) >= math.ceil(limits.cpu_seconds):
            reason = "cpu_time"
        else:
            reason = f"signal:{_signal_name(-returncode)}"
    return SandboxResult(
        returncode=returncode,
        stdout=out.decode("utf-8", errors="replace"),
        stderr=err.decode("utf-8", errors="replace"),
        timed_out=reason in ("wall_timeout", "cpu_time"),
        killed_reason=reason,
        duration_s=duration,
    )


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)
