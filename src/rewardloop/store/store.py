"""``Store``: served interactions, feedback and model versions in SQLite (the embedded default) or PostgreSQL.

    store = Store.open("sqlite:///rewardloop.db")            # or "postgresql+psycopg://user:pw@host/db"
    rid = store.log_interaction(model_version="tiny@1", prompt="2+2=", completion="4")
    fid, created = store.add_feedback(response_id=rid, kind="thumbs", value=1, idempotency_key="k-1")

Every write is one transaction that is committed before the call returns, and an acknowledged write is durable:
SQLite runs in WAL mode with ``synchronous=FULL`` (the WAL is fsynced at each commit), PostgreSQL commits with its
default ``synchronous_commit=on``. A feedback post is stored once per ``idempotency_key``: the key is UNIQUE in the
table, and a concurrent duplicate that loses the race gets the winner's row back (IntegrityError → read it).
See docs/guides/feedback.md.
"""

from __future__ import annotations

import math
import secrets
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import create_engine, event, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from rewardloop.rewards.engagement import EngagementWeights
from rewardloop.store.models import (
    FEEDBACK_KINDS,
    INTERACTION_KINDS,
    MODEL_STATUSES,
    PAIRWISE_VALUES,
    Feedback,
    Interaction,
    ModelVersion,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no cross-process migration lock on SQLite
    fcntl = None

MIGRATIONS = Path(__file__).with_name("migrations")
SQLITE_BUSY_TIMEOUT_S = 30.0  # a writer waits this long for SQLite's single write lock before failing


class StoreError(ValueError):
    """Invalid input to the store; the message names the field and the value."""


class FeedbackError(StoreError):
    """A feedback item is invalid (unknown response id, kind or event, value out of range, ...)."""


def as_dict(obj: Any) -> dict[str, Any]:
    out = {c.key: getattr(obj, c.key) for c in obj.__table__.columns}
    if isinstance(out.get("created_at"), datetime):
        ts = out["created_at"]
        out["created_at"] = (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).isoformat()  # SQLite drops the zone
    return out


def _number(field: str, value: Any, err: type[StoreError] = FeedbackError) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise err(f"{field}: expected a finite number, got {value!r}")
    return float(value)


def _check_value(kind: str, value: Any) -> float | None:
    """The feedback ``value`` of ``kind``, validated (see the table in docs/guides/feedback.md)."""
    if kind == "comment":
        return None if value is None else _number("value", value)
    if value is None:
        raise FeedbackError(f"value: required for kind={kind!r}")
    v = _number("value", value)
    if kind == "thumbs" and v not in (1.0, -1.0):
        raise FeedbackError(f"value: thumbs must be 1 (up) or -1 (down), got {value!r}")
    if kind == "rating" and not 1.0 <= v <= 5.0:
        raise FeedbackError(f"value: rating must be in 1–5, got {value!r}")
    if kind == "pairwise" and v not in PAIRWISE_VALUES:
        allowed = ", ".join(f"{k:g} = {d}" for k, d in PAIRWISE_VALUES.items())
        raise FeedbackError(f"value: pairwise must be one of {allowed}; got {value!r}")
    if kind == "engagement" and v < 0:
        raise FeedbackError(f"value: engagement amount must be ≥ 0, got {value!r}")
    return v


def validate_feedback(item: Mapping[str, Any]) -> dict[str, Any]:
    """A feedback item → the columns to store; FeedbackError naming the field otherwise. Does not touch the
    database (response ids are checked by ``Store``)."""
    allowed = ("response_id", "kind", "idempotency_key", "value", "event", "other_response_id", "comment", "user_id")
    if unknown := sorted(set(item) - set(allowed)):
        raise FeedbackError(f"{unknown[0]}: unknown field (allowed: {', '.join(allowed)})")
    kind, key, rid = item.get("kind"), item.get("idempotency_key"), item.get("response_id")
    for field, value in (("response_id", rid), ("idempotency_key", key)):
        if not isinstance(value, str) or not value or len(value) > 200:
            raise FeedbackError(f"{field}: expected a non-empty string of at most 200 characters, got {value!r}")
    if kind not in FEEDBACK_KINDS:
        raise FeedbackError(f"kind: unknown feedback kind {kind!r}; allowed: {', '.join(FEEDBACK_KINDS)}")
    ev, other, comment = item.get("event"), item.get("other_response_id"), item.get("comment")
    if kind == "engagement":
        if ev not in EngagementWeights.events():
            raise FeedbackError(
                f"event: unknown engagement event {ev!r}; allowed: {', '.join(EngagementWeights.events())}"
            )
    elif ev is not None:
        raise FeedbackError(f"event: only engagement feedback has an event, got {ev!r} with kind={kind!r}")
    value = 1.0 if kind == "engagement" and item.get("value") is None else _check_value(kind, item.get("value"))
    if kind == "pairwise":
        if not isinstance(other, str) or not other:
            raise FeedbackError(f"other_response_id: pairwise feedback needs the compared response id, got {other!r}")
        if other == rid:
            raise FeedbackError(f"other_response_id: a response cannot be compared with itself ({other!r})")
    elif other is not None:
        raise FeedbackError(f"other_response_id: only pairwise feedback compares responses, got {other!r}")
    if comment is not None and not isinstance(comment, str):
        raise FeedbackError(f"comment: expected a string, got {comment!r}")
    if kind == "comment" and not (comment or "").strip():
        raise FeedbackError(f"comment: kind='comment' needs a non-empty comment, got {comment!r}")
    user = item.get("user_id")
    if user is not None and (not isinstance(user, str) or len(user) > 200):
        raise FeedbackError(f"user_id: expected a string of at most 200 characters, got {user!r}")
    return {
        "response_id": rid,
        "kind": kind,
        "idempotency_key": key,
        "value": value,
        "event": ev,
        "other_response_id": other,
        "comment": comment,
        "user_id": user,
    }


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
    cur.execute("PRAGMA synchronous=FULL")  # fsync the WAL at every commit: an acknowledged write survives a crash
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
    cur.close()


def make_engine(url: str) -> Engine:
    """An engine for ``url`` with the store's durability settings (SQLite pragmas on every connection)."""
    if url.startswith("sqlite"):
        if url.startswith("sqlite:///") and url not in ("sqlite://", "sqlite:///:memory:"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


_MIGRATING = threading.Lock()  # Alembic's context is process-global: one migration at a time per process


@contextmanager
def _file_lock(engine: Engine) -> Iterator[None]:
    """An exclusive lock on ``<database file>.lock`` (SQLite; no-op elsewhere or in memory), across processes."""
    db = engine.url.database
    if engine.dialect.name != "sqlite" or not db or db == ":memory:" or fcntl is None:
        yield
        return
    with open(f"{db}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def upgrade(engine: Engine) -> None:
    """Bring the database to the newest schema (Alembic ``upgrade head``, with the shipped migrations). Processes
    that open a new store at once (a server and a loop) migrate one after the other: a file lock on SQLite, a
    transaction-scoped advisory lock on PostgreSQL; the later ones find the schema at head and change nothing."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with _MIGRATING, _file_lock(engine), engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(7274656)"))  # held until this transaction ends
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")


class Store:
    """Interactions, feedback and model versions in one database (see the module docstring)."""

    FeedbackError = FeedbackError
    StoreError = StoreError

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str = "sqlite:///rewardloop.db") -> Store:
        """Connect to ``url`` and migrate it to the newest schema."""
        engine = make_engine(url)
        upgrade(engine)
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._sessions() as session:
            yield session

    # -- interactions ---------------------------------------------------------------------------------------------

    def log_interaction(self, **fields: Any) -> str:
        """Store one served response; returns its id (``fields["id"]``, or a new ``resp-<hex>``)."""
        row = interaction_row(fields)
        with self._session() as s:
            s.add(Interaction(**row))
            try:
                s.commit()
            except IntegrityError as e:
                raise StoreError(f"id: response id {row['id']!r} is already stored") from e
        return row["id"]

    def log_interactions(self, items: list[Mapping[str, Any]]) -> list[str]:
        """Store many served responses in one transaction (one durable commit: the server's group commit); all or
        nothing — an invalid item raises StoreError naming its index and field. Returns the ids in order."""
        rows = []
        for i, fields in enumerate(items):
            try:
                rows.append(interaction_row(fields))
            except StoreError as e:
                raise StoreError(f"items[{i}].{e}") from None
        with self._session() as s:
            s.add_all(Interaction(**row) for row in rows)
            try:
                s.commit()
            except IntegrityError as e:
                raise StoreError(f"id: one of {[r['id'] for r in rows]} is already stored") from e
        return [row["id"] for row in rows]

    def get_interaction(self, response_id: str) -> dict[str, Any] | None:
        with self._session() as s:
            obj = s.get(Interaction, response_id)
            return as_dict(obj) if obj is not None else None

    # -- feedback -------------------------------------------------------------------------------------------------

    def add_feedback(
        self,
        *,
        response_id: str,
        kind: str,
        idempotency_key: str,
        value: float | None = None,
        event: str | None = None,
        other_response_id: str | None = None,
        comment: str | None = None,
        user_id: str | None = None,
    ) -> tuple[int, bool]:
        """Store one feedback item; ``(id, created)``, with ``created=False`` (and the stored row's id) when the
        idempotency key is already stored — also when a concurrent post with the same key wins the race."""
        item = {k: v for k, v in locals().items() if k != "self"}
        return self._add(items=[item], prefix=False)[0]

    def add_feedback_batch(self, items: list[Mapping[str, Any]]) -> list[tuple[int, bool]]:
        """Store feedback items all-or-nothing: one invalid item raises FeedbackError naming its index and field,
        and nothing is written. Returns ``(id, created)`` per item, in order."""
        return self._add(items=items, prefix=True)

    def _add(self, items: list[Mapping[str, Any]], prefix: bool) -> list[tuple[int, bool]]:
        if not isinstance(items, list) or not items:
            raise FeedbackError(f"items: expected a non-empty list of feedback items, got {items!r}")
        rows = []
        for i, item in enumerate(items):
            try:
                rows.append(validate_feedback(item))
            except FeedbackError as e:
                raise FeedbackError(f"items[{i}].{e}" if prefix else str(e)) from None
        for _attempt in range(3):  # a lost race on a key: the retry finds the winner's row
            with self._session() as s:
                self._check_responses(s, rows, prefix)
                keys = [r["idempotency_key"] for r in rows]
                stored = dict(
                    s.execute(select(Feedback.idempotency_key, Feedback.id).where(Feedback.idempotency_key.in_(keys)))
                    .tuples()
                    .all()
                )
                new: dict[str, Feedback] = {}
                for r in rows:
                    if r["idempotency_key"] not in stored and r["idempotency_key"] not in new:
                        new[r["idempotency_key"]] = Feedback(**r)
                s.add_all(new.values())
                try:
                    s.commit()
                except IntegrityError:
                    s.rollback()
                    continue
            out, seen = [], set()
            for k in keys:
                created = k in new and k not in seen
                seen.add(k)
                out.append((stored[k] if k in stored else new[k].id, created))
            return out
        raise StoreError("could not store the feedback after 3 attempts (idempotency-key races)")

    @staticmethod
    def _check_responses(s: Session, rows: list[dict[str, Any]], prefix: bool) -> None:
        wanted = {r[f] for r in rows for f in ("response_id", "other_response_id") if r[f] is not None}
        known = set(s.scalars(select(Interaction.id).where(Interaction.id.in_(wanted)))) if wanted else set()
        for i, r in enumerate(rows):
            for field in ("response_id", "other_response_id"):
                if r[field] is not None and r[field] not in known:
                    where = f"items[{i}]." if prefix else ""
                    raise FeedbackError(f"{where}{field}: unknown response id {r[field]!r}")

    def feedback_since(self, last_id: int, limit: int | None = None) -> list[dict[str, Any]]:
        """Feedback rows with ``id > last_id``, oldest first (the training loop's cursor)."""
        with self._session() as s:
            q = select(Feedback).where(Feedback.id > last_id).order_by(Feedback.id)
            return [as_dict(f) for f in s.scalars(q.limit(limit) if limit else q)]

    # -- model versions -------------------------------------------------------------------------------------------

    def register_model(
        self,
        name: str,
        path: str,
        parent: int | str | None = None,
        metrics: Mapping[str, Any] | None = None,
        status: str = "candidate",
    ) -> int:
        """Add a model version (``parent``: the id or name it was trained from); returns its id."""
        if not isinstance(name, str) or not name:
            raise StoreError(f"name: expected a non-empty string, got {name!r}")
        if status not in MODEL_STATUSES:
            raise StoreError(f"status: {status!r} is not one of {', '.join(MODEL_STATUSES)}")
        with self._session() as s:
            parent_id = None
            if parent is not None:
                col = ModelVersion.id if isinstance(parent, int) else ModelVersion.name
                parent_id = s.scalar(select(ModelVersion.id).where(col == parent))
                if parent_id is None:
                    raise StoreError(f"parent: unknown model version {parent!r}")
            mv = ModelVersion(
                name=name, path=str(path), parent_id=parent_id, metrics=dict(metrics or {}), status=status
            )
            s.add(mv)
            try:
                s.commit()
            except IntegrityError as e:
                raise StoreError(f"name: model version {name!r} is already registered") from e
            return mv.id

    def models(self) -> list[dict[str, Any]]:
        with self._session() as s:
            return [as_dict(m) for m in s.scalars(select(ModelVersion).order_by(ModelVersion.id))]

    # -- reading for export ---------------------------------------------------------------------------------------

    def iter_feedback(
        self, kinds: tuple[str, ...], ids: list[int] | None = None
    ) -> Iterator[tuple[dict[str, Any], dict[str, Any], dict | None]]:
        """(feedback row, its interaction, the other interaction or None) for feedback of ``kinds`` (and with an id
        in ``ids``, when given), by id."""
        with self._session() as s:
            q = select(Feedback).where(Feedback.kind.in_(kinds)).order_by(Feedback.id)
            if ids is not None:
                q = q.where(Feedback.id.in_(ids))
            for f in s.scalars(q):
                other = s.get(Interaction, f.other_response_id) if f.other_response_id else None
                yield as_dict(f), as_dict(s.get(Interaction, f.response_id)), as_dict(other) if other else None


def interaction_row(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Validated columns of an interaction (StoreError naming the field otherwise)."""
    columns = {c.key for c in Interaction.__table__.columns}
    if unknown := sorted(set(fields) - columns):
        raise StoreError(f"{unknown[0]}: unknown interaction field (allowed: {', '.join(sorted(columns))})")
    row = dict(fields)
    row.setdefault("id", f"resp-{secrets.token_hex(12)}")
    messages = row.get("messages")
    row.setdefault("kind", "chat" if messages is not None else "completion")
    row.setdefault("prompt", "")
    row.setdefault("model_version", "")
    row.setdefault("sampling", {})
    if row["kind"] not in INTERACTION_KINDS:
        raise StoreError(f"kind: {row['kind']!r} is not one of {', '.join(INTERACTION_KINDS)}")
    for field in ("id", "model_version", "prompt", "completion"):
        if not isinstance(row.get(field), str):
            raise StoreError(f"{field}: expected a string, got {row.get(field)!r}")
    for field, most in (("id", 64), ("model_version", 200), ("user_id", 200), ("session_id", 200)):
        v = row.get(field)
        if v is not None and (not isinstance(v, str) or len(v) > most):
            raise StoreError(f"{field}: expected a string of at most {most} characters, got {v!r}")
    if not row["id"]:
        raise StoreError("id: empty response id")
    if row["kind"] == "chat" and not (isinstance(messages, list) and messages):
        raise StoreError(f"messages: a chat interaction needs the request's message list, got {messages!r}")
    if row["kind"] == "completion" and not row["prompt"]:
        raise StoreError("prompt: a completion interaction needs its prompt text")
    if (p := row.get("propensity")) is not None and not 0.0 < _number("propensity", p, StoreError) <= 1.0:
        raise StoreError(f"propensity: expected a probability in (0, 1], got {p!r}")
    i, n = row.get("candidate_index"), row.get("n_candidates")
    if i is not None and n is not None and not 0 <= i < n:
        raise StoreError(f"candidate_index: expected 0 ≤ index < n_candidates={n}, got {i!r}")
    return row
