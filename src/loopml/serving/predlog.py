"""The prediction log: a per-process append-only journal on disk and a batched database writer.

Every model batch appends its records to this process's journal segment with one ``write()``
before any response of the batch is released: once a client has an answer, its record is in the OS
and survives ``kill -9`` of the server. A background thread tails the segments and inserts records
in batches with ``INSERT .. ON CONFLICT (request_id) DO NOTHING`` (so replays are idempotent), then
deletes segments whose records are all committed. While the database is slow or down, records stay
in the segments (the spool) and the writer retries with back-off.

Each process holds an ``flock`` on ``<owner>.lock`` in the spool folder for its life. A segment
whose owner's lock is free belongs to a process that died (or stopped before it could drain):
any live writer replays it and deletes it.

Counters: ``served`` = records journaled, ``written`` = own records committed, ``backlog`` =
served - written; records of other processes are counted as ``replayed``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine

from loopml.serving.metrics import Metrics
from loopml.store.models import PREDICTION_COLUMNS

__all__ = ["Journal", "PredictionLog", "find_in_spool"]

log = logging.getLogger("loopml.serving.predlog")

SEGMENT = ".seg"
LOCK = ".lock"
ROTATE_BYTES = 4 << 20
_ORPHAN_SCAN_S = 5.0
_MAX_BACKOFF_S = 5.0


@dataclass
class Segment:
    """One journal file and how many of its bytes are committed to the database."""

    path: Path
    offset: int = 0
    closed: bool = False


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive flock on ``path``, or None when someone else holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


class Journal:
    """This process's append-only segments in the spool folder."""

    def __init__(self, spool_dir: Path) -> None:
        spool_dir.mkdir(parents=True, exist_ok=True)
        self.dir = spool_dir
        self.owner = f"j{os.getpid()}-{secrets.token_hex(4)}"
        self.lock_path = spool_dir / f"{self.owner}{LOCK}"
        fd = _try_lock(self.lock_path)
        if fd is None:  # a fresh random name: cannot be held by anyone else
            raise OSError(f"cannot lock {self.lock_path}")
        self._lock_fd = fd
        self._mutex = threading.Lock()
        self._seq = 0
        self.segments: deque[Segment] = deque()
        self._fd = -1
        self._open_next()

    def _open_next(self) -> None:
        self._seq += 1
        path = self.dir / f"{self.owner}-{self._seq:06d}{SEGMENT}"
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.segments.append(Segment(path))

    def append(self, data: bytes) -> None:
        """Append whole records with one ``write()`` (loops only on a short write)."""
        with self._mutex:
            if self._fd < 0:
                raise OSError("the journal is closed")
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]

    def rotate(self) -> None:
        """Close the active segment and start a new one."""
        with self._mutex:
            if self._fd < 0:
                return
            os.close(self._fd)
            self.segments[-1].closed = True
            self._open_next()

    def close(self) -> None:
        """Close the active segment; no more appends."""
        with self._mutex:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
                self.segments[-1].closed = True

    def release(self, *, delete_lock: bool) -> None:
        """Give up the owner lock (delete it first when every segment is gone)."""
        if delete_lock:
            self.lock_path.unlink(missing_ok=True)
        os.close(self._lock_fd)


def read_lines(path: Path, offset: int, limit: int) -> tuple[list[bytes], int]:
    """Up to ``limit`` complete lines of ``path`` from ``offset`` and the offset after them."""
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            chunk = fh.read(max(limit, 1) * 4096)
    except FileNotFoundError:
        return [], offset
    end = chunk.rfind(b"\n")
    if end < 0:
        return [], offset
    lines = chunk[: end + 1].split(b"\n")[:-1]
    if len(lines) > limit:
        lines = lines[:limit]
    consumed = sum(len(line) + 1 for line in lines)
    return lines, offset + consumed


COLUMNS = PREDICTION_COLUMNS  # one journal record: every column of ``predictions``


def parse(lines: Iterable[bytes]) -> tuple[list[dict[str, Any]], int]:
    """Journal records, and how many lines were torn or corrupt."""
    rows: list[dict[str, Any]] = []
    bad = 0
    for line in lines:
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            bad += 1
            continue
        if isinstance(rec, dict) and all(c in rec for c in COLUMNS):
            rows.append(rec)
        else:
            bad += 1
    return rows, bad


def _sqlite_ts(ts: float) -> str:
    # SQLAlchemy's storage format for DateTime on SQLite (UTC; it keeps no offset).
    micro = round((ts % 1) * 1_000_000) % 1_000_000
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(int(ts))) + f".{micro:06d}"


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


