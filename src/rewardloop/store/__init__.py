"""The feedback store: served interactions, feedback and model versions in SQLite (default) or PostgreSQL, with
Alembic migrations, and export to TRL-format datasets — the only package importing sqlalchemy / alembic / psycopg.
See docs/guides/feedback.md.
"""

try:
    import alembic  # noqa: F401
    import sqlalchemy  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the install
    raise ImportError(f"rewardloop.store needs the store extra: pip install 'rewardloop[store]' ({e})") from e

from rewardloop.store.export import EXPORTERS, FeedbackConfig, StoreConfig, export
from rewardloop.store.models import FEEDBACK_KINDS, PAIRWISE_VALUES, Feedback, Interaction, ModelVersion
from rewardloop.store.store import FeedbackError, Store, StoreError, validate_feedback

__all__ = [
    "EXPORTERS",
    "FEEDBACK_KINDS",
    "PAIRWISE_VALUES",
    "Feedback",
    "FeedbackConfig",
    "FeedbackError",
    "Interaction",
    "ModelVersion",
    "Store",
    "StoreConfig",
    "StoreError",
    "export",
    "validate_feedback",
]
