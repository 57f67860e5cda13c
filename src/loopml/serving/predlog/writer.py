"""The database writer process: it tails one owner's journal segments into ``predictions``.

It runs in its own process (spawned per server process) so that parsing and inserts never compete
with serving for the GIL, and it replays the segments of processes that died. It talks to the
serving process through an array of int64 ``SLOTS`` (one writer, so no lock): counters, the
committed position and the stop flags.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine

from loopml.serving.predlog.inserter import Inserter, OutageError
from loopml.serving.predlog.journal import LOCK, SEGMENT, read_lines, seq_of, try_lock
from loopml.serving.predlog.records import parse
from loopml.store.deadletter import DEAD_LETTER, locked_dead_letter

log = logging.getLogger("loopml.serving.predlog")

_ORPHAN_SCAN_S = 5.0
MAX_BACKOFF_S = 5.0

# Slots of the array shared with the serving process.
WRITTEN, DEAD, REPLAYED, DROPPED, DB_DOWN, SEQ, OFFSET, STOP, ABANDON, DONE = range(10)
SLOTS = 10


class Writer:
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
        auto_migrate: bool,
        parent_pid: int,
    ) -> None:
        self.dir = spool_dir
        self.owner = owner
        self.shared = shared
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.parent_pid = parent_pid
        self.inserter = Inserter(engine, migrate=migrate, auto_migrate=auto_migrate)
        self._db_down_logged = False

    # -- main loop -----------------------------------------------------------------------------

    def run(self) -> None:
        """Commit until told to stop (then drain) or until the serving process is gone."""
        next_scan = 0.0
        backoff = 0.0
        while True:
            if os.getppid() != self.parent_pid:
                return  # the server died: its lock is free and the next writer replays its spool
            if time.monotonic() >= next_scan:
                with contextlib.suppress(OutageError):
                    self._replay_orphans()
                next_scan = time.monotonic() + _ORPHAN_SCAN_S
            stopping = bool(self.shared[STOP])
            try:
                done = self._step(final=stopping)
                backoff = 0.0
            except OutageError as exc:
                self._down(exc)
                if self.shared[ABANDON]:
                    return
                backoff = min(MAX_BACKOFF_S, max(0.1, backoff * 2))
                self._sleep(backoff)
                continue
            if stopping and done == 0 and not self._own_segments():
                self.shared[DONE] = 1
                return
            if done < self.batch_size:
                self._sleep(self.flush_interval_s)

    def _sleep(self, seconds: float) -> None:
        # Short naps so that a stop is seen quickly; reading an unchanged file is cheap.
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self.shared[STOP]:
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
        seq = seq_of(path)
        offset = int(self.shared[OFFSET]) if seq == self.shared[SEQ] else 0
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
            self.shared[DEAD] += 1
        self._advance(seq, size)
        path.unlink(missing_ok=True)
        return 1

    def _advance(self, seq: int, offset: int) -> None:
        # Offset first: the serving process reads (seq, offset) and must never see the new
        # segment number with the old segment's offset.
        if seq != self.shared[SEQ]:
            self.shared[OFFSET] = 0
            self.shared[SEQ] = seq
        self.shared[OFFSET] = offset

    def _commit(self, lines: list[bytes], *, own: bool) -> None:
        rows, bad = parse(lines)
        refused = self.inserter.insert(rows) if rows else []
        bad += refused
        if bad:
            self._dead_letter(bad)
        if self.shared[DB_DOWN]:
            log.info("prediction log: database reachable again")
            self.shared[DB_DOWN] = 0
            self._db_down_logged = False
        lost = sum(count for _line, _reason, count in bad)
        if own:
            self.shared[WRITTEN] += len(rows) - len(refused)
            self.shared[DEAD] += lost
        else:
            self.shared[REPLAYED] += len(rows) - len(refused)
            self.shared[DROPPED] += lost

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
            raise OutageError(f"dead-letter file: {exc.strerror}") from exc
        log.warning("prediction log: %d record(s) refused, kept in %s", len(bad), DEAD_LETTER)

    def _down(self, exc: OutageError) -> None:
        self.shared[DB_DOWN] = 1
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
            fd = try_lock(lock_path)
            if fd is None:
                continue  # its process is alive
            try:
                self._replay_owner(owner)
                lock_path.unlink(missing_ok=True)
            except OutageError as exc:
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
                    self.shared[DROPPED] += 1
            path.unlink(missing_ok=True)
        log.info("prediction log: replayed the spool of %s", owner)


def writer_main(
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
        Writer(
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
