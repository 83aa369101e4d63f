"""Durability of ``rewardloop serve`` under HTTP load: SIGKILL the server while concurrent clients post feedback (and
a few generate), restart it on the same store, and count acknowledged events missing from the database.

    python -m benchmarks.serve_kill9 [--rounds 3] [--writers 8] [--kill-after 400] [--generators 2] [--pg URL]

Each round starts ``rewardloop serve`` (a subprocess on loopback, the tiny ``llama-1m`` preset on CPU), drives
``--writers`` threads posting ``POST /v1/feedback`` (one of them ``/v1/feedback/batch`` with 5 items) and
``--generators`` threads posting ``/v1/completions``, and sends SIGKILL once ``--kill-after`` feedback events have
been acknowledged (a 2xx answer). After the last round the server is restarted once more and every event ever sent is
posted again, as a client retrying after the crash would. Counted, per backend:

- ``lost``: acknowledged events (and acknowledged generation ids) not in the database — must be 0;
- ``duplicates``: feedback rows beyond one per idempotency key — must be 0;
- ``retry_created``: acknowledged events that the retry pass stored anew (i.e. had been lost) — must be 0;
- ``inflight_committed``: events committed but never acknowledged (the kill cut the answer) — allowed, stored once.

SQLite always (a file in a temporary directory); PostgreSQL when ``--pg`` (default ``$REWARDLOOP_TEST_PG_URL``)
is given, in a database the benchmark creates and drops. Exits 1 when anything acknowledged was lost or duplicated.
Bounded: ``--rounds`` × ``--kill-after`` events, ``--timeout`` seconds per phase.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
from sqlalchemy import func, select

from benchmarks.store_ingest import _pg_database
from rewardloop.store import Feedback, Interaction, Store, StoreError

MODEL = "kill9"
RESPONSE_ID = "resp-kill9"  # the interaction every feedback event points at (created before the first start)
BATCH = 5  # items per /v1/feedback/batch post


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(url: str, port: int, log: Path, timeout: float) -> subprocess.Popen:
    """``rewardloop serve`` in a subprocess; returns once /health answers."""
    argv = [
        sys.executable,
        "-c",
        "import sys; from rewardloop.cli import main; sys.exit(main())",
        "serve",
        "model.device=cpu",
        f"serve.port={port}",
        f"serve.model_name={MODEL}",
        "serve.log_level=warning",
        f"store.url={url}",
    ]
    with log.open("a") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the server did not answer /health within {timeout} s:\n{log.read_text()[-3000:]}")


class Load:
    """Writer and generator threads against one server, until it dies or ``stop`` is set."""

    def __init__(self, base: str, tag: str, writers: int, generators: int) -> None:
        self.base, self.tag = base, tag
        self.sent: set[str] = set()  # idempotency keys posted (acknowledged or not)
        self.acked: set[str] = set()  # keys whose post got a 2xx answer
        self.acked_gen: set[str] = set()  # response ids of answered completions
        self.statuses: Counter = Counter()  # non-2xx answers before the kill, by status
        self.lock, self.stop = threading.Lock(), threading.Event()
        self.threads = [threading.Thread(target=self.write, args=(w,)) for w in range(writers)]
        self.threads += [threading.Thread(target=self.generate, args=(g,)) for g in range(generators)]

    def start(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)

    def write(self, w: int) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as client:
            i = 0
            while not self.stop.is_set():
                n = BATCH if w == 0 else 1  # writer 0 posts batches
                keys = [f"{self.tag}-w{w}-{i + j}" for j in range(n)]
                i += n
                items = [{"response_id": RESPONSE_ID, "kind": "engagement", "event": "click", "idempotency_key": k} for k in keys]  # fmt: skip
                with self.lock:
                    self.sent.update(keys)
                try:
                    if n == 1:
                        r = client.post("/v1/feedback", json=items[0])
                    else:
                        r = client.post("/v1/feedback/batch", json={"items": items})
                except httpx.TransportError:
                    return  # the server is gone
                with self.lock:
                    if r.is_success:
                        self.acked.update(keys)
                    else:
                        self.statuses[r.status_code] += 1

    def generate(self, g: int) -> None:
        with httpx.Client(base_url=self.base, timeout=60) as client:
            i = 0
            while not self.stop.is_set():
                body = {"model": MODEL, "prompt": f"{self.tag} {g} {i}", "max_tokens": 8, "temperature": 0}
                i += 1
                try:
                    r = client.post("/v1/completions", json=body)
                except httpx.TransportError:
                    return
                with self.lock:
                    if r.is_success:
                        self.acked_gen.add(r.json()["id"])
                    else:
                        self.statuses[r.status_code] += 1


def kill_round(url: str, tag: str, args: argparse.Namespace, log: Path) -> Load:
    """Start the server, load it, SIGKILL it after ``kill_after`` acknowledged events; the load's record."""
    port = free_port()
    proc = start_server(url, port, log, args.timeout)
    load = Load(f"http://127.0.0.1:{port}", tag, args.writers, args.generators).start()
    deadline = time.monotonic() + args.timeout
    while len(load.acked) < args.kill_after and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.005)
    if proc.poll() is not None:
        load.join()
        raise RuntimeError(f"the server died before the kill:\n{log.read_text()[-3000:]}")
    proc.send_signal(signal.SIGKILL)  # mid-load: the writers are posting
    proc.wait(timeout=30)
    load.join()
    return load