def find_in_spool(spool_dir: Path, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Records of ``ids`` still in any journal segment (served but not yet committed)."""
    wanted = {i: f'{{"request_id":"{i}"'.encode() for i in ids}
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(spool_dir.glob(f"*{SEGMENT}")):
        if not wanted:
            break
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue  # committed and deleted meanwhile
        for rid, needle in list(wanted.items()):
            start = data.find(needle)
            if start < 0:
                continue
            end = data.find(b"\n", start)
            if end < 0:
                continue
            with contextlib.suppress(orjson.JSONDecodeError):
                found[rid] = orjson.loads(data[start:end])
                del wanted[rid]
    return found


class PredictionLog:
    """Journal + background writer: ``record`` on the serving path, ``drain`` at shutdown."""

    def __init__(
        self,
        spool_dir: Path,
        engine: Engine,
        metrics: Metrics,
        *,
        batch_size: int,
        flush_interval_s: float,
        migrate: bool = False,
    ) -> None:
        self.dir = spool_dir
        self.engine = engine
        self.metrics = metrics
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.journal = Journal(spool_dir)
        self._needs_migration = migrate
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._abandon = threading.Event()
        self._count_lock = threading.Lock()
        self.served = 0
        self.written = 0
        self.replayed = 0
        self.dropped = 0
        self.spooled = 0
        self._spooled_mark = 0
        self.db_ok = True
        self._inserter: _Inserter | None = None
        self._thread = threading.Thread(target=self._run, name="loopml-predlog", daemon=True)

    # -- serving path --------------------------------------------------------------------------

    def record(self, data: bytes, count: int) -> bool:
        """Journal ``count`` records (one write); False if the spool cannot be written."""
        try:
            self.journal.append(data)
        except OSError as exc:
            log.error(
                "prediction journal write failed (%s): %d record(s) dropped", exc.strerror, count
            )
            self.metrics.predlog_dropped.inc(count)
            with self._count_lock:
                self.dropped += count
            return False
        with self._count_lock:
            self.served += count
            backlog = self.served - self.written
            if not self.db_ok:
                self._count_spooled()
        self.metrics.predlog_served.inc(count)
        self.metrics.predlog_backlog.inc(count)
        if backlog >= self.batch_size:
            self._wake.set()
        return True

    @property
    def backlog(self) -> int:
        """Records served by this process and not yet committed."""
        return self.served - self.written

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread (it replays leftover segments of dead processes first)."""
        self._thread.start()

    def flush(self, timeout: float) -> bool:
        """Wait until every record served so far is committed; False on timeout."""
        target = self.served
        deadline = time.monotonic() + timeout
        while self.written < target:
            if time.monotonic() > deadline:
                return False
            self._wake.set()
            time.sleep(0.01)
        return True

    def drain(self, timeout: float) -> bool:
        """Stop, commit what is left (up to ``timeout``) and remove committed segments."""
        self._stop.set()
        self._wake.set()
        if self._thread.ident is not None:
            self._thread.join(timeout)
        if self._thread.is_alive():
            self._abandon.set()
            self._wake.set()
            self._thread.join(_MAX_BACKOFF_S + 6)  # an insert in flight ends at the DB timeout
        self.journal.close()
        if self._thread.is_alive() or self.backlog:
            log.warning(
                "prediction log: %d record(s) left on the spool for the next start", self.backlog
            )
            self.journal.release(delete_lock=False)
            return False
        self._delete_consumed()
        self.journal.release(delete_lock=not self.journal.segments)
        return True

    def status(self) -> dict[str, Any]:
        """Counters for ``/v1/status``."""
        return {
            "served": self.served,
            "written": self.written,
            "backlog": self.backlog,
            "spooled": self.spooled,
            "dropped": self.dropped,
            "replayed": self.replayed,
            "database_ok": self.db_ok,
            "segments": len(self.journal.segments),
        }

    # -- writer thread -------------------------------------------------------------------------

    def _run(self) -> None:
        next_scan = 0.0
        backoff = 0.0
        while True:
            if time.monotonic() >= next_scan:
                self._replay_orphans()
                next_scan = time.monotonic() + _ORPHAN_SCAN_S
            try:
                done = self._step()
                backoff = 0.0
            except Exception as exc:
                self._on_db_error(exc)
                backoff = min(_MAX_BACKOFF_S, max(0.1, backoff * 2))
                if self._abandon.is_set():
                    return
                self._wake.wait(backoff)
                self._wake.clear()
                continue
            if self._stop.is_set() and self.backlog == 0 and done == 0:
                return
            if done < self.batch_size:
                self._wake.wait(self.flush_interval_s)
                self._wake.clear()

    def _step(self) -> int:
        """Commit one batch from this process's oldest segment; the number of lines consumed."""
        self._maybe_rotate()
        seg = self.journal.segments[0]
        lines, new_offset = read_lines(seg.path, seg.offset, self.batch_size)
        if lines:
            rows, bad = parse(lines)
            if rows:
                self._insert(rows)
            seg.offset = new_offset
            self._committed(len(rows), bad)
        elif seg.closed and len(self.journal.segments) > 1:
            seg.path.unlink(missing_ok=True)
            self.journal.segments.popleft()
        return len(lines)

    def _maybe_rotate(self) -> None:
        active = self.journal.segments[-1]
        with contextlib.suppress(FileNotFoundError):
            if active.path.stat().st_size >= ROTATE_BYTES:
                self.journal.rotate()

    def _committed(self, count: int, bad: int) -> None:
        with self._count_lock:
            self.written += count
            self.dropped += bad
            self.written += bad  # a corrupt line can never be written: take it out of the backlog
            if not self.db_ok:
                log.info("prediction log: database reachable again")
            self.db_ok = True
        self.metrics.predlog_written.inc(count)
        self.metrics.predlog_backlog.dec(count + bad)
        if bad:
            log.warning("prediction log: %d corrupt journal line(s) skipped", bad)
            self.metrics.predlog_dropped.inc(bad)

    def _count_spooled(self) -> None:
        # Caller holds _count_lock. Every record not committed while the DB is down counts once.
        start = max(self._spooled_mark, self.written)
        if self.served > start:
            self.spooled += self.served - start
            self.metrics.predlog_spooled.inc(self.served - start)
        self._spooled_mark = self.served

    def _on_db_error(self, exc: Exception) -> None:
        with self._count_lock:
            if self.db_ok:
                log.warning(
                    "prediction log: database unavailable (%s); spooling to %s",
                    type(exc).__name__,
                    self.dir,
                )
            self.db_ok = False
            self._count_spooled()

    def _insert(self, rows: list[dict[str, Any]]) -> None:
        if self._needs_migration:
            from loopml.store._db import migrate

            migrate(self.engine)
            self._needs_migration = False
        if self._inserter is None:
            self._inserter = _Inserter(self.engine)
        self._inserter.insert(rows)

    def _delete_consumed(self) -> None:
        while self.journal.segments:
            seg = self.journal.segments[0]
            if not seg.closed:
                break
            seg.path.unlink(missing_ok=True)
            self.journal.segments.popleft()

    # -- dead processes' segments --------------------------------------------------------------

    def _orphan_owners(self) -> Iterator[str]:
        owners = {p.name.rsplit("-", 1)[0] for p in self.dir.glob(f"*{SEGMENT}")}
        owners |= {p.name.removesuffix(LOCK) for p in self.dir.glob(f"*{LOCK}")}
        owners.discard(self.journal.owner)
        yield from sorted(owners)

    def _replay_orphans(self) -> None:
        for owner in self._orphan_owners():
            lock_path = self.dir / f"{owner}{LOCK}"
            fd = _try_lock(lock_path)
            if fd is None:
                continue  # its process is alive
            try:
                if self._replay_owner(owner):
                    lock_path.unlink(missing_ok=True)
            except Exception as exc:
                self._on_db_error(exc)
                return
            finally:
                os.close(fd)

    def _replay_owner(self, owner: str) -> bool:
        for path in sorted(self.dir.glob(f"{owner}-*{SEGMENT}")):
            offset = 0
            while True:
                lines, offset = read_lines(path, offset, self.batch_size)
                if not lines:
                    break
                rows, bad = parse(lines)
                if rows:
                    self._insert(rows)
                self._replayed(len(rows), bad)
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_size > offset:
                    self._replayed(0, 1)  # a torn last record: its write never completed
            path.unlink(missing_ok=True)
        log.info("prediction log: replayed the spool of %s", owner)
        return True

    def _replayed(self, count: int, bad: int) -> None:
        with self._count_lock:
            self.replayed += count
            self.dropped += bad
        self.metrics.predlog_replayed.inc(count)
        if bad:
            self.metrics.predlog_dropped.inc(bad)
