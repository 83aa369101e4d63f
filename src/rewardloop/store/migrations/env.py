"""Alembic environment of the feedback store. ``Store.open`` runs ``upgrade head`` with its own connection
(``config.attributes["connection"]``); without one it connects to ``-x url=...`` or ``sqlalchemy.url``
(docs/guides/feedback.md).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from rewardloop.store.models import Base

VERSION_TABLE = "rewardloop_alembic_version"  # not "alembic_version": the database may be shared (e.g. mlflow)


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or context.config.get_main_option("sqlalchemy.url")
    with create_engine(url).connect() as conn:
        _run(conn)
