"""The feedback store's tables (SQLAlchemy 2 typed ORM). The schema itself is created by the Alembic migrations in
``migrations/versions`` — change a model here and add a revision there (docs/guides/feedback.md).

- ``ModelVersion``: the model-version registry (name, where its weights are, which version it came from, metrics).
- ``Interaction``: one served response (prompt / messages, completion, sampling, log-probs, latency, who asked,
  and — when the server chose among candidates — which candidate was shown and its propensity).
- ``Feedback``: one signal about a response: thumbs, rating, pairwise choice, comment or engagement event, stored
  once per ``idempotency_key``.
- ``LoopRound``: one round of the feedback loop; ``Feedback.round_id`` marks the rows a finished round used.
- ``ApiKey``: a key for the server, with a role (``ROLES``); only the key's SHA-256 is stored.
- ``AnnotationItem``: a pair of responses to the same prompt waiting for annotators (``/annotate``); a label is
  pairwise ``Feedback`` whose idempotency key is ``annotate:<item id>:<annotator>``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

INTERACTION_KINDS = ("chat", "completion")
FEEDBACK_KINDS = ("thumbs", "rating", "pairwise", "comment", "engagement")
# pairwise ``value``: 1 = response_id preferred, 0 = other_response_id preferred, 0.5 = tie, -1 = both bad
PAIRWISE_VALUES = {1.0: "response_id preferred", 0.0: "other preferred", 0.5: "tie", -1.0: "both bad"}
MODEL_STATUSES = ("candidate", "serving", "retired", "rejected")
ROUND_STATUSES = ("running", "promoted", "rejected")
# client: generate and post feedback; annotator: also the annotation pages; admin: everything (keys, export, progress)
ROLES = ("client", "annotator", "admin")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("name", name="uq_model_versions_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    path: Mapped[str] = mapped_column(Text)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    status: Mapped[str] = mapped_column(String(32), default="candidate")
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Interaction(Base):
    __tablename__ = "interactions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # "resp-<hex>"
    model_version: Mapped[str] = mapped_column(String(200), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # "chat" | "completion"
    prompt: Mapped[str] = mapped_column(Text)  # the prompt text (for chat: the rendered conversation, or "")
    messages: Mapped[list[Any] | None] = mapped_column(JSON)  # chat: the request's messages (TRL conversational)
    completion: Mapped[str] = mapped_column(Text)
    sampling: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    token_logprobs: Mapped[list[Any] | None] = mapped_column(JSON)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    user_id: Mapped[str | None] = mapped_column(String(200), index=True)
    session_id: Mapped[str | None] = mapped_column(String(200))
    candidate_index: Mapped[int | None] = mapped_column(Integer)
    n_candidates: Mapped[int | None] = mapped_column(Integer)
    propensity: Mapped[float | None] = mapped_column(Float)  # P(this candidate was shown | context)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Feedback(Base):
    __tablename__ = "feedback"
    __table_args__ = (UniqueConstraint("idempotency_key", name="uq_feedback_idempotency_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(200))
    response_id: Mapped[str] = mapped_column(ForeignKey("interactions.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    value: Mapped[float | None] = mapped_column(Float)  # thumbs ±1, rating 1–5, pairwise (PAIRWISE_VALUES), amount
    event: Mapped[str | None] = mapped_column(String(32))  # engagement event name (EngagementWeights.events())
    other_response_id: Mapped[str | None] = mapped_column(ForeignKey("interactions.id"))
    comment: Mapped[str | None] = mapped_column(Text)
    user_id: Mapped[str | None] = mapped_column(String(200), index=True)  # the user or annotator
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    round_id: Mapped[int | None] = mapped_column(Integer, index=True)  # the loop round that used it (None: not yet)


class LoopRound(Base):
    """One round of ``rewardloop loop``: the feedback it claimed, the candidate it trained, the decision."""

    __tablename__ = "loop_rounds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(16))  # ROUND_STATUSES
    algo: Mapped[str] = mapped_column(String(16))
    parent: Mapped[str] = mapped_column(String(200))  # the serving version the candidate starts from
    feedback_ids: Mapped[list[int]] = mapped_column(JSON)  # claimed when the round started; fixed on resume
    candidate: Mapped[str | None] = mapped_column(String(200))  # the registered model version, once trained
    run_dir: Mapped[str] = mapped_column(Text)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ApiKey(Base):
    __tablename__ = "api_keys"
    __table_args__ = (
        UniqueConstraint("name", name="uq_api_keys_name"),
        UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))  # who holds it: shown as the annotator / user
    role: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64))  # sha256 hex of the key; the key itself is never stored
    prefix: Mapped[str] = mapped_column(String(16))  # the key's first characters, to tell keys apart in listings
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AnnotationItem(Base):
    __tablename__ = "annotation_items"
    __table_args__ = (UniqueConstraint("response_id", "other_response_id", name="uq_annotation_items_pair"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    response_id: Mapped[str] = mapped_column(ForeignKey("interactions.id"))
    other_response_id: Mapped[str] = mapped_column(ForeignKey("interactions.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
