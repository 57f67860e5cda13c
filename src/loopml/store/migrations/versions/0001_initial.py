"""Initial schema: audit log, predictions, feedback, routing state, monitor results.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ts", _TS, nullable=False, index=True),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(50), nullable=False, index=True),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("from_version", sa.String(50)),
        sa.Column("to_version", sa.String(50)),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("details", sa.JSON, nullable=False),
    )
    op.create_table(
        "predictions",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("ts", _TS, nullable=False, index=True),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("model_version", sa.String(50), nullable=False, index=True),
        sa.Column("variant", sa.String(20), nullable=False),
        sa.Column("text", sa.Text),
        sa.Column("text_hash", sa.String(64), nullable=False),
        sa.Column("text_length", sa.Integer, nullable=False),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("probabilities", sa.JSON, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
    )
    op.create_index("ix_predictions_version_ts", "predictions", ["model_version", "ts"])
    op.create_table(
        "feedback",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("ts", _TS, nullable=False, index=True),
        sa.Column("label", sa.String(100), nullable=False),
    )
    op.create_table(
        "routing_state",
        sa.Column("model_name", sa.String(200), primary_key=True),
        sa.Column("champion_version", sa.String(50)),
        sa.Column("challenger_version", sa.String(50)),
        sa.Column("mode", sa.String(20), nullable=False),
        sa.Column("weight", sa.Float, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("details", sa.JSON, nullable=False),
    )
    op.create_table(
        "monitor_results",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ts", _TS, nullable=False, index=True),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("model_version", sa.String(50)),
        sa.Column("window_size", sa.Integer, nullable=False),
        sa.Column("verdict", sa.String(30), nullable=False),
        sa.Column("summary", sa.JSON, nullable=False),
        sa.Column("report_path", sa.Text),
    )


def downgrade() -> None:
    for table in ("monitor_results", "routing_state", "feedback", "predictions", "audit_log"):
        op.drop_table(table)
