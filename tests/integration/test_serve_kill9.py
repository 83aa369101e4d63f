"""kill -9 of ``rewardloop serve`` under feedback load (benchmarks/serve_kill9.py, small): after each SIGKILL and a
restart on the same store, every acknowledged feedback event and generation is in the database, none is stored
twice, and a client retrying everything it sent stores each event exactly once. On SQLite, and on PostgreSQL when
REWARDLOOP_TEST_PG_URL is set."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # benchmarks/ is a top-level package beside src/, not installed
    sys.path.insert(0, str(ROOT))

from benchmarks.serve_kill9 import run_backend  # noqa: E402
from benchmarks.store_ingest import _pg_database  # noqa: E402

PG_URL = os.environ.get("REWARDLOOP_TEST_PG_URL")
ARGS = argparse.Namespace(rounds=2, writers=4, generators=1, kill_after=60, timeout=180.0)


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend",
    ["sqlite", pytest.param("postgresql", marks=pytest.mark.skipif(not PG_URL, reason="REWARDLOOP_TEST_PG_URL unset"))],
)
def test_acknowledged_events_survive_kill9_of_the_server(backend, tmp_path):
    if backend == "sqlite":
        result = run_backend(backend, f"sqlite:///{tmp_path / 'kill9.db'}", ARGS, tmp_path)
    else:
        name = f"rl_kill9_{secrets.token_hex(4)}"
        try:
            result = run_backend(backend, _pg_database(PG_URL, name, True), ARGS, tmp_path)
        finally:
            _pg_database(PG_URL, name, False)
    assert result["acked"] >= ARGS.rounds * ARGS.kill_after  # the kills really came under load
    assert result["errors_before_kill"] == {}
    assert (result["lost"], result["lost_generations"], result["duplicates"]) == (0, 0, 0), result
    assert (result["retry_created"], result["final_missing"], result["final_duplicates"]) == (0, 0, 0), result
