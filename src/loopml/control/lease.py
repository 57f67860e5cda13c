"""One controller per model at a time: a lease row in the loopml database.

The row (``controller_lease``, one per model) names its holder and when it expires. A controller
takes the lease when there is no row, when the row names itself, or when it has expired; otherwise
it does nothing (``ControllerBusyError``, exit 3 for ``loopml controller --once``; the loop waits
and polls). Taking it over adds one to ``generation`` in a compare-and-set update, so two
controllers racing for an expired lease cannot both win, on SQLite and PostgreSQL alike (no
advisory lock: one mechanism for both stores).

The holder renews the row before each side-effecting step and, during a tick, from a background
thread every third of the lease. A renewal is an update of the row *with the holder's
generation*: once another controller took over, it matches nothing and raises
``LeaseLostError``, so a controller that hung past its expiry (stopped, swapped out, cut off from
the database) cannot act again after it wakes up. The row also records the step in progress
(``retrain``): a holder killed mid-step leaves it for the next holder to recover.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, insert, update
from sqlalchemy.exc import IntegrityError

from loopml.errors import ControllerBusyError, LeaseLostError, StoreError
from loopml.store import ControllerLease, Store

__all__ = ["Lease", "LeaseState", "holder_id"]

log = logging.getLogger(__name__)

# One id per process: Controller objects of one process are the same holder.
_PROCESS_TOKEN = uuid.uuid4().hex[:8]
_KEEP = object()


def holder_id() -> str:
    """This process as a lease holder: host (the pod's name in Kubernetes), PID and a token."""
    return f"{socket.gethostname()}:{os.getpid()}:{_PROCESS_TOKEN}"


@dataclass(frozen=True)
class LeaseState:
    """What the lease row said when it was read."""

    name: str
    holder: str
    generation: int
    acquired_at: datetime
    renewed_at: datetime
    expires_at: datetime
    step: str | None
    step_started_at: datetime | None

    def describe(self, now: datetime) -> str:
        """Who holds it and for how long, for messages."""
        left = (self.expires_at - now).total_seconds()
        renewed = (now - self.renewed_at).total_seconds()
        return (
            f"{self.holder} (renewed {renewed:.0f} s ago, expires {self.expires_at:%H:%M:%S} UTC,"
            f" in {max(left, 0):.0f} s)"
        )


def _state(row: ControllerLease) -> LeaseState:
    return LeaseState(
        row.name,
        row.holder,
        row.generation,
        row.acquired_at,
        row.renewed_at,
        row.expires_at,
        row.step,
        row.step_started_at,
    )


class Lease:
    """The lease of one model's controller, as seen by one holder."""

    def __init__(
        self, store: Store, name: str, *, duration_s: float, holder: str | None = None
    ) -> None:
        self.store = store
        self.name = name
        self.duration = timedelta(seconds=duration_s)
        self.holder = holder or holder_id()
        #: the generation this holder took; None while it does not hold the lease
        self.generation: int | None = None
        self.renewed_at: datetime | None = None

    @property
    def held(self) -> bool:
        """Whether this holder took the lease and has not lost or released it since."""
        return self.generation is not None

    def read(self) -> LeaseState | None:
        """The row as it is now, or None when no controller ever held this lease."""
        with self.store.session() as session:
            row = session.get(ControllerLease, self.name)
            return _state(row) if row is not None else None

    def _write(self, statement: Any) -> int:
        with self.store.session() as session:
            result = cast(CursorResult[Any], session.execute(statement))
            return int(result.rowcount)

    def _insert(self, now: datetime) -> bool:
        values = {
            "name": self.name,
            "holder": self.holder,
            "generation": 1,
            "acquired_at": now,
            "renewed_at": now,
            "expires_at": now + self.duration,
        }
        try:
            self._write(insert(ControllerLease).values(**values))
        except StoreError as exc:
            if isinstance(exc.__cause__, IntegrityError):
                return False  # another controller inserted it first
            raise
        return True

    def _take(self, seen: LeaseState, now: datetime) -> bool:
        """Compare-and-set: the row moves to this holder only if nobody moved it since ``seen``."""
        statement = (
            update(ControllerLease)
            .where(ControllerLease.name == self.name)
            .where(ControllerLease.generation == seen.generation)
            .values(
                holder=self.holder,
                generation=seen.generation + 1,
                acquired_at=now,
                renewed_at=now,
                expires_at=now + self.duration,
                step=None,
                step_started_at=None,
            )
        )
        return self._write(statement) == 1

    def acquire(self, *, now: datetime | None = None) -> LeaseState | None:
        """Take the lease; what another holder left behind when it is taken over (for recovery),
        else None. ``ControllerBusyError`` naming the holder while another holds it."""
        now = now or datetime.now(UTC)
        for _ in range(3):
            seen = self.read()
            if seen is None:
                if self._insert(now):
                    self.generation, self.renewed_at = 1, now
                    return None
                continue
            mine = seen.holder == self.holder
            if not mine and seen.expires_at > now:
                raise ControllerBusyError(
                    f"another controller holds the lease of model {self.name!r}: "
                    f"{seen.describe(now)}; this one did nothing",
                    holder=seen.holder,
                )
            if self._take(seen, now):
                self.generation, self.renewed_at = seen.generation + 1, now
                return None if mine else seen
        raise ControllerBusyError(
            f"the lease of model {self.name!r} changed hands while this controller tried to "
            "take it; this one did nothing"
        )

    def renew(self, *, step: Any = _KEEP, now: datetime | None = None) -> None:
        """Extend the lease (and record ``step``, None when it ended): the fence before a
        side-effecting step. ``LeaseLostError`` when another controller took it over."""
        if self.generation is None:
            raise LeaseLostError(f"this controller does not hold the lease of {self.name!r}")
        now = now or datetime.now(UTC)
        values: dict[str, Any] = {"renewed_at": now, "expires_at": now + self.duration}
        if step is not _KEEP:
            values |= {"step": step, "step_started_at": now if step else None}
        statement = (
            update(ControllerLease)
            .where(ControllerLease.name == self.name)
            .where(ControllerLease.holder == self.holder)
            .where(ControllerLease.generation == self.generation)
            .values(**values)
        )
        if self._write(statement) != 1:
            self.generation = None
            current = self.read()
            who = current.describe(now) if current is not None else "nobody"
            raise LeaseLostError(
                f"this controller lost the lease of model {self.name!r} (it was away past its"
                f" expiry); held now by {who}: it stops acting"
            )
        self.renewed_at = now

    def renew_if_due(self) -> None:
        """Renew when a third of the lease has passed since the last renewal."""
        if self.renewed_at is None or not self.held:
            return
        if datetime.now(UTC) - self.renewed_at >= self.duration / 3:
            self.renew()

    def release(self) -> None:
        """Let the next controller take over at once (best effort: expiry does it otherwise)."""
        if self.generation is None:
            return
        now = datetime.now(UTC)
        statement = (
            update(ControllerLease)
            .where(ControllerLease.name == self.name)
            .where(ControllerLease.holder == self.holder)
            .where(ControllerLease.generation == self.generation)
            .values(expires_at=now, renewed_at=now, step=None, step_started_at=None)
        )
        self.generation = None
        try:
            self._write(statement)
        except StoreError as exc:
            log.warning("cannot release the controller lease (it expires by itself): %s", exc)

    @contextlib.contextmanager
    def kept_alive(self) -> Iterator[None]:
        """Renew the lease in the background while inside: a retrain may outlast the lease."""
        stop = threading.Event()
        beat = threading.Thread(target=self._beat, args=(stop,), name="loopml-lease", daemon=True)
        beat.start()
        try:
            yield
        finally:
            stop.set()
            beat.join(timeout=10)

    def _beat(self, stop: threading.Event) -> None:
        while not stop.wait(self.duration.total_seconds() / 3):
            try:
                self.renew()
            except LeaseLostError as exc:
                log.warning("%s", exc)
                return
            except StoreError as exc:
                # The next renewal may pass; the fences before each step decide.
                log.warning("cannot renew the controller lease: %s", exc)
