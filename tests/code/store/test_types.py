"""UtcDateTime on SQLite and PostgreSQL, the newest monitor result, Store as a context manager."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata, produce_migrations, render_python_code
from alembic.migration import MigrationContext
from sqlalchemy import Column, MetaData, Table, create_engine, select, text

from loopml.config import Settings
from loopml.store import (
    PREDICTION_COLUMNS,
    AuditEntry,
    MonitorResult,
    Prediction,
    Store,
    UtcDateTime,
    open_store,
)
from loopml.store.models import Base
from loopml.store.types import render_item


def _entry(ts: datetime, action: str) -> AuditEntry:
    return AuditEntry(
        ts=ts,
        actor="t",
        action=action,
        model_name="m",
        from_version=None,
        to_version="1",
        reason="",
        details={},
    )


def test_times_come_back_aware_utc_whatever_was_written(backend_settings: Settings) -> None:
    plus_two = timezone(timedelta(hours=2))
    written = {
        "aware_utc": datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=UTC),
        "naive": datetime(2024, 5, 1, 12, 0, 1),  # taken to be UTC
        "plus_two": datetime(2024, 5, 1, 14, 0, 2, tzinfo=plus_two),  # 12:00:02 UTC
    }
    with open_store(backend_settings.db_url) as store:
        with store.session() as session:
            session.add_all(_entry(ts, action) for action, ts in written.items())
        with store.session() as session:
            rows = {e.action: e.ts for e in session.scalars(select(AuditEntry))}
            # Comparisons bind through the same type: after 14:00:01+02:00 is after 12:00:01 UTC.
            later = session.scalars(
                select(AuditEntry.action).where(
                    AuditEntry.ts > datetime(2024, 5, 1, 14, 0, 1, tzinfo=plus_two)
                )
            ).all()
    assert rows["aware_utc"] == datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=UTC)
    assert rows["naive"] == datetime(2024, 5, 1, 12, 0, 1, tzinfo=UTC)
    assert rows["plus_two"] == datetime(2024, 5, 1, 12, 0, 2, tzinfo=UTC)
    assert all(ts.tzinfo is UTC for ts in rows.values())
    assert later == ["plus_two"]


def test_a_value_that_is_not_a_datetime_is_refused() -> None:
    engine = create_engine("sqlite://")
    table = Table("t", MetaData(), Column("ts", UtcDateTime()))
    table.create(engine)
    with engine.begin() as conn, pytest.raises(Exception, match="expected a datetime"):
        conn.execute(table.insert(), {"ts": "2024-05-01 12:00:00"})
    with engine.begin() as conn:
        conn.execute(table.insert(), {"ts": None})
        assert conn.execute(select(table.c.ts)).scalar_one() is None
    engine.dispose()


def test_the_schema_still_matches_the_migrations(backend_settings: Settings) -> None:
    with open_store(backend_settings.db_url) as store, store.engine.connect() as conn:
        opts = {"compare_type": True, "version_table": "loopml_alembic_version"}
        context = MigrationContext.configure(conn, opts=opts)
        assert compare_metadata(context, Base.metadata) == []


def test_autogenerate_renders_the_database_type() -> None:
    engine = create_engine("sqlite://")
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"render_item": render_item})
        upgrade = produce_migrations(context, Base.metadata).upgrade_ops
        assert upgrade is not None
        code = render_python_code(upgrade, render_item=render_item, migration_context=context)
    engine.dispose()
    assert "sa.DateTime(timezone=True)" in code
    assert "UtcDateTime" not in code


def test_prediction_columns_are_the_table_columns_in_order() -> None:
    assert tuple(Prediction.__table__.columns.keys()) == PREDICTION_COLUMNS
    assert PREDICTION_COLUMNS[:2] == ("request_id", "ts")
    assert "probabilities" in PREDICTION_COLUMNS


def test_latest_monitor_result_is_the_newest_of_that_model(backend_settings: Settings) -> None:
    with open_store(backend_settings.db_url) as store:
        assert store.latest_monitor_result("m") is None
        with store.session() as session:
            for i, name in enumerate(["m", "m", "other"]):
                session.add(
                    MonitorResult(
                        ts=datetime(2024, 5, 1, 12, i),
                        model_name=name,
                        model_version=str(i),
                        window_size=10 * i,
                        verdict="ok",
                        summary={"i": i},
                        report_path=None,
                    )
                )
        row = store.latest_monitor_result("m")
    assert row is not None
    assert (row.model_version, row.window_size, row.summary) == ("1", 10, {"i": 1})
    assert row.ts == datetime(2024, 5, 1, 12, 1, tzinfo=UTC)


def test_store_is_a_context_manager_that_disposes(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    disposed: list[Store] = []
    monkeypatch.setattr(Store, "dispose", lambda self: disposed.append(self))
    with open_store(settings.db_url) as store:
        assert isinstance(store, Store)
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
    assert disposed == [store]
    with pytest.raises(RuntimeError), open_store(settings.db_url) as other:
        raise RuntimeError("boom")
    assert disposed == [store, other]
