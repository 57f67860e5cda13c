"""Feedback provenance: the key id that gave each label.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: labels stored before this revision have no known author.
    with op.batch_alter_table("feedback") as batch:
        batch.add_column(sa.Column("key_id", sa.String(64), nullable=True))
        batch.create_index("ix_feedback_key_id", ["key_id"])


def downgrade() -> None:
    with op.batch_alter_table("feedback") as batch:
        batch.drop_index("ix_feedback_key_id")
        batch.drop_column("key_id")
