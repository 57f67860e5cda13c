"""Label leases: items of the label queue handed to an annotator, until they expire.

A new table only (additive, as every migration must be: see ``migrations/env.py``): the previous
release's code never reads it, and runs as before on this schema.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "label_leases",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("strategy", sa.String(30), nullable=False),
        sa.Column("priority", sa.Float, nullable=False),
        sa.Column("leased_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
    )
    op.create_index("ix_label_leases_model_name", "label_leases", ["model_name"])
    op.create_index("ix_label_leases_leased_at", "label_leases", ["leased_at"])
    op.create_index("ix_label_leases_expires_at", "label_leases", ["expires_at"])


def downgrade() -> None:
    op.drop_table("label_leases")
