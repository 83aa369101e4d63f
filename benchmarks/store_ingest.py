"""Feedback ingestion into the store: events/s and p50 / p99 latency of ``Store.add_feedback`` with concurrent
writer threads (each post its own transaction, committed durably before it returns), on SQLite and PostgreSQL.

    python -m benchmarks.store_ingest [--events 2000] [--writers 1,8] [--pg postgresql+psycopg://...]

Prints one JSON document and a markdown table. The PostgreSQL URL defaults to $REWARDLOOP_TEST_PG_URL; the
benchmark creates and drops its own database there. This measures the store alone (no HTTP server in front).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import tempfile
import threading
import time
from pathlib import Path

from rewardloop.store import Store


def _pg_database(url: str, name: str, create: bool) -> str:
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    with psycopg.connect(
        host=u.host, port=u.port or 5432, user=u.username, password=u.password, dbname=u.database, autocommit=True
    ) as c:
        c.execute(f'CREATE DATABASE "{name}"' if create else f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return u.set(database=name).render_as_string(hide_password=False)


def ingest(url: str, events: int, writers: int) -> dict:
    """``events`` feedback posts split over ``writers`` threads into a fresh store at ``url``."""
    with Store.open(url) as store:
        rid = store.log_interaction(prompt="p", completion="c")
        latencies: list[float] = []
        lock, barrier = threading.Lock(), threading.Barrier(writers + 1)

        def work(w: int) -> None:
            mine = []
            barrier.wait()
            for i in range(w, events, writers):
                t0 = time.perf_counter()
                store.add_feedback(response_id=rid, kind="engagement", event="click", idempotency_key=f"e{i}")
                mine.append(time.perf_counter() - t0)
            with lock:
                latencies.extend(mine)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(writers)]
        for t in threads:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        stored = len(store.feedback_since(0))
    q = statistics.quantiles(latencies, n=100)
    return {
        "writers": writers,
        "events": events,
        "stored": stored,
        "events_per_s": round(events / wall, 1),
        "p50_ms": round(q[49] * 1e3, 2),
        "p99_ms": round(q[98] * 1e3, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--writers", default="1,8")
    ap.add_argument("--pg", default=os.environ.get("REWARDLOOP_TEST_PG_URL"))
    args = ap.parse_args()
    results = []
    for writers in [int(w) for w in args.writers.split(",")]:
        with tempfile.TemporaryDirectory() as d:
            results.append({"backend": "sqlite", **ingest(f"sqlite:///{Path(d) / 'b.db'}", args.events, writers)})
        if args.pg:
            name = f"rl_bench_{secrets.token_hex(4)}"
            try:
                results.append(
                    {"backend": "postgresql", **ingest(_pg_database(args.pg, name, True), args.events, writers)}
                )
            finally:
                _pg_database(args.pg, name, False)
    print(json.dumps(results, indent=1))
    print("\n| backend | writers | events/s | p50 ms | p99 ms | stored |\n|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['backend']} | {r['writers']} | {r['events_per_s']} | {r['p50_ms']} | {r['p99_ms']} | {r['stored']} |"
        )


if __name__ == "__main__":
    main()
