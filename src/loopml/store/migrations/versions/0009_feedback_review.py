"""Feedback review: labels held back from retraining as likely wrong, and their decisions.

A new table only (additive, as every migration must be: see ``migrations/env.py``): the previous
release's code never reads it, and runs as before on this schema.

Revision ID: 0009
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "feedback_review",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("text_hash", sa.String(64), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("given_prob", sa.Float, nullable=False),
        sa.Column("suggested", sa.String(100), nullable=False),
        sa.Column("suggested_prob", sa.Float, nullable=False),
        sa.Column("method", sa.String(50), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("held_at", _TS, nullable=False),
        sa.Column("decided_at", _TS, nullable=True),
        sa.Column("decided_by", sa.String(200), nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.UniqueConstraint("model_name", "text_hash", "label"),
    )
    op.create_index("ix_feedback_review_status", "feedback_review", ["status"])


def downgrade() -> None:
    op.drop_index("ix_feedback_review_status", table_name="feedback_review")
    op.drop_table("feedback_review")
