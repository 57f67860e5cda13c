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
from sqlalchemy import Engine, create_engine, delete, event, select, text
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from loopml.config import create_private_file, redact_url
from loopml.errors import ConfigError, StoreError
from loopml.store.artifacts import FileHashes
from loopml.store.models import AuditEntry, ModelArtifact, MonitorResult

_MIGRATIONS = Path(__file__).parent / "migrations"

# What went wrong, by the words of the drivers' messages; never the message itself, which names
# the host, port, database and user (and reaches HTTP responses and the status page).
_CAUSES = (
    ("connection refused", "connection refused"),
    ("timeout", "connection timed out"),
    ("timed out", "connection timed out"),
    ("password authentication failed", "authentication failed"),
    ("authentication failed", "authentication failed"),
    ("no password supplied", "authentication failed"),
    ("does not exist", "the database does not exist"),
    ("not currently accepting connections", "the database does not accept connections"),
    ("could not translate host name", "the host name does not resolve"),
    ("name or service not known", "the host name does not resolve"),
    ("server closed the connection", "the connection was lost"),
    ("terminating connection", "the connection was lost"),
    ("connection is closed", "the connection was lost"),
    ("database is locked", "the database is locked"),
    ("unable to open database file", "the database file cannot be opened"),
    ("readonly database", "the database is read-only"),
    ("disk i/o error", "disk I/O error"),
)


def describe_db_error(exc: BaseException) -> str:
    """A short cause of a database error without hosts, ports, names or SQL: what a client or
    the status page may read. The full message goes to the log of the process only."""
    text_ = str(exc).lower()
    for needle, cause in _CAUSES:
        if needle in text_:
            return f"{type(exc).__name__}: {cause}"
    return type(exc).__name__


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
        if url.startswith("sqlite:///") and ":memory:" not in url:
            # Owner-only from the first byte (SQLite would apply the umask, usually 0644).
            create_private_file(Path(url.removeprefix("sqlite:///")))
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
            raise StoreError(f"loopml database error: {describe_db_error(exc)}") from exc

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

    def annotate_monitor_result(self, result_id: int, key: str, value: Any) -> None:
        """Add ``key: value`` to the stored summary of monitoring run ``result_id`` (what the
        controller concluded from it, e.g. the learning gap)."""
        with self.session() as session:
            row = session.get(MonitorResult, result_id)
            if row is not None:
                # A new dict, so that the JSON column sees the change.
                row.summary = {**(row.summary or {}), key: value}

    def record_artifacts(self, model_name: str, version: str, files: FileHashes) -> None:
        """Record ``path -> (sha256, size)`` of every file of a registered version (replacing
        what was recorded for it before: a version number reused after a deletion)."""
        now = datetime.now(UTC)
        with self.session() as session:
            session.execute(
                delete(ModelArtifact).where(
                    ModelArtifact.model_name == model_name, ModelArtifact.version == version
                )
            )
            session.add_all(
                ModelArtifact(
                    model_name=model_name,
                    version=version,
                    path=path,
                    sha256=digest,
                    size=size,
                    recorded_at=now,
                )
                for path, (digest, size) in sorted(files.items())
            )

    def artifacts(self, model_name: str, version: str) -> FileHashes:
        """``path -> (sha256, size)`` recorded at registration; empty when none was recorded."""
        with self.session() as session:
            rows = session.scalars(
                select(ModelArtifact).where(
                    ModelArtifact.model_name == model_name, ModelArtifact.version == version
                )
            )
            return {row.path: (row.sha256, row.size) for row in rows}

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
        # The back-end kind helps the CLI user; the host, port and name stay out of the text.
        kind = redact_url(url).partition(":")[0].partition("+")[0]
        cause = describe_db_error(exc)
        raise StoreError(f"cannot open the loopml database ({kind}): {cause}") from exc
    return Store(engine)
