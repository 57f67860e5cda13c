"""Engine creation, the schema's revision and its upgrade, and the audit log.

Migrations are additive (see ``migrations/env.py``): code whose newest revision is older than the
database's works on the tables and columns it knows, so a rollback of the code never needs a
rollback of the schema. Opening the store migrates it unless ``LOOPML_DB_AUTO_MIGRATE`` is false
(Kubernetes: a migration Job runs ``loopml db upgrade`` before the Deployments roll).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, create_engine, delete, event, select, text
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from loopml.config import create_private_file, redact_url
from loopml.errors import ConfigError, SchemaBehindError, StoreError
from loopml.store.artifacts import FileHashes
from loopml.store.models import AuditEntry, ModelArtifact, MonitorResult

if TYPE_CHECKING:
    from loopml.config import Settings

log = logging.getLogger(__name__)

_MIGRATIONS = Path(__file__).parent / "migrations"
# Our own Alembic version table: MLflow keeps its history in `alembic_version`, and both stores
# may share one PostgreSQL database.
VERSION_TABLE = "loopml_alembic_version"

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


def alembic_config() -> Config:
    """Alembic's configuration of loopml's migrations (a connection goes in
    ``attributes["connection"]``)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    return cfg


def head_revision() -> str:
    """The newest revision of this code's migrations."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None  # there is at least the initial revision
    return head


SchemaStatus = Literal["current", "behind", "empty", "ahead"]


@dataclass(frozen=True)
class SchemaState:
    """Where the database's schema stands against this code's migrations.

    ``current``: at this code's head; ``behind``: at an older revision this code knows (``loopml
    db upgrade`` moves it); ``empty``: no loopml tables yet; ``ahead``: at a revision this code does
    not know, written by newer code: usable, migrations being additive.
    """

    revision: str | None
    head: str
    status: SchemaStatus

    @property
    def usable(self) -> bool:
        """Whether this code can work on the schema as it is."""
        return self.status in ("current", "ahead")

    def describe(self) -> str:
        """One sentence for people: where the schema is and what to do."""
        at = f"revision {self.revision}" if self.revision else "no loopml tables"
        if self.status == "current":
            return f"the loopml database schema is at {at}, this code's head"
        if self.status == "ahead":
            return (
                f"the loopml database schema is at {at}, newer than this code's head "
                f"{self.head} (written by a newer release; migrations are additive, so this code "
                "works on the tables and columns it knows)"
            )
        return (
            f"the loopml database schema is behind: {at}, this code needs revision {self.head};"
            " run `loopml db upgrade`"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields plus ``usable``."""
        return {**asdict(self), "usable": self.usable}


def _state(conn: Connection) -> SchemaState:
    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    assert head is not None
    revision = MigrationContext.configure(
        conn, opts={"version_table": VERSION_TABLE}
    ).get_current_revision()
    status: SchemaStatus
    if revision is None:
        status = "empty"
    elif revision == head:
        status = "current"
    elif revision in {r.revision for r in script.walk_revisions()}:
        status = "behind"
    else:
        status = "ahead"
    return SchemaState(revision, head, status)


def schema_state(engine: Engine) -> SchemaState:
    """The schema's revision against this code's head (reads only)."""
    with engine.connect() as conn:
        return _state(conn)


def migrate(engine: Engine) -> SchemaState:
    """Upgrade the schema to this code's head; a schema ahead of it is left as it is."""
    cfg = alembic_config()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Replicas starting together on a fresh database: one migrates, the others wait.
            conn.execute(text("SELECT pg_advisory_xact_lock(7419)"))
        state = _state(conn)
        if state.status == "ahead":
            # Newer code migrated it (a rollback of the code): Alembic would refuse the unknown
            # revision, and the additive rule makes the schema usable as it is.
            log.warning("%s", state.describe())
            return state
        if state.status != "current":
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    return SchemaState(state.head, state.head, "current")


def ensure_schema(engine: Engine, *, auto_migrate: bool) -> SchemaState:
    """Migrate (``auto_migrate``), or check that the schema is usable as it is.

    Raises ``SchemaBehindError`` when it is not and migrating is not ours to do.
    """
    if auto_migrate:
        return migrate(engine)
    state = schema_state(engine)
    if not state.usable:
        raise SchemaBehindError(f"{state.describe()} (LOOPML_DB_AUTO_MIGRATE is false)")
    return state


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


def connect(url: str) -> Engine:
    """An engine for ``url``; ``ConfigError`` when the URL or its driver is not usable."""
    try:
        return make_engine(url)
    except (ArgumentError, ImportError, ValueError) as exc:
        raise ConfigError(f"database URL {redact_url(url)!r} is not usable: {exc}") from exc


def open_error(url: str, exc: BaseException) -> StoreError:
    """``exc`` (a database or Alembic error) as a ``StoreError`` naming the back-end kind only."""
    # The back-end kind helps the CLI user; the host, port and name stay out of the text.
    kind = redact_url(url).partition(":")[0].partition("+")[0]
    return StoreError(f"cannot open the loopml database ({kind}): {describe_db_error(exc)}")


def open_store(url: str, *, auto_migrate: bool = True) -> Store:
    """Connect to the loopml database at ``url`` and bring its schema up to date, or (without
    ``auto_migrate``) check that it is usable: ``SchemaBehindError`` when it is not."""
    engine = connect(url)
    try:
        ensure_schema(engine, auto_migrate=auto_migrate)
    except SchemaBehindError:
        engine.dispose()
        raise
    except (SQLAlchemyError, CommandError) as exc:
        engine.dispose()
        raise open_error(url, exc) from exc
    return Store(engine)


def open_settings_store(settings: Settings) -> Store:
    """``open_store`` on the settings' database, migrating as ``LOOPML_DB_AUTO_MIGRATE`` says."""
    return open_store(settings.db_url, auto_migrate=settings.db_auto_migrate)
