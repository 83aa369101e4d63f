"""Durability: a writer process acknowledges each feedback row (prints its id after add_feedback returned), is
killed with SIGKILL mid-stream, and every acknowledged id is in the database after reopening."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from rewardloop.store import Store

N_ROWS = 5000  # far more than are written before the kill
KILL_AFTER = 150  # acknowledged rows seen before SIGKILL

WRITER = textwrap.dedent(
    """
    import sys
    from rewardloop.store import Store

    store = Store.open(sys.argv[1])
    rid = store.log_interaction(id="resp-durable", prompt="p", completion="c")
    print("ready", flush=True)
    for i in range(int(sys.argv[2])):
        fid, created = store.add_feedback(response_id=rid, kind="engagement", event="click", idempotency_key=f"k{i}")
        print(fid, flush=True)
    """
)


def test_acknowledged_feedback_survives_sigkill(store_url):
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, store_url, str(N_ROWS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    acked: list[int] = []
    deadline = time.monotonic() + 120
    try:
        while len(acked) < KILL_AFTER and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if not ready:
                assert proc.poll() is None, f"writer exited early: {proc.stderr.read()}"
                continue
            line = proc.stdout.readline().strip()
            assert line, f"writer exited early: {proc.stderr.read()}"
            if line != "ready":
                acked.append(int(line))
    finally:
        proc.send_signal(signal.SIGKILL)  # mid-stream: the writer is still posting
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    # acknowledgements that were already in the pipe when the writer died count too
    acked += [int(x) for x in proc.stdout.read().split() if x != "ready"]
    proc.stdout.close()
    proc.stderr.close()
    assert len(acked) >= KILL_AFTER
    with Store.open(store_url) as store:
        stored = {r["id"] for r in store.feedback_since(0)}
    lost = set(acked) - stored
    assert not lost, f"{len(lost)} acknowledged rows lost: {sorted(lost)[:10]}"
    assert len(stored) < N_ROWS  # it really was killed mid-stream


@pytest.mark.slow  # four fresh interpreters importing the store: ~20 s each on a loaded 2-core machine
def test_processes_opening_a_new_store_at_once_all_succeed(store_url):
    """A server and a loop started together on a fresh database: each migrates or finds the schema at head."""
    code = "import sys; from rewardloop.store import Store; Store.open(sys.argv[1]).close()"
    procs = [subprocess.Popen([sys.executable, "-c", code, store_url], stderr=subprocess.PIPE) for _ in range(4)]
    errors = [p.communicate(timeout=120)[1].decode()[-500:] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors
    with Store.open(store_url) as s:
        assert s.models() == []
