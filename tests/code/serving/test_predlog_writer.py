"""The prediction log against real files, a real full filesystem (tmpfs) and real databases:
dead letters instead of stalls, journal writes cut back on failure, lines of any length, and
feedback lookups that never read the journal."""

from __future__ import annotations

import errno
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from loopml.errors import JournalError, NotFoundError
from loopml.serving.feedback import FeedbackStore
from loopml.serving.metrics import Metrics
from loopml.serving.predlog import DEAD_LETTER, Journal, PredictionLog
from loopml.serving.predlog import journal as journal_module
from loopml.store import open_store

POSTGRES_ENV = "LOOPML_TEST_POSTGRES_URL"


def record(rid: str, text: str | None = "t", **changes: Any) -> bytes:
    """One journal line."""
    rec = {
        "request_id": rid,
        "ts": time.time(),
        "model_name": "m",
        "model_version": "1",
        "variant": "champion",
        "text": text,
        "text_hash": "0" * 64,
        "text_length": len(text or ""),
        "label": "a",
        "probabilities": {"a": 0.75, "b": 0.25},
        "latency_ms": 1.0,
        **changes,
    }
    return orjson.dumps(rec) + b"\n"


def entries(ids: list[str]) -> list[tuple[str, str]]:
    return [(rid, "a") for rid in ids]


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated loopml database: SQLite, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'loopml.db'}"
        return
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(f"{POSTGRES_ENV} is not set")
    name = f"predlog_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(
        base.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def open_log(url: str, spool: Path, **kw: Any) -> tuple[PredictionLog, sa.Engine, Metrics]:
    store = open_store(url)
    metrics = Metrics()
    options: dict[str, Any] = {"batch_size": 100, "flush_interval_s": 0.05} | kw
    return PredictionLog(spool, store.engine, metrics, **options), store.engine, metrics


def stored_ids(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text("select request_id from predictions")).scalars())


def wait(predicate: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# -- row 2: a bad row never stalls the log ------------------------------------------------------


def test_bad_rows_go_to_the_dead_letter_file_and_the_rest_is_committed(
    db_url: str, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    plog, engine, metrics = open_log(db_url, spool)
    plog.start()
    good = [f"good-{i}" for i in range(40)]
    lines = [record(rid) for rid in good[:20]]
    lines.append(record("bad-type", text_length="five"))  # a field of the wrong type
    lines.append(record("no-json")[:-30] + b"\n")  # a corrupt line
    lines += [record(rid) for rid in good[20:]]
    ids = [*good[:20], "bad-type", "no-json", *good[20:]]
    plog.record(b"".join(lines), entries(ids), ["a", "b"])
    assert plog.flush(30)
    assert sorted(stored_ids(engine)) == sorted(good)
    assert (plog.written, plog.dead_letter, plog.backlog) == (40, 2, 0)
    dead = [orjson.loads(line) for line in (spool / DEAD_LETTER).read_bytes().splitlines()]
    assert len(dead) == 2
    assert "'text_length' is str" in dead[0]["reason"]
    assert "not JSON" in dead[1]["reason"]
    wait(lambda: metrics.predlog_dead_letter._value.get() == 2)
    # the log goes on: later records are committed too
    plog.record(record("after"), entries(["after"]), ["a", "b"])
    assert plog.flush(30)
    assert "after" in stored_ids(engine)
    assert plog.drain(10)


def test_a_nul_text_in_a_journal_is_dead_lettered_on_postgres_and_kept_on_sqlite(
    db_url: str, tmp_path: Path
) -> None:
    # The door refuses NUL (tests/api); a journal from before that rule must not stall the log.
    plog, engine, _ = open_log(db_url, tmp_path / "spool", batch_size=10)
    plog.start()
    ids = [f"n{i}" for i in range(25)]
    data = b"".join(record(rid, "hello\x00world" if rid == "n7" else "ok") for rid in ids)
    plog.record(data, entries(ids), ["a", "b"])
    assert plog.flush(30)
    stored = set(stored_ids(engine))
    if engine.dialect.name == "postgresql":
        assert stored == set(ids) - {"n7"} and plog.dead_letter == 1
    else:
        assert stored == set(ids) and plog.dead_letter == 0
    assert plog.drain(10)


# -- row 3: feedback never reads the journal ----------------------------------------------------


def test_feedback_lookups_use_the_index_not_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'loopml.db'}"
    plog, _, metrics = open_log(url, tmp_path / "spool")  # writer not started: all uncommitted
    ids = [f"p{i:05d}" for i in range(20_000)]
    for start in range(0, len(ids), 500):
        part = ids[start : start + 500]
        plog.record(b"".join(record(rid) for rid in part), entries(part), ["a", "b"])
    assert sum(p.stat().st_size for p in plog.journal.segments()) > 4_000_000
    reads: list[str] = []
    real_open = Path.open

    def spy_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self.suffix == ".seg":
            reads.append(self.name)
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", spy_open)
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self.name) or b"")
    feedback = FeedbackStore(open_store(url), plog, metrics)
    for _ in range(5):
        with pytest.raises(NotFoundError):
            feedback.record([(f"unknown-{k}", "a") for k in range(1000)], "k-test")
    stored = feedback.record([("p00007", "b"), ("p19999", "a")], "k-test")
    assert [s["predicted"] for s in stored] == ["a", "a"]
    assert reads == []
    plog.journal.close()
    plog.journal.release(delete_lock=False)


