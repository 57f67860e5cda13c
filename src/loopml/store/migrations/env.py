"""Alembic environment: runs on the connection handed over by :func:`loopml.store.migrate`."""

from __future__ import annotations

from alembic import context

from loopml.store.models import Base
from loopml.store.types import render_item

connection = context.config.attributes["connection"]
# A table name of our own: MLflow keeps its own Alembic history in `alembic_version`, and
# users may put both stores in one PostgreSQL database.
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,
    render_item=render_item,
    version_table="loopml_alembic_version",
)
with context.begin_transaction():
    context.run_migrations()
