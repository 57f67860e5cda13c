"""Alembic environment: runs on the connection handed over by :func:`loopml.store._db.migrate`.

Migrations are additive, so that the previous release runs on the new schema (a ``kubectl rollout
undo`` never needs a schema downgrade): a revision's ``upgrade()`` may create tables and indexes
and add columns that are nullable or have a server default; it never drops or renames a table or
a column, changes a column's type, makes one NOT NULL, or adds a unique constraint to an existing
table. Code that meets a revision it does not know (newer) works on the tables and columns it
knows and never migrates it. Removing something takes two releases: stop using it, then drop it.
``tests/code/store/test_schema.py`` checks every revision against this rule, and
``tests/e2e/test_previous_release.py`` runs the previous release's code on the newest schema.
"""

from __future__ import annotations

from alembic import context

from loopml.store._db import VERSION_TABLE
from loopml.store.models import Base
from loopml.store.types import render_item

connection = context.config.attributes["connection"]
# A table name of our own (see VERSION_TABLE): MLflow keeps its own Alembic history in
# `alembic_version`, and users may put both stores in one PostgreSQL database.
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,
    render_item=render_item,
    version_table=VERSION_TABLE,
)
with context.begin_transaction():
    context.run_migrations()
