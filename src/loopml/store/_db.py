"""Engine creation, Alembic upgrade on open, and the audit log."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from sqlalchemy import Engine, create_engine, event, select, text
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from loopml.config import redact_url
from loopml.errors import ConfigError, StoreError
from loopml.store.models import AuditEntry, MonitorResult

_MIGRATIONS = Path(__file__).parent / "migrations"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets the prediction-log writer and readers (monitor, CLI) work at the same time.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


def make_engine(url: str, *, connect_timeout: float = 5.0) -> Engine:
    """An engine for ``url``: WAL for SQLite, a connect timeout and pre-ping for PostgreSQL."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 5})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(
        url,
        pool_pre_ping=True,
        connect_args={"connect_timeout": max(1, int(connect_timeout))},
    )


def migrate(engine: Engine) -> None:
    """Upgrade the schema to the newest Alembic revision."""
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Replicas starting together on a fresh database: one migrates, the others wait.
            conn.execute(text("SELECT pg_advisory_xact_lock(7419)"))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class Store:
    """Handle on the loopml database; ``with open_store(url) as store:`` disposes it at the end."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessions = sessionmaker(engine, expire_on_commit=False)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction, committed on success; database errors become ``StoreError``."""
        try:
            with self.sessions.begin() as session:
                yield session
        except SQLAlchemyError as exc:
            raise StoreError(f"loopml database error: {type(exc).__name__}: {exc.args[0]}") from exc

    def audit(
        self,
        *,
        actor: str,
        action: str,
        model_name: str,
        from_version: str | None,
        to_version: str | None,
        reason: str = "",
        details: dict[str, Any] | None = None,
        session: Session | None = None,
    ) -> AuditEntry:
        """Append one audit record (inside ``session`` when given, else in its own transaction)."""
        entry = AuditEntry(
            ts=datetime.now(UTC),
            actor=actor,
            action=action,
            model_name=model_name,
            from_version=from_version,
            to_version=to_version,
            reason=reason,
            details=details or {},
        )
        if session is not None:
            session.add(entry)
            session.flush()
            return entry
        with self.session() as own:
            own.add(entry)
        return entry

    def history(self, model_name: str, *, limit: int = 50) -> list[AuditEntry]:
        """Newest audit records first."""
        with self.session() as session:
            query = (
                select(AuditEntry)
                .where(AuditEntry.model_name == model_name)
                .order_by(AuditEntry.id.desc())
                .limit(limit)
            )
            return list(session.scalars(query))

    def latest_monitor_result(self, model_name: str) -> MonitorResult | None:
        """The newest monitoring run of ``model_name`` (usable after its session), or None."""
        with self.session() as session:
            query = (
                select(MonitorResult)
                .where(MonitorResult.model_name == model_name)
                .order_by(MonitorResult.id.desc())
                .limit(1)
            )
            return session.scalars(query).first()

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def open_store(url: str) -> Store:
    """Connect to the loopml database at ``url`` and bring its schema up to date."""
    try:
        engine = make_engine(url)
    except (ArgumentError, ImportError) as exc:
        raise ConfigError(f"database URL {redact_url(url)!r} is not usable: {exc}") from exc
    try:
        migrate(engine)
    except (SQLAlchemyError, CommandError) as exc:
        engine.dispose()
        message = exc.args[0] if exc.args else type(exc).__name__
        where = redact_url(url)
        raise StoreError(f"cannot open the loopml database at {where}: {message}") from exc
    return Store(engine)
