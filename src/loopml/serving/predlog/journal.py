"""The journal: this process's append-only segment files in the spool folder, and reading them.

A segment is ``<owner>-<seq>.seg``; ``<owner>.lock`` carries an ``flock`` for the owner's life, so
a segment whose lock is free belongs to a process that died.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import threading
from pathlib import Path

SEGMENT = ".seg"
LOCK = ".lock"
ROTATE_BYTES = 4 << 20


def try_lock(path: Path) -> int | None:
    """An fd holding an exclusive flock on ``path``, or None when someone else holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def seq_of(path: Path) -> int:
    """The segment number in a segment's file name."""
    return int(path.name.removesuffix(SEGMENT).rsplit("-", 1)[1])


class Journal:
    """This process's append-only segments in the spool folder."""

    def __init__(self, spool_dir: Path, *, fsync: bool = False) -> None:
        spool_dir.mkdir(parents=True, exist_ok=True)
        self.dir = spool_dir
        self.fsync = fsync
        self.owner = f"j{os.getpid()}-{secrets.token_hex(4)}"
        self.lock_path = spool_dir / f"{self.owner}{LOCK}"
        fd = try_lock(self.lock_path)
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
