"""The ``store_url`` fixture: every store test runs on SQLite (a file in tmp_path) and, when
``REWARDLOOP_TEST_PG_URL`` is set (``.ci/run`` sets it), on PostgreSQL in a fresh database created for the test and
dropped after it."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

PG_URL = os.environ.get("REWARDLOOP_TEST_PG_URL")
BACKENDS = [
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.skipif(not PG_URL, reason="REWARDLOOP_TEST_PG_URL unset")),
]


def _pg_admin(url: str):
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return psycopg.connect(
        host=u.host, port=u.port or 5432, user=u.username, password=u.password, dbname=u.database, autocommit=True
    )


@pytest.fixture(params=BACKENDS)
def store_url(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    from sqlalchemy.engine import make_url

    name = f"rl_test_{secrets.token_hex(6)}"
    with _pg_admin(PG_URL) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with _pg_admin(PG_URL) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def store(store_url):
    from rewardloop.store import Store

    s = Store.open(store_url)
    yield s
    s.close()
