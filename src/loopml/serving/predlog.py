"""The prediction log: a per-process append-only journal on disk and a database writer process.

Every model batch appends its records to this process's journal segment with one ``write()``
before any response of the batch is released: once a client has an answer, its record is in the OS
and survives ``kill -9`` of the server (``LOOPML_PREDLOG_FSYNC=always`` also fsyncs it, so it
survives a power loss). A write that fails or is short is truncated back to the last whole record
and the batch fails with :class:`~loopml.errors.JournalError` (503 + Retry-After): no answer is
ever given for a record that is not in the journal, and no torn record is left for the next one.

The database writer runs in its own process (spawned per server process), so its parsing and
inserts never compete with serving for the GIL. It tails this process's segments and inserts
records in batches with ``INSERT .. ON CONFLICT (request_id) DO NOTHING`` (replays are
idempotent), deleting a segment only once every byte of it is consumed. While the database is slow
or down, records stay in the segments (the spool) and the writer retries with back-off. A record
the database refuses (a bad field, a NUL on PostgreSQL) or a line that is not a valid record goes
to ``deadletter.jsonl`` in the spool folder (``loopml_predlog_dead_letter_total``, alert
``LoopmlPredictionDeadLetters``) and the rest of the batch is committed: one bad row never stalls
the log. Lines may be of any length. A line is one batch of records in columns (one
``orjson`` call per model batch keeps the serving process's cost per text low; the writer
computes text hashes and lengths) or, as older journals and tests write, one record.

The serving process keeps an in-memory index of the request ids it journaled and the writer has
not committed yet, so the feedback store finds a fresh prediction without reading the journal.

Each process holds an ``flock`` on ``<owner>.lock`` in the spool folder for its life. A segment
whose owner's lock is free belongs to a process that died (or stopped before it could drain):
any live writer replays it and deletes it.

Counters: ``served`` = records journaled, ``written`` = own records committed, ``dead_letter`` =
own records refused, ``backlog`` = served - written - dead_letter; records of other processes are
counted as ``replayed`` (or ``replay_dead_letter``); ``dropped`` = records of batches the journal
could not take (those requests were answered 503, so no answer is missing from the log).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import multiprocessing
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc

from loopml.errors import JournalError, LoopmlError
from loopml.serving.metrics import Metrics
from loopml.store.deadletter import DEAD_LETTER, locked_dead_letter
from loopml.store.models import PREDICTION_COLUMNS

__all__ = ["DEAD_LETTER", "Journal", "PredictionLog", "parse", "read_lines"]

log = logging.getLogger("loopml.serving.predlog")

SEGMENT = ".seg"
LOCK = ".lock"
ROTATE_BYTES = 4 << 20
INDEX_LIMIT = 100_000  # uncommitted ids kept for feedback lookups (~25 MB); beyond: "retry later"
_ORPHAN_SCAN_S = 5.0
_MAX_BACKOFF_S = 5.0
_SYNC_S = 0.05

# Slots of the array shared with the writer process (int64 each; one writer, so no lock).
_WRITTEN, _DEAD, _REPLAYED, _DROPPED, _DB_DOWN, _SEQ, _OFFSET, _STOP, _ABANDON, _DONE = range(10)
_SLOTS = 10


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive flock on ``path``, or None when someone else holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _seq_of(path: Path) -> int:
    return int(path.name.removesuffix(SEGMENT).rsplit("-", 1)[1])


class Journal:
    """This process's append-only segments in the spool folder."""

    def __init__(self, spool_dir: Path, *, fsync: bool = False) -> None:
        spool_dir.mkdir(parents=True, exist_ok=True)
        self.dir = spool_dir
        self.fsync = fsync
        self.owner = f"j{os.getpid()}-{secrets.token_hex(4)}"
        self.lock_path = spool_dir / f"{self.owner}{LOCK}"
        fd = _try_lock(self.lock_path)
        if fd is None:  # a fresh random name: cannot be held by anyone else
            raise OSError(f"cannot lock {self.lock_path}")
        self._lock_fd = fd
        self._mutex = threading.Lock()
        self._closed = False
        self.seq = 0
        self.size = 0
        self._fd = -1
        self._open_next()

    def _open_next(self) -> None:
        path = self.dir / f"{self.owner}-{self.seq + 1:06d}{SEGMENT}"
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.seq += 1
        self.size = 0

    def segments(self) -> list[Path]:
        """This journal's segment files, oldest first."""
        return sorted(self.dir.glob(f"{self.owner}-*{SEGMENT}"))

    def append(self, data: bytes) -> tuple[int, int]:
        """Append whole records; ``(segment number, offset after them)``. On any failure the
        segment is cut back to its last whole record and ``OSError`` is raised."""
        with self._mutex:
            if self._closed:
                raise OSError("the journal is closed")
            if self._fd < 0:
                self._open_next()  # the last segment could not be cut back: never append to it
            start = self.size
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view) :]
                if self.fsync:
                    os.fdatasync(self._fd)
            except OSError:
                self._cut_back(start)
                raise
            self.size = start + len(data)
            at = (self.seq, self.size)
            if self.size >= ROTATE_BYTES:
                self._rotate()
            return at

    def _cut_back(self, size: int) -> None:
        try:
            os.ftruncate(self._fd, size)
        except OSError:
            # The torn tail stays: close the segment so that nothing is appended after it (the
            # writer dead-letters a closed segment's incomplete last line).
            os.close(self._fd)
            self._fd = -1

    def _rotate(self) -> None:
        os.close(self._fd)
        self._fd = -1
        with contextlib.suppress(OSError):  # retried by the next append
            self._open_next()

    def close(self) -> None:
        """Close the active segment; no more appends."""
        with self._mutex:
            self._closed = True
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def release(self, *, delete_lock: bool) -> None:
        """Give up the owner lock (delete it first when every segment is gone)."""
        if delete_lock:
            self.lock_path.unlink(missing_ok=True)
        os.close(self._lock_fd)


