"""`loopml db upgrade|current|check`: exit codes 0/1/2, JSON, messages without passwords or
tracebacks, on SQLite and on PostgreSQL with the production URL shape (postgresql+psycopg://, the
MLflow store's own `alembic_version` in the same database)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from loopml.config import psycopg_url
from loopml.store._db import VERSION_TABLE, head_revision, make_engine


def loopml(*args: str, url: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LOOPML_")}
    return subprocess.run(
        [sys.executable, "-m", "loopml", *args],
        env={**clean, "LOOPML_DATABASE_URL": url, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def as_json(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert "Traceback" not in proc.stderr, proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def test_upgrade_current_and_check_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'loopml.db'}"
    head = head_revision()

    empty = loopml("db", "current", "--json", url=url)
    assert empty.returncode == 0, empty.stderr
    assert as_json(empty) | {"message": ""} == {
        "database": url,
        "revision": None,
        "head": head,
        "status": "empty",
        "usable": False,
        "message": "",
    }
    check = loopml("db", "check", url=url)
    assert check.returncode == 1 and "run `loopml db upgrade`" in check.stderr, check.stderr
    # Any store-opening command refuses a schema behind the code when migrating is off.
    refused = loopml("history", url=url, LOOPML_DB_AUTO_MIGRATE="false")
    assert refused.returncode == 2, refused.stderr
    assert "loopml db upgrade" in refused.stderr and "Traceback" not in refused.stderr

    upgraded = loopml("db", "upgrade", "--json", url=url)
    assert upgraded.returncode == 0, upgraded.stderr
    doc = as_json(upgraded)
    assert (doc["from"], doc["revision"], doc["status"]) == (None, head, "current")
    again = loopml("db", "upgrade", url=url)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout
    ok = loopml("db", "check", "--json", url=url)
    assert ok.returncode == 0 and as_json(ok)["usable"] is True
    assert loopml("history", url=url, LOOPML_DB_AUTO_MIGRATE="false").returncode == 0


def test_a_schema_newer_than_the_code_is_usable_and_left_alone(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'loopml.db'}"
    assert loopml("db", "upgrade", url=url).returncode == 0
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = 'f00dcafe'"))
    engine.dispose()
    check = loopml("db", "check", url=url)
    assert check.returncode == 0 and "newer than this code's head" in check.stdout, check.stdout
    upgrade = loopml("db", "upgrade", "--json", url=url)
    assert upgrade.returncode == 0, upgrade.stderr
    assert (as_json(upgrade)["revision"], as_json(upgrade)["status"]) == ("f00dcafe", "ahead")
    current = loopml("db", "current", url=url)
    assert "revision: f00dcafe" in current.stdout and current.returncode == 0


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://loopml:s3cret-pw@127.0.0.1:1/nowhere",
        "postgresql+psycopg://loopml:s3cret-pw@no-such-host.invalid:5432/nowhere",
        "nosuchdialect://loopml:s3cret-pw@127.0.0.1/x",
    ],
)
def test_a_bad_or_unreachable_url_exits_2_without_password_or_traceback(url: str) -> None:
    for command in ("upgrade", "current", "check"):
        proc = loopml("db", command, url=url)
        assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
        assert "s3cret-pw" not in proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr and "error:" in proc.stderr, proc.stderr


def test_production_url_shape_on_postgresql(postgres_db: str) -> None:
    """postgresql+psycopg:// (what Terraform outputs), the loopml and MLflow schemas in one
    database: `db current` reads loopml's own version table, never MLflow's."""
    url = psycopg_url(postgres_db)
    assert url.startswith("postgresql+psycopg://")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)"))
        conn.execute(text("INSERT INTO alembic_version VALUES ('mlflow-head-rev')"))
    try:
        empty = as_json(loopml("db", "current", "--json", url=url))
        assert (empty["revision"], empty["status"]) == (None, "empty")
        assert loopml("db", "check", url=url).returncode == 1
        upgraded = loopml("db", "upgrade", "--json", url=url)
        assert upgraded.returncode == 0, upgraded.stderr
        current = loopml("db", "current", "--json", url=url)
        assert current.returncode == 0, current.stderr
        doc = as_json(current)
        assert (doc["revision"], doc["status"]) == (head_revision(), "current")
        assert loopml("db", "check", url=url).returncode == 0
        with engine.connect() as conn:
            mlflow_rev = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        assert mlflow_rev == "mlflow-head-rev"
    finally:
        engine.dispose()
