"""What the server holds: :class:`PredictionLog`, the journal plus its writer process.

``record`` journals a batch on the serving path; a thread follows the writer's shared counters
into this process's counters and metrics, forgets committed ids from the index that the feedback
store reads, and restarts the writer should it end.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from loopml.errors import JournalError
from loopml.serving.metrics import Metrics
from loopml.serving.predlog.journal import SEGMENT, Journal
from loopml.serving.predlog.writer import (
    ABANDON,
    DB_DOWN,
    DEAD,
    DONE,
    DROPPED,
    MAX_BACKOFF_S,
    OFFSET,
    REPLAYED,
    SEQ,
    SLOTS,
    STOP,
    WRITTEN,
    writer_main,
)

log = logging.getLogger("loopml.serving.predlog")

INDEX_LIMIT = 100_000  # uncommitted ids kept for feedback lookups (~25 MB); beyond: "retry later"
_SYNC_S = 0.05


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
        self.shared: Any = ctx.RawArray("q", SLOTS)
        self.shared[SEQ] = self.journal.seq
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
        self._seen = [0] * SLOTS
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
        label). Raises ``JournalError`` when the journal cannot take them (nothing is kept)."""
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
            if self.shared[DB_DOWN]:
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
        """Uncommitted predictions among ``ids`` as id -> (label, classes), and whether some
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
        return not self.shared[DB_DOWN]

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer process (it replays leftover segments of dead processes first)."""
        self._spawn()
        self._sync_thread.start()

    def _spawn(self) -> None:
        self._process = self._ctx.Process(
            target=writer_main,
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
        self.shared[STOP] = 1
        proc = self._process
        if proc is not None:
            proc.join(timeout)
            if proc.is_alive():
                self.shared[ABANDON] = 1
                proc.join(MAX_BACKOFF_S + 6)  # an insert in flight ends at the DB timeout
            if proc.is_alive():
                proc.kill()
                proc.join()
        self._stop.set()
        if self._sync_thread.ident is not None:
            self._sync_thread.join()
        self._pull()
        if not self.shared[DONE] or self.backlog:
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
            if proc is not None and not proc.is_alive() and not self.shared[STOP]:
                log.error(
                    "prediction log: the writer process ended (%s); restarting it", proc.exitcode
                )
                self._spawn()  # it resumes at the committed offset shared with it

    def _pull(self) -> None:
        """Bring counters and metrics up to the writer's, and forget committed ids."""
        with self._count_lock:
            now = [int(self.shared[i]) for i in range(SLOTS)]
            delta = [a - b for a, b in zip(now, self._seen, strict=True)]
            self._seen = now
            self.written += delta[WRITTEN]
            self.dead_letter += delta[DEAD]
            self.replayed += delta[REPLAYED]
            self.replay_dead_letter += delta[DROPPED]
            if now[DB_DOWN]:
                self._count_spooled()
            self._prune()
        if delta[WRITTEN]:
            self.metrics.predlog_written.inc(delta[WRITTEN])
        if delta[WRITTEN] + delta[DEAD]:
            self.metrics.predlog_backlog.dec(delta[WRITTEN] + delta[DEAD])
        if delta[DEAD] + delta[DROPPED]:
            self.metrics.predlog_dead_letter.inc(delta[DEAD] + delta[DROPPED])
        if delta[REPLAYED]:
            self.metrics.predlog_replayed.inc(delta[REPLAYED])

    def _prune(self) -> None:
        # Caller holds _count_lock. Offset is read before the segment number (the writer stores
        # them in the other order), so a stale pair is only ever behind, never ahead.
        offset = int(self.shared[OFFSET])
        seq = int(self.shared[SEQ])
        if int(self.shared[OFFSET]) < offset:
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