def read_lines(path: Path, offset: int, limit: int) -> tuple[list[bytes], int]:
    """Up to ``limit`` complete lines of ``path`` from ``offset`` and the offset after them.

    A line longer than the first read is read to its end: lines may be of any length.
    """
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            chunk = fh.read(max(limit, 1) * 4096)
            end = chunk.rfind(b"\n")
            while end < 0:
                more = fh.read(max(len(chunk), 65536))
                if not more:
                    return [], offset
                chunk += more
                end = chunk.rfind(b"\n")
    except FileNotFoundError:
        return [], offset
    lines = chunk[: end + 1].split(b"\n")[:-1]
    if len(lines) > limit:
        lines = lines[:limit]
    consumed = sum(len(line) + 1 for line in lines)
    return lines, offset + consumed


COLUMNS = PREDICTION_COLUMNS  # one journal record: every column of ``predictions``
_STR = (str,)
_NUM = (int, float)
_TYPES: dict[str, tuple[type, ...]] = {
    "request_id": _STR,
    "ts": _NUM,
    "model_name": _STR,
    "model_version": _STR,
    "variant": _STR,
    "text": (str, type(None)),
    "text_hash": _STR,
    "text_length": (int,),
    "label": _STR,
    "probabilities": (dict,),
    "latency_ms": _NUM,
}


def _problem(rec: Any) -> str | None:
    """Why ``rec`` is not a storable record, or None."""
    if not isinstance(rec, dict):
        return "not a JSON object"
    for col in COLUMNS:
        if col not in rec:
            return f"no {col!r}"
        types = _TYPES.get(col)
        value = rec[col]
        if types is not None and (not isinstance(value, types) or isinstance(value, bool)):
            return f"{col!r} is {type(value).__name__}"
    return None


