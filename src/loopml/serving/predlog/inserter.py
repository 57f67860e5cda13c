"""Inserting journal records into ``predictions``: idempotent, in bulk, one bad row never the rest.

``INSERT .. ON CONFLICT (request_id) DO NOTHING`` makes replays harmless. A batch the database
refuses for its values is retried row by row so that only the bad rows are refused; an outage (the
connection, a lock, a missing table) raises :class:`OutageError` and the records stay spooled.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc

from loopml.errors import LoopmlError
from loopml.serving.predlog.records import COLUMNS


class OutageError(Exception):
    """The database (or the dead-letter file) cannot take records now: retry later."""


def _outage(exc: BaseException) -> str:
    # A LoopmlError's message is written for people (the schema needs `loopml db upgrade`); a
    # driver's names the host and database: its class only.
    return str(exc) if isinstance(exc, LoopmlError) else type(exc).__name__


def _reason(exc: BaseException) -> str:
    detail = getattr(exc, "orig", None) or exc
    return f"{type(detail).__name__}: {str(detail).splitlines()[0] if str(detail) else ''}"[:300]


def _sqlite_ts(ts: float) -> str:
    # SQLAlchemy's storage format for DateTime on SQLite (UTC; it keeps no offset).
    micro = round((ts % 1) * 1_000_000) % 1_000_000
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(int(ts))) + f".{micro:06d}"


def _is_row_error(exc: BaseException) -> bool:
    """Whether the database refused the rows themselves (a bad value), not the connection."""
    if isinstance(exc, sa_exc.DataError | sa_exc.IntegrityError):
        return True
    if isinstance(exc, sa_exc.SQLAlchemyError | OSError):
        return False  # an outage, a lock, a missing table: retry, never dead-letter
    return isinstance(exc, ValueError | TypeError | OverflowError | KeyError)


class Inserter:
    """Bulk idempotent inserts through the raw driver (SQLAlchemy Core costs ~4x the CPU here)."""

    def __init__(self, engine: Engine, *, migrate: bool, auto_migrate: bool) -> None:
        self.engine = engine
        self._needs_migration = migrate
        self._auto_migrate = auto_migrate
        self.postgres = engine.dialect.name == "postgresql"
        cols = ", ".join(COLUMNS)
        if self.postgres:
            marks = ", ".join("CAST(%s AS JSON)" if c == "probabilities" else "%s" for c in COLUMNS)
        else:
            marks = ", ".join("?" for _ in COLUMNS)
        self.sql = (
            f"INSERT INTO predictions ({cols}) VALUES ({marks}) ON CONFLICT (request_id) DO NOTHING"
        )

    def insert(self, rows: list[dict[str, Any]]) -> list[tuple[bytes, str, int]]:
        """Insert ``rows``; the ones the database refuses, with the reason (outages raise
        :class:`OutageError`). Existing request ids are left as they are."""
        try:
            self._insert_all(rows)
            return []
        except Exception as exc:
            if not _is_row_error(exc):
                raise OutageError(_outage(exc)) from exc
            if len(rows) == 1:
                return [(orjson.dumps(rows[0]), _reason(exc), 1)]
        refused = []
        for row in rows:  # one transaction each: a bad row cannot take the others down
            try:
                self._insert_all([row])
            except Exception as exc:
                if not _is_row_error(exc):
                    raise OutageError(_outage(exc)) from exc
                refused.append((orjson.dumps(row), _reason(exc), 1))
        return refused

    def _insert_all(self, records: list[dict[str, Any]]) -> None:
        """Insert ``records`` in one transaction (migrating the schema first, once)."""
        if self._needs_migration:
            from loopml.store._db import ensure_schema

            # Migrates, or (LOOPML_DB_AUTO_MIGRATE off) raises while the schema is behind: the
            # records stay on the spool until `loopml db upgrade` ran.
            ensure_schema(self.engine, auto_migrate=self._auto_migrate)
            self._needs_migration = False
        rows = [self._row(r) for r in records]
        with self.engine.begin() as conn:
            conn.exec_driver_sql(self.sql, rows)

    def _row(self, rec: dict[str, Any]) -> tuple[Any, ...]:
        ts = rec["ts"]
        return (
            rec["request_id"],
            datetime.fromtimestamp(ts, UTC) if self.postgres else _sqlite_ts(ts),
            rec["model_name"],
            rec["model_version"],
            rec["variant"],
            rec["text"],
            rec["text_hash"],
            rec["text_length"],
            rec["label"],
            orjson.dumps(rec["probabilities"]).decode(),
            rec["latency_ms"],
        )
