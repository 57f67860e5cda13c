from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from loopml.config import Settings
from loopml.errors import StoreError
from loopml.store import open_store


def test_migrations_create_every_table_and_are_idempotent(backend_settings: Settings) -> None:
    store = open_store(backend_settings.db_url)
    store.dispose()
    store = open_store(backend_settings.db_url)  # second open: nothing to do, no error
    tables = set(inspect(store.engine).get_table_names())
    assert {
        "audit_log",
        "predictions",
        "feedback",
        "routing_state",
        "monitor_results",
        "loopml_alembic_version",
    } <= tables
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM loopml_alembic_version")).scalar() == 1
    store.dispose()


def test_audit_history_is_newest_first(backend_settings: Settings) -> None:
    store = open_store(backend_settings.db_url)
    for i in range(3):
        store.audit(
            actor="t",
            action="promote",
            model_name="m",
            from_version=str(i),
            to_version=str(i + 1),
            details={"i": i},
        )
    store.audit(actor="t", action="promote", model_name="other", from_version=None, to_version="1")
    entries = store.history("m")
    assert [e.to_version for e in entries] == ["3", "2", "1"]
    assert entries[0].details == {"i": 2}
    assert store.history("m", limit=1)[0].to_version == "3"
    store.dispose()


def test_unreachable_database_is_a_store_error_without_password_or_host() -> None:
    # The text reaches HTTP answers and the status page: it says what failed, not where.
    url = "postgresql+psycopg://loopml:s3cret-pw@127.0.0.1:1/nowhere"
    with pytest.raises(StoreError) as info:
        open_store(url)
    for internal in ("s3cret-pw", "127.0.0.1", "nowhere", "loopml@"):
        assert internal not in str(info.value)
    assert "(postgresql)" in str(info.value) and "connection refused" in str(info.value)


def test_a_sqlite_file_created_by_the_store_is_private(tmp_path: Path) -> None:
    import os
    import stat

    old = os.umask(0o022)  # the usual umask would give 0644
    try:
        with open_store(f"sqlite:///{tmp_path / 'fresh.db'}"):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "fresh.db").stat().st_mode) == 0o600
