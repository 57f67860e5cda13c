"""The schema's revision: migrating on open or not (LOOPML_DB_AUTO_MIGRATE), a schema newer than
the code (a rolled-back release), and the additive rule every migration keeps."""

from __future__ import annotations

from typing import Any

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

from loopml.config import Settings, psycopg_url
from loopml.errors import SchemaBehindError
from loopml.store import AuditEntry, open_store
from loopml.store._db import (
    VERSION_TABLE,
    alembic_config,
    head_revision,
    make_engine,
    migrate,
    schema_state,
)

# What a newer release leaves: a revision this code does not know, and a column it added.
NEWER = "f00dcafe"


def upgrade_to(engine: Engine, revision: str) -> None:
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def revisions() -> list[str]:
    """Every revision, oldest first."""
    walk = ScriptDirectory.from_config(alembic_config()).walk_revisions()
    return [r.revision for r in reversed(list(walk))]


def stamp(engine: Engine, revision: str) -> None:
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = :r"), {"r": revision})


def test_an_empty_database_is_behind_and_upgrade_brings_it_to_head(
    backend_settings: Settings,
) -> None:
    engine = make_engine(backend_settings.db_url)
    try:
        state = schema_state(engine)
        assert (state.revision, state.status, state.usable) == (None, "empty", False)
        assert state.head == head_revision() == revisions()[-1]
        assert "loopml db upgrade" in state.describe()
        upgrade_to(engine, revisions()[0])
        state = schema_state(engine)
        assert (state.revision, state.status) == (revisions()[0], "behind")
        assert f"needs revision {head_revision()}" in state.describe()
        after = migrate(engine)
        assert (after.revision, after.status, after.usable) == (head_revision(), "current", True)
        assert schema_state(engine) == after
    finally:
        engine.dispose()


def test_without_auto_migrate_opening_never_migrates_and_names_the_command(
    backend_settings: Settings,
) -> None:
    url = backend_settings.db_url
    with pytest.raises(SchemaBehindError) as info:
        open_store(url, auto_migrate=False)
    assert "loopml db upgrade" in str(info.value) and "no loopml tables" in str(info.value)
    assert info.value.exit_code == 2 and info.value.http_status == 503
    engine = make_engine(url)
    try:
        assert "audit_log" not in inspect(engine).get_table_names()  # nothing was created
        upgrade_to(engine, revisions()[-2])
        with pytest.raises(SchemaBehindError, match=f"revision {revisions()[-2]}"):
            open_store(url, auto_migrate=False)
        assert schema_state(engine).revision == revisions()[-2]  # still not migrated
        migrate(engine)  # what `loopml db upgrade` does
    finally:
        engine.dispose()
    with open_store(url, auto_migrate=False) as store:
        store.audit(actor="t", action="promote", model_name="m", from_version=None, to_version="1")
        assert store.history("m")[0].to_version == "1"


def test_code_older_than_the_schema_opens_it_and_works(backend_settings: Settings) -> None:
    """After a rollback of the code: the schema is at a revision this code does not know."""
    url = backend_settings.db_url
    open_store(url).dispose()
    engine = make_engine(url)
    try:
        stamp(engine, NEWER)
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE audit_log ADD COLUMN newer_field VARCHAR(50)"))
        state = schema_state(engine)
        assert (state.revision, state.status, state.usable) == (NEWER, "ahead", True)
        assert "newer than this code's head" in state.describe()
    finally:
        engine.dispose()
    for auto_migrate in (True, False):
        with open_store(url, auto_migrate=auto_migrate) as store:
            store.audit(
                actor="t", action="promote", model_name="m", from_version=None, to_version="2"
            )
            assert store.history("m")[0].to_version == "2"
            with store.session() as session:
                assert session.query(AuditEntry).count() == 1 + int(not auto_migrate)
            assert schema_state(store.engine).revision == NEWER  # neither stamped nor migrated


# -- the additive rule -----------------------------------------------------------------------


def snapshot(engine: Engine) -> dict[str, dict[str, Any]]:
    """Tables with their columns, primary key and unique column sets, as reflected."""
    insp = inspect(engine)
    out: dict[str, dict[str, Any]] = {}
    for table in insp.get_table_names():
        if table == VERSION_TABLE:
            continue
        uniques = {frozenset(u["column_names"]) for u in insp.get_unique_constraints(table)}
        uniques |= {frozenset(i["column_names"]) for i in insp.get_indexes(table) if i["unique"]}
        out[table] = {
            "columns": {c["name"]: c for c in insp.get_columns(table)},
            "pk": tuple(insp.get_pk_constraint(table)["constrained_columns"]),
            "uniques": uniques,
        }
    return out


def non_additive(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What a migration from ``before`` to ``after`` did that the previous release's code could
    trip on (see migrations/env.py)."""
    problems = []
    for table, old in before.items():
        if table not in after:
            problems.append(f"drops table {table}")
            continue
        new = after[table]
        if new["pk"] != old["pk"]:
            problems.append(f"changes the primary key of {table}")
        for unique in new["uniques"] - old["uniques"]:
            problems.append(f"adds a unique constraint on {table}{sorted(unique)}")
        for name, col in old["columns"].items():
            now = new["columns"].get(name)
            if now is None:
                problems.append(f"drops or renames {table}.{name}")
                continue
            if str(now["type"]) != str(col["type"]):
                problems.append(f"changes the type of {table}.{name}")
            if col["nullable"] and not now["nullable"]:
                problems.append(f"makes {table}.{name} NOT NULL")
        for name in new["columns"].keys() - old["columns"].keys():
            col = new["columns"][name]
            if not col["nullable"] and col.get("default") is None:
                problems.append(f"adds {table}.{name} NOT NULL without a server default")
    return problems


def test_every_migration_is_additive(backend_settings: Settings) -> None:
    engine = make_engine(backend_settings.db_url)
    try:
        before = snapshot(engine)
        for revision in revisions():
            upgrade_to(engine, revision)
            after = snapshot(engine)
            assert non_additive(before, after) == [], f"revision {revision}"
            before = after
    finally:
        engine.dispose()


def test_the_additive_check_catches_what_would_break_the_previous_release(
    postgres_db: str,
) -> None:
    """The checker itself, on changes a migration must not make (PostgreSQL: SQLite's ALTER
    TABLE cannot make some of them)."""
    url = psycopg_url(postgres_db)
    open_store(url).dispose()
    engine = make_engine(url)
    try:
        before = snapshot(engine)
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE model_artifacts"))
            conn.execute(text("ALTER TABLE feedback DROP COLUMN key_id"))
            conn.execute(text("ALTER TABLE routing_state ALTER COLUMN weight TYPE TEXT"))
            conn.execute(text("ALTER TABLE audit_log ADD COLUMN required_now INTEGER NOT NULL"))
            conn.execute(text("ALTER TABLE audit_log ADD COLUMN fine INTEGER DEFAULT 0 NOT NULL"))
            conn.execute(text("ALTER TABLE audit_log ADD COLUMN also_fine INTEGER"))
            conn.execute(text("CREATE UNIQUE INDEX ux_predictions_hash ON predictions (text_hash)"))
            conn.execute(text("CREATE INDEX ix_fine ON predictions (label)"))
        problems = non_additive(before, snapshot(engine))
    finally:
        engine.dispose()
    assert sorted(problems) == sorted(
        [
            "drops table model_artifacts",
            "drops or renames feedback.key_id",
            "changes the type of routing_state.weight",
            "adds audit_log.required_now NOT NULL without a server default",
            "adds a unique constraint on predictions['text_hash']",
        ]
    )