def parse(lines: Iterable[bytes]) -> tuple[list[dict[str, Any]], list[tuple[bytes, str, int]]]:
    """Journal records, and the lines that are not valid records with the reason and the number
    of records they held. A line is one record, or one batch of records in columns."""
    rows: list[dict[str, Any]] = []
    bad: list[tuple[bytes, str, int]] = []
    for line in lines:
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            bad.append((line, "not JSON (torn or corrupt)", 1))
            continue
        if isinstance(rec, dict) and "batch" in rec:
            expanded, problem = _expand(rec)
        else:
            expanded, problem = [rec], _problem(rec)
        if problem is None:
            problem = next((p for r in expanded if (p := _problem(r))), None)
        if problem is None:
            rows += expanded
        else:
            count = rec.get("batch") if isinstance(rec, dict) else None
            bad.append((line, problem, count if isinstance(count, int) and count > 0 else 1))
    return rows, bad


_BATCH_COLUMNS = ("request_id", "label", "probabilities", "latency_ms")


def _expand(batch: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    """The records of one batch line (see ``Batcher._batch_record``), or why it is invalid."""
    n = batch["batch"]
    classes = batch.get("classes")
    if not isinstance(classes, list):
        return [], "'classes' is not a list"
    texts = batch.get("text")
    if texts is None:
        texts = [None] * n if isinstance(n, int) else None
        hashes, lengths = batch.get("text_hash"), batch.get("text_length")
    else:
        hashes = (
            [hashlib.sha256(t.encode()).hexdigest() if isinstance(t, str) else None for t in texts]
            if isinstance(texts, list)
            else None
        )
        lengths = [len(t) if isinstance(t, str) else None for t in texts] if hashes else None
    columns: dict[str, Any] = {c: batch.get(c) for c in _BATCH_COLUMNS}
    columns |= {"text": texts, "text_hash": hashes, "text_length": lengths}
    for name, values in columns.items():
        if not isinstance(values, list) or len(values) != n:
            return [], f"{name!r} does not hold {n} values"
    shared = {c: batch.get(c) for c in ("ts", "model_name", "model_version", "variant")}
    records = []
    for i in range(n):
        rec = shared | {name: values[i] for name, values in columns.items()}
        probs = rec["probabilities"]
        if isinstance(probs, list) and len(probs) == len(classes):
            rec["probabilities"] = dict(zip(classes, probs, strict=True))
        records.append(rec)
    return records, None


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


class _Inserter:
    """Bulk idempotent inserts through the raw driver (SQLAlchemy Core costs ~4x the CPU here)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        cols = ", ".join(COLUMNS)
        if self.postgres:
            marks = ", ".join("CAST(%s AS JSON)" if c == "probabilities" else "%s" for c in COLUMNS)
        else:
            marks = ", ".join("?" for _ in COLUMNS)
        self.sql = (
            f"INSERT INTO predictions ({cols}) VALUES ({marks}) ON CONFLICT (request_id) DO NOTHING"
        )

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

    def insert(self, records: list[dict[str, Any]]) -> None:
        """Insert ``records`` in one transaction; existing request ids are left as they are."""
        rows = [self._row(r) for r in records]
        with self.engine.begin() as conn:
            conn.exec_driver_sql(self.sql, rows)


class _OutageError(Exception):
    """The database (or the dead-letter file) cannot take records now: retry later."""


def _outage(exc: BaseException) -> str:
    # A LoopmlError's message is written for people (the schema needs `loopml db upgrade`); a
    # driver's names the host and database: its class only.
    return str(exc) if isinstance(exc, LoopmlError) else type(exc).__name__


class _Writer:
    """The database writer: tails one owner's segments, replays dead owners' segments."""

    def __init__(
        self,
        spool_dir: Path,
        owner: str,
        engine: Engine,
        shared: Any,
        *,
        batch_size: int,
        flush_interval_s: float,
        migrate: bool,
        auto_migrate: bool = True,
        parent_pid: int | None = None,
    ) -> None:
        self.dir = spool_dir
        self.owner = owner
        self.engine = engine
        self.shared = shared
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self._needs_migration = migrate
        self._auto_migrate = auto_migrate
        self.parent_pid = parent_pid
        self._inserter: _Inserter | None = None
        self._db_down_logged = False

    # -- main loop -----------------------------------------------------------------------------

    def run(self) -> None:
        """Commit until told to stop (then drain) or until the serving process is gone."""
        next_scan = 0.0
        backoff = 0.0
        while True:
            if self.parent_pid is not None and os.getppid() != self.parent_pid:
                return  # the server died: its lock is free and the next writer replays its spool
            if time.monotonic() >= next_scan:
                with contextlib.suppress(_OutageError):
                    self._replay_orphans()
                next_scan = time.monotonic() + _ORPHAN_SCAN_S
            stopping = bool(self.shared[_STOP])
            try:
                done = self._step(final=stopping)
                backoff = 0.0
            except _OutageError as exc:
                self._down(exc)
                if self.shared[_ABANDON]:
                    return
                backoff = min(_MAX_BACKOFF_S, max(0.1, backoff * 2))
                self._sleep(backoff)
                continue
            if stopping and done == 0 and not self._own_segments():
                self.shared[_DONE] = 1
                return
            if done < self.batch_size:
                self._sleep(self.flush_interval_s)

    def _sleep(self, seconds: float) -> None:
        # Short naps so that a stop is seen quickly; reading an unchanged file is cheap.
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self.shared[_STOP]:
            time.sleep(min(0.05, seconds))

    def _own_segments(self) -> list[Path]:
        return sorted(self.dir.glob(f"{self.owner}-*{SEGMENT}"))

    def _step(self, *, final: bool) -> int:
        """Commit one batch from the oldest own segment; lines consumed (or 1 per segment
        removed). A segment is final once a newer one exists, or when the journal is closed."""
        segments = self._own_segments()
        if not segments:
            return 0
        path = segments[0]
        seq = _seq_of(path)
        offset = int(self.shared[_OFFSET]) if seq == self.shared[_SEQ] else 0
        lines, new_offset = read_lines(path, offset, self.batch_size)
        if lines:
            self._commit(lines, own=True)
            self._advance(seq, new_offset)
            return len(lines)
        if len(segments) == 1 and not final:
            return 0
        size = path.stat().st_size
        if size > offset:  # a last line without its newline: its write never completed
            with path.open("rb") as fh:
                fh.seek(offset)
                self._dead_letter([(fh.read(), "torn record (incomplete write)", 1)])
            self.shared[_DEAD] += 1
        self._advance(seq, size)
        path.unlink(missing_ok=True)
        return 1

    def _advance(self, seq: int, offset: int) -> None:
        # Offset first: the serving process reads (seq, offset) and must never see the new
        # segment number with the old segment's offset.
        if seq != self.shared[_SEQ]:
            self.shared[_OFFSET] = 0
            self.shared[_SEQ] = seq
        self.shared[_OFFSET] = offset

    def _commit(self, lines: list[bytes], *, own: bool) -> None:
        rows, bad = parse(lines)
        refused = self._insert(rows) if rows else []
        bad += refused
        if bad:
            self._dead_letter(bad)
        if self.shared[_DB_DOWN]:
            log.info("prediction log: database reachable again")
            self.shared[_DB_DOWN] = 0
            self._db_down_logged = False
        lost = sum(count for _line, _reason, count in bad)
        if own:
            self.shared[_WRITTEN] += len(rows) - len(refused)
            self.shared[_DEAD] += lost
        else:
            self.shared[_REPLAYED] += len(rows) - len(refused)
            self.shared[_DROPPED] += lost

    def _insert(self, rows: list[dict[str, Any]]) -> list[tuple[bytes, str, int]]:
        """Insert ``rows``; the ones the database refuses, with the reason (outages raise)."""
        try:
            self._insert_all(rows)
            return []
        except Exception as exc:
            if not _is_row_error(exc):
                raise _OutageError(_outage(exc)) from exc
            if len(rows) == 1:
                return [(orjson.dumps(rows[0]), _reason(exc), 1)]
        refused = []
        for row in rows:  # one transaction each: a bad row cannot take the others down
            try:
                self._insert_all([row])
            except Exception as exc:
                if not _is_row_error(exc):
                    raise _OutageError(_outage(exc)) from exc
                refused.append((orjson.dumps(row), _reason(exc), 1))
        return refused

    def _insert_all(self, rows: list[dict[str, Any]]) -> None:
        if self._needs_migration:
            from loopml.store._db import ensure_schema

            # Migrates, or (LOOPML_DB_AUTO_MIGRATE off) raises while the schema is behind: the
            # records stay on the spool until `loopml db upgrade` ran.
            ensure_schema(self.engine, auto_migrate=self._auto_migrate)
            self._needs_migration = False
        if self._inserter is None:
            self._inserter = _Inserter(self.engine)
        self._inserter.insert(rows)

    def _dead_letter(self, bad: list[tuple[bytes, str, int]]) -> None:
        now = time.time()
        data = b"".join(
            orjson.dumps(
                {
                    "ts": now,
                    "owner": self.owner,
                    "reason": reason,
                    "line": line.decode("utf-8", "backslashreplace"),
                }
            )
            + b"\n"
            for line, reason, _count in bad
        )
        try:
            with locked_dead_letter(self.dir) as fd:
                os.write(fd, data)
        except OSError as exc:  # the disk is full: keep the lines in the journal, retry later
            raise _OutageError(f"dead-letter file: {exc.strerror}") from exc
        log.warning("prediction log: %d record(s) refused, kept in %s", len(bad), DEAD_LETTER)

    def _down(self, exc: _OutageError) -> None:
        self.shared[_DB_DOWN] = 1
        if not self._db_down_logged:
            log.warning("prediction log: database unavailable (%s); spooling to %s", exc, self.dir)
            self._db_down_logged = True

    # -- dead processes' segments --------------------------------------------------------------

    def _orphan_owners(self) -> Iterator[str]:
        owners = {p.name.rsplit("-", 1)[0] for p in self.dir.glob(f"*{SEGMENT}")}
        owners |= {p.name.removesuffix(LOCK) for p in self.dir.glob(f"*{LOCK}")}
        owners.discard(self.owner)
        yield from sorted(owners)

    def _replay_orphans(self) -> None:
        for owner in self._orphan_owners():
            lock_path = self.dir / f"{owner}{LOCK}"
            fd = _try_lock(lock_path)
            if fd is None:
                continue  # its process is alive
            try:
                self._replay_owner(owner)
                lock_path.unlink(missing_ok=True)
            except _OutageError as exc:
                self._down(exc)
                raise
            finally:
                os.close(fd)

    def _replay_owner(self, owner: str) -> None:
        for path in sorted(self.dir.glob(f"{owner}-*{SEGMENT}")):
            offset = 0
            while True:
                lines, offset = read_lines(path, offset, self.batch_size)
                if not lines:
                    break
                self._commit(lines, own=False)
            with contextlib.suppress(FileNotFoundError), path.open("rb") as fh:
                fh.seek(offset)
                tail = fh.read()
                if tail:
                    self._dead_letter([(tail, "torn record (incomplete write)", 1)])
                    self.shared[_DROPPED] += 1
            path.unlink(missing_ok=True)
        log.info("prediction log: replayed the spool of %s", owner)


def _reason(exc: BaseException) -> str:
    detail = getattr(exc, "orig", None) or exc
    return f"{type(detail).__name__}: {str(detail).splitlines()[0] if str(detail) else ''}"[:300]


def _writer_main(
    spool_dir: str,
    owner: str,
    db_url: str,
    shared: Any,
    batch_size: int,
    flush_interval_s: float,
    migrate: bool,
    auto_migrate: bool,
    parent_pid: int,
) -> None:
    """Entry point of the writer process."""
    from loopml.store._db import make_engine

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    engine = make_engine(db_url)
    try:
        _Writer(
            Path(spool_dir),
            owner,
            engine,
            shared,
            batch_size=batch_size,
            flush_interval_s=flush_interval_s,
            migrate=migrate,
            auto_migrate=auto_migrate,
            parent_pid=parent_pid,
        ).run()
    finally:
        engine.dispose()


class PredictionLog:
    """Journal + writer process: ``record`` on the serving path, ``drain`` at shutdown."""

    def __init__(
        self,
        spool_dir: Path,
        engine: Engine,
        metrics: Metrics,
        *,
        batch_size: int,
        flush_interval_s: float,
        migrate: bool = False,
        auto_migrate: bool = True,
        fsync: bool = False,
    ) -> None:
        self.dir = spool_dir
        self.engine = engine
        self.metrics = metrics
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.journal = Journal(spool_dir, fsync=fsync)
        self._migrate = migrate
        self._auto_migrate = auto_migrate
        ctx = multiprocessing.get_context("spawn")  # fork would share the owner lock's fd
        self._ctx = ctx
        self.shared: Any = ctx.RawArray("q", _SLOTS)
        self.shared[_SEQ] = self.journal.seq
        self._process: Any = None
        self._count_lock = threading.Lock()
        self._stop = threading.Event()
        self._sync_thread = threading.Thread(target=self._sync, name="loopml-predlog", daemon=True)
        self.served = 0
        self.written = 0
        self.dead_letter = 0
        self.replayed = 0
        self.replay_dead_letter = 0
        self.dropped = 0
        self.spooled = 0
        self._spooled_mark = 0
        self._seen = [0] * _SLOTS
        # uncommitted request ids -> (label, classes); entries in journal order for pruning
        self._index: dict[str, tuple[str, tuple[str, ...], str]] = {}
        self._pending: deque[tuple[int, int, list[str]]] = deque()
        self._unindexed_until: tuple[int, int] | None = None

    # -- serving path --------------------------------------------------------------------------

    def record(
        self,
        data: bytes,
        entries: Sequence[tuple[str, str]],
        classes: Sequence[str],
        model: str = "",
    ) -> None:
        """Journal the records of one batch (one write); ``entries`` are their (request id,
        label), answered by ``model``. Raises ``JournalError`` when the journal cannot take them
        (nothing is kept)."""
        count = len(entries)
        try:
            at = self.journal.append(data)
        except OSError as exc:
            log.error("prediction journal write failed (%s): batch refused", exc.strerror or exc)
            with self._count_lock:
                self.dropped += count
            self.metrics.predlog_dropped.inc(count)
            raise JournalError(
                "the prediction log cannot be written (disk full or failing); retry later"
            ) from exc
        with self._count_lock:
            self.served += count
            if self.shared[_DB_DOWN]:
                self._count_spooled()
            if len(self._index) + count <= INDEX_LIMIT:
                names = tuple(classes)
                for rid, label in entries:
                    self._index[rid] = (label, names, model)
                self._pending.append((at[0], at[1], [rid for rid, _ in entries]))
            else:
                self._unindexed_until = at
        self.metrics.predlog_served.inc(count)
        self.metrics.predlog_backlog.inc(count)

    def pending(self, ids: Iterable[str]) -> tuple[dict[str, tuple[str, list[str], str]], bool]:
        """Uncommitted predictions among ``ids`` as id -> (label, classes, model), and whether some
        uncommitted records are not indexed (the index is full: an id may be among them)."""
        with self._count_lock:
            self._prune()
            found = {
                rid: (hit[0], list(hit[1]), hit[2]) for rid in ids if (hit := self._index.get(rid))
            }
            return found, self._unindexed_until is not None

    def others_may_be_pending(self) -> bool:
        """Whether another process (another worker, or a dead one being replayed) has journal
        segments here: records it answered may not be in the database yet, and this process's
        index does not know them."""
        own = f"{self.journal.owner}-"
        return any(not p.name.startswith(own) for p in self.dir.glob(f"*{SEGMENT}"))

    @property
    def backlog(self) -> int:
        """Records served by this process and neither committed nor dead-lettered."""
        return self.served - self.written - self.dead_letter

    @property
    def db_ok(self) -> bool:
        """Whether the writer's last database attempt succeeded."""
        return not self.shared[_DB_DOWN]

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer process (it replays leftover segments of dead processes first)."""
        self._spawn()
        self._sync_thread.start()

    def _spawn(self) -> None:
        self._process = self._ctx.Process(
            target=_writer_main,
            args=(
                str(self.dir),
                self.journal.owner,
                self.engine.url.render_as_string(hide_password=False),
                self.shared,
                self.batch_size,
                self.flush_interval_s,
                self._migrate,
                self._auto_migrate,
                os.getpid(),
            ),
            name="loopml-predlog-writer",
            daemon=True,
        )
        self._process.start()

    def flush(self, timeout: float) -> bool:
        """Wait until every record served so far is committed or refused; False on timeout."""
        target = self.served
        deadline = time.monotonic() + timeout
        while self.written + self.dead_letter < target:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def drain(self, timeout: float) -> bool:
        """Stop, commit what is left (up to ``timeout``) and remove committed segments."""
        self.journal.close()
        self.shared[_STOP] = 1
        proc = self._process
        if proc is not None:
            proc.join(timeout)
            if proc.is_alive():
                self.shared[_ABANDON] = 1
                proc.join(_MAX_BACKOFF_S + 6)  # an insert in flight ends at the DB timeout
            if proc.is_alive():
                proc.kill()
                proc.join()
        self._stop.set()
        if self._sync_thread.ident is not None:
            self._sync_thread.join()
        self._pull()
        if not self.shared[_DONE] or self.backlog:
            log.warning(
                "prediction log: %d record(s) left on the spool for the next start", self.backlog
            )
            self.journal.release(delete_lock=False)
            return False
        self.journal.release(delete_lock=not self.journal.segments())
        return True

    def status(self) -> dict[str, Any]:
        """Counters for ``/v1/status``."""
        return {
            "served": self.served,
            "written": self.written,
            "dead_letter": self.dead_letter,
            "backlog": self.backlog,
            "spooled": self.spooled,
            "dropped": self.dropped,
            "replayed": self.replayed,
            "replay_dead_letter": self.replay_dead_letter,
            "database_ok": self.db_ok,
            "segments": len(self.journal.segments()),
        }

    # -- following the writer ------------------------------------------------------------------

    def _sync(self) -> None:
        while not self._stop.wait(_SYNC_S):
            self._pull()
            proc = self._process
            if proc is not None and not proc.is_alive() and not self.shared[_STOP]:
                log.error(
                    "prediction log: the writer process ended (%s); restarting it", proc.exitcode
                )
                self._spawn()  # it resumes at the committed offset shared with it

    def _pull(self) -> None:
        """Bring counters and metrics up to the writer's, and forget committed ids."""
        with self._count_lock:
            now = [int(self.shared[i]) for i in range(_SLOTS)]
            delta = [a - b for a, b in zip(now, self._seen, strict=True)]
            self._seen = now
            self.written += delta[_WRITTEN]
            self.dead_letter += delta[_DEAD]
            self.replayed += delta[_REPLAYED]
            self.replay_dead_letter += delta[_DROPPED]
            if now[_DB_DOWN]:
                self._count_spooled()
            self._prune()
        if delta[_WRITTEN]:
            self.metrics.predlog_written.inc(delta[_WRITTEN])
        if delta[_WRITTEN] + delta[_DEAD]:
            self.metrics.predlog_backlog.dec(delta[_WRITTEN] + delta[_DEAD])
        if delta[_DEAD] + delta[_DROPPED]:
            self.metrics.predlog_dead_letter.inc(delta[_DEAD] + delta[_DROPPED])
        if delta[_REPLAYED]:
            self.metrics.predlog_replayed.inc(delta[_REPLAYED])

    def _prune(self) -> None:
        # Caller holds _count_lock. Offset is read before the segment number (the writer stores
        # them in the other order), so a stale pair is only ever behind, never ahead.
        offset = int(self.shared[_OFFSET])
        seq = int(self.shared[_SEQ])
        if int(self.shared[_OFFSET]) < offset:
            offset = 0
        position = (seq, offset)
        while self._pending and self._pending[0][:2] <= position:
            for rid in self._pending.popleft()[2]:
                self._index.pop(rid, None)
        if self._unindexed_until is not None and self._unindexed_until <= position:
            self._unindexed_until = None

    def _count_spooled(self) -> None:
        # Caller holds _count_lock. Every record not committed while the DB is down counts once.
        start = max(self._spooled_mark, self.written + self.dead_letter)
        if self.served > start:
            self.spooled += self.served - start
            self.metrics.predlog_spooled.inc(self.served - start)
        self._spooled_mark = self.served