def test_the_index_forgets_committed_ids_and_the_database_answers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'loopml.db'}"
    plog, _, metrics = open_log(url, tmp_path / "spool")
    plog.start()
    ids = [f"c{i}" for i in range(300)]
    plog.record(b"".join(record(rid) for rid in ids), entries(ids), ["a", "b"])
    assert plog.flush(30)
    wait(lambda: not plog.pending(ids)[0])
    stored = FeedbackStore(open_store(url), plog, metrics).record([("c5", "b")], "k-test")
    assert stored[0]["predicted"] == "a" and stored[0]["correct"] is False
    assert plog.drain(10)


# -- row 5: a full disk ---------------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (real ENOSPC), unmounted afterwards."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_failed_journal_write_is_cut_back_and_refused(small_fs: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'loopml.db'}"
    plog, engine, metrics = open_log(url, small_fs / "spool")
    accepted: list[str] = []
    refused = 0
    for n in range(80):  # ~1.6 MB into 1 MiB
        ids = [f"b{n}-{k}" for k in range(20)]
        data = b"".join(record(rid, "y" * 900) for rid in ids)  # ~23 KB a batch
        try:
            plog.record(data, entries(ids), ["a", "b"])
            accepted += ids
        except JournalError as exc:
            assert exc.http_status == 503 and exc.http_headers == {"Retry-After": "5"}
            assert isinstance(exc.__cause__, OSError) and exc.__cause__.errno == errno.ENOSPC
            refused += 1
    assert refused > 0 and accepted
    segment = plog.journal.segments()[-1]
    content = segment.read_bytes()
    assert content.endswith(b"\n"), "no torn record is left behind"
    assert [orjson.loads(line)["request_id"] for line in content.splitlines()] == accepted
    assert plog.dropped == 20 * refused and plog.served == len(accepted)
    # every accepted record reaches the database once the writer runs
    plog.start()
    assert plog.flush(30)
    assert sorted(stored_ids(engine)) == sorted(accepted)
    assert plog.dead_letter == 0
    assert metrics.predlog_dropped._value.get() == 20 * refused
    plog.drain(10)


def test_a_segment_that_cannot_be_cut_back_is_never_appended_to(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "spool")
    journal.append(record("one"))
    os.close(journal._fd)  # every write and truncate now fails (EBADF)
    journal._fd = os.open(os.devnull, os.O_RDONLY)
    with pytest.raises(OSError):
        journal.append(record("two"))
    seq, _ = journal.append(record("three"))
    assert seq == 2 and len(journal.segments()) == 2
    journal.close()
    journal.release(delete_lock=True)


# -- row 6: batch size 1, long lines, rotation ---------------------------------------------------


def test_long_lines_with_batch_size_1_all_reach_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "ROTATE_BYTES", 60_000)  # many segments (journal side)
    url = f"sqlite:///{tmp_path / 'loopml.db'}"
    plog, engine, _ = open_log(url, tmp_path / "spool", batch_size=1)
    plog.start()
    ids = []
    for n in range(60):
        part = [f"L{n}-{k}" for k in range(4)]
        plog.record(b"".join(record(rid, "w" * 5000) for rid in part), entries(part), ["a"])
        ids += part
    assert plog.flush(60)
    assert sorted(stored_ids(engine)) == sorted(ids)
    assert (plog.served, plog.written, plog.dead_letter) == (240, 240, 0)
    assert plog.journal.seq > 10  # the patched rotation took effect: ~21 KB a batch, 60 batches
    assert plog.drain(10)
    assert list((tmp_path / "spool").iterdir()) == []
