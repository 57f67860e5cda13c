"""The dead-letter file: prediction records the database refused, kept as JSON lines.

The prediction-log writer appends to it and ``loopml data purge`` drops lines past retention (they
hold logged texts). Both take an exclusive ``flock`` on the file; the purge replaces the file
atomically, and an appender that waited on the old file notices and reopens the new one, so a
record appended during a purge is never lost.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import orjson

__all__ = ["DEAD_LETTER", "locked_dead_letter", "purge_dead_letter"]

DEAD_LETTER = "deadletter.jsonl"


@contextlib.contextmanager
def locked_dead_letter(folder: Path) -> Iterator[int]:
    """A descriptor of ``folder``'s dead-letter file, open for appending, under an exclusive
    lock (released on exit)."""
    path = folder / DEAD_LETTER
    while True:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = path.stat().st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:  # else a purge replaced the file while we waited: open the new one
                yield fd
                return
        finally:
            os.close(fd)


def _written_before(line: bytes, cutoff: float) -> bool:
    try:
        ts = orjson.loads(line).get("ts")
    except (orjson.JSONDecodeError, AttributeError):
        return False  # a torn line has no date: kept, for a person to look at
    return isinstance(ts, int | float) and ts < cutoff


def purge_dead_letter(folder: Path, cutoff: float) -> int:
    """Drop the lines of ``folder``'s dead-letter file written before ``cutoff`` (epoch
    seconds); returns how many were dropped."""
    path = folder / DEAD_LETTER
    if not path.exists():
        return 0
    with locked_dead_letter(folder):
        lines = path.read_bytes().splitlines(keepends=True)
        keep = [line for line in lines if not _written_before(line, cutoff)]
        if len(keep) == len(lines):
            return 0
        tmp = path.with_name(DEAD_LETTER + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"".join(keep))
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(path)
    return len(lines) - len(keep)