def stored_keys(store: Store) -> tuple[set[str], int]:
    with store._session() as s:
        keys = set(s.scalars(select(Feedback.idempotency_key)))
        rows = s.scalar(select(func.count()).select_from(Feedback))
    return keys, rows


def run_backend(backend: str, url: str, args: argparse.Namespace, workdir: Path) -> dict:
    with Store.open(url) as store, contextlib.suppress(StoreError):  # StoreError: already there
        store.log_interaction(id=RESPONSE_ID, prompt="kill -9", completion="acknowledged")
    log = workdir / f"{backend}-server.log"
    loads = [kill_round(url, f"{backend}-r{r}", args, log) for r in range(args.rounds)]
    sent = set().union(*(x.sent for x in loads))
    acked = set().union(*(x.acked for x in loads))
    acked_gen = set().union(*(x.acked_gen for x in loads))
    with Store.open(url) as store:
        keys, rows = stored_keys(store)
        with store._session() as s:
            gen_stored = (
                set(s.scalars(select(Interaction.id).where(Interaction.id.in_(acked_gen)))) if acked_gen else set()
            )
    result = {
        "backend": backend,
        "rounds": args.rounds,
        "acked": len(acked),
        "lost": len(acked - keys),
        "inflight_committed": len((keys & sent) - acked),
        "acked_generations": len(acked_gen),
        "lost_generations": len(acked_gen - gen_stored),
        "duplicates": rows - len(keys),
        "errors_before_kill": dict(sum((x.statuses for x in loads), Counter())),
    }
    # the restart: a client retries everything it ever sent; acknowledged events must come back as already stored
    port = free_port()
    proc = start_server(url, port, log, args.timeout)
    created = Counter()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for key in sorted(sent):
                body = {"response_id": RESPONSE_ID, "kind": "engagement", "event": "click", "idempotency_key": key}
                r = client.post("/v1/feedback", json=body)
                r.raise_for_status()
                created["acked" if key in acked else "unacked"] += r.json()["created"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    with Store.open(url) as store:
        keys, rows = stored_keys(store)
    result |= {
        "retry_created": created["acked"],
        "retry_created_unacked": created["unacked"],  # sent, cut off before commit: stored by the retry
        "final_rows": rows,
        "final_duplicates": rows - len(keys),
        "final_missing": len(sent - keys),
    }
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="server kills per backend")
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--generators", type=int, default=2)
    ap.add_argument("--kill-after", type=int, default=400, help="acknowledged feedback events before each kill")
    ap.add_argument("--timeout", type=float, default=180.0, help="seconds for a server start or a load phase")
    ap.add_argument("--pg", default=os.environ.get("REWARDLOOP_TEST_PG_URL"))
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as d:
        workdir = Path(d)
        results.append(run_backend("sqlite", f"sqlite:///{workdir / 'kill9.db'}", args, workdir))
        if args.pg:
            name = f"rl_kill9_{secrets.token_hex(4)}"
            try:
                results.append(run_backend("postgresql", _pg_database(args.pg, name, True), args, workdir))
            finally:
                _pg_database(args.pg, name, False)
    print(json.dumps(results, indent=1))
    print(
        "\n| backend | kills | events acked before the kills | acked lost | generations acked | lost | "
        "committed, unacked | duplicates | acked re-created by retry |\n|---|---|---|---|---|---|---|---|---|"
    )
    for r in results:
        print(
            f"| {r['backend']} | {r['rounds']} | {r['acked']} | {r['lost']} | {r['acked_generations']} | "
            f"{r['lost_generations']} | {r['inflight_committed']} | {r['duplicates'] + r['final_duplicates']} | "
            f"{r['retry_created']} |"
        )
    bad = [r for r in results if r["lost"] or r["lost_generations"] or r["duplicates"] or r["final_duplicates"]]
    bad += [r for r in results if r["retry_created"] or r["final_missing"]]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
