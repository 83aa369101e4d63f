"""the feedback loop: loop_rounds, and feedback.round_id (which round used a row)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "loop_rounds",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("algo", sa.String(16), nullable=False),
        sa.Column("parent", sa.String(200), nullable=False),
        sa.Column("feedback_ids", sa.JSON(), nullable=False),
        sa.Column("candidate", sa.String(200), nullable=True),
        sa.Column("run_dir", sa.Text(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    with op.batch_alter_table("feedback") as batch:
        batch.add_column(sa.Column("round_id", sa.Integer(), nullable=True))
        batch.create_index("ix_feedback_round_id", ["round_id"])


def downgrade() -> None:
    with op.batch_alter_table("feedback") as batch:
        batch.drop_index("ix_feedback_round_id")
        batch.drop_column("round_id")
    op.drop_table("loop_rounds")
