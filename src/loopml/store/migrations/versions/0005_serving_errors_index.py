"""An index for the rollout analysis's error count: serving errors by model version and time.

Every controller tick of a rollout sums a variant's errors since the analysis began
(``control/live.py``); like ``ix_predictions_version_ts``, this keeps that query off a scan of
the whole table. Additive (an index), as every migration must be: see ``migrations/env.py``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_serving_errors_version_ts", "serving_errors", ["model_version", "ts"])


def downgrade() -> None:
    op.drop_index("ix_serving_errors_version_ts", table_name="serving_errors")
