"""Annotations from Label Studio and the state of each item sent there.

New tables only (additive, as every migration must be: see ``migrations/env.py``): the previous
release's code never reads them, and runs as before on this schema.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "label_items",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("label", sa.String(100), nullable=True),
        sa.Column("agreement", sa.Float, nullable=True),
        sa.Column("annotations", sa.Integer, nullable=False),
        sa.Column("decided_by", sa.String(200), nullable=True),
        sa.Column("pushed_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
    )
    op.create_index("ix_label_items_status", "label_items", ["status"])
    op.create_table(
        "label_annotations",
        sa.Column("source", sa.String(20), primary_key=True),
        sa.Column("annotation_id", sa.String(64), primary_key=True),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("annotator", sa.String(64), nullable=False),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("ts", _TS, nullable=False),
    )
    op.create_index("ix_label_annotations_request_id", "label_annotations", ["request_id"])


def downgrade() -> None:
    op.drop_index("ix_label_annotations_request_id", "label_annotations")
    op.drop_table("label_annotations")
    op.drop_index("ix_label_items_status", "label_items")
    op.drop_table("label_items")
