"""api keys (hashed, with roles) and the annotation queue

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("name", name="uq_api_keys_name"),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )
    op.create_table(
        "annotation_items",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("response_id", sa.String(64), sa.ForeignKey("interactions.id"), nullable=False),
        sa.Column("other_response_id", sa.String(64), sa.ForeignKey("interactions.id"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("response_id", "other_response_id", name="uq_annotation_items_pair"),
    )


def downgrade() -> None:
    op.drop_table("annotation_items")
    op.drop_table("api_keys")
