"""The controller lease: one controller acts on a model at a time.

A new table only (additive, as every migration must be: see ``migrations/env.py``): the previous
release's code never reads it, and runs as before on this schema.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "controller_lease",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("acquired_at", _TS, nullable=False),
        sa.Column("renewed_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("step", sa.String(50), nullable=True),
        sa.Column("step_started_at", _TS, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("controller_lease")
