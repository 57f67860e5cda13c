"""Data 5 of the ML Test Score: retention (``loopml data purge``) and one subject's deletion
(``loopml data forget``) on SQLite and PostgreSQL, audited, and safe next to a running
prediction-log writer."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aged_rows import NOW, label, log, remaining
from sqlalchemy import select
from typer.testing import CliRunner

from loopml.cli import app
from loopml.config import Settings
from loopml.serving.metrics import Metrics
from loopml.serving.predlog import PredictionLog
from loopml.store import AuditEntry, Prediction, Store, open_store
from loopml.store.deadletter import DEAD_LETTER, locked_dead_letter, purge_dead_letter

runner = CliRunner()


def cli(*args: str) -> tuple[int, Any, str]:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    parsed = json.loads(result.stdout) if "--json" in args and result.exit_code == 0 else None
    return result.exit_code, parsed, result.stdout + result.stderr


def audits(store: Store, action: str) -> list[AuditEntry]:
    with store.session() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action)))


def test_purge_deletes_what_is_past_retention(backend_settings: Settings) -> None:
    store = open_store(backend_settings.db_url)
    old = log(store, age_days=100, n=3)
    month = log(store, age_days=30, n=2)
    fresh = log(store, age_days=0, n=2)
    label(store, old[:1], key_id="k1", age_days=99)
    label(store, old[1:2], key_id="k1", age_days=1)  # a recent label of an old prediction
    label(store, month + fresh, key_id="k1")
    reports = backend_settings.reports_dir
    stale, recent = reports / "monitor-old.html", reports / "monitor-new.html"
    stale.write_text("old texts")
    recent.write_text("new texts")
    aged = (NOW - timedelta(days=91)).timestamp()
    os.utime(stale, (aged, aged))

    code, counts, _ = cli("data", "purge", "--json")  # LOOPML_RETENTION_DAYS: 90
    assert code == 0
    assert (counts["older_than_days"], counts["predictions"], counts["feedback"]) == (90, 3, 2)
    assert counts["report_files"] == 1 and not stale.exists() and recent.exists()
    assert remaining(store) == (set(month + fresh), set(month + fresh))

    code, counts, _ = cli("data", "purge", "--older-than", "7", "--json")
    assert code == 0 and (counts["predictions"], counts["feedback"]) == (2, 2)
    assert remaining(store) == (set(fresh), set(fresh))
    entries = audits(store, "purge")
    assert [e.details["predictions"] for e in entries] == [3, 2]
    code, _, out = cli("data", "purge", "--older-than", "-1")
    assert code == 2 and "--older-than must be 0 days or more" in out
    store.dispose()


def test_purge_drops_old_dead_letter_lines_and_keeps_the_rest(
    backend_settings: Settings,
) -> None:
    spool = backend_settings.spool_dir
    spool.mkdir(parents=True, exist_ok=True)
    old = (NOW - timedelta(days=100)).timestamp()
    lines = [
        orjson.dumps({"ts": old, "reason": "bad type", "line": "an old refused text"}),
        orjson.dumps({"ts": time.time(), "reason": "bad type", "line": "a recent one"}),
        b'{"ts": 12, "reason": "torn',  # no date to judge by: kept for a person to look at
    ]
    (spool / DEAD_LETTER).write_bytes(b"\n".join(lines) + b"\n")

    code, counts, _ = cli("data", "purge", "--json")
    assert code == 0 and counts["dead_letter_lines"] == 1
    left = (spool / DEAD_LETTER).read_bytes()
    assert b"an old refused text" not in left
    assert b"a recent one" in left and b"torn" in left
    assert oct((spool / DEAD_LETTER).stat().st_mode & 0o777) == "0o600"
    _, again, _ = cli("data", "purge", "--json")
    assert again["dead_letter_lines"] == 0


def test_a_line_dead_lettered_during_a_purge_is_never_lost(tmp_path: Path) -> None:
    old = orjson.dumps({"ts": 1.0, "line": "old"}) + b"\n"
    (tmp_path / DEAD_LETTER).write_bytes(old * 50)
    appended, stop = [], threading.Event()

    def append() -> None:
        i = 0
        while not stop.is_set() or i < 200:
            line = orjson.dumps({"ts": time.time(), "line": f"new {i}"}) + b"\n"
            with locked_dead_letter(tmp_path) as fd:
                os.write(fd, line)
            appended.append(f"new {i}")
            i += 1

    writer = threading.Thread(target=append)
    writer.start()
    dropped = 0
    for _ in range(100):
        dropped += purge_dead_letter(tmp_path, cutoff=10.0)
        with locked_dead_letter(tmp_path) as fd:  # more old lines to drop next time
            os.write(fd, old)
        dropped -= 1
    stop.set()
    writer.join()
    kept = [orjson.loads(x)["line"] for x in (tmp_path / DEAD_LETTER).read_bytes().splitlines()]
    assert [x for x in kept if x != "old"] == appended  # every new line, in order, once
    assert dropped == 50 - kept.count("old")


def test_forget_by_key_id_deletes_its_labels_and_their_predictions(
    backend_settings: Settings,
) -> None:
    store = open_store(backend_settings.db_url)
    mine, theirs = log(store, age_days=1, n=3), log(store, age_days=1, n=2)
    unlabelled = log(store, age_days=1, n=1)
    label(store, mine, key_id="k-alice")
    label(store, theirs, key_id="k-bob")

    code, counts, _ = cli("data", "forget", "--key-id", "k-alice", "--json")
    assert code == 0 and (counts["predictions"], counts["feedback"]) == (3, 3)
    assert remaining(store) == (set(theirs + unlabelled), set(theirs))
    [entry] = audits(store, "forget")
    assert entry.details == {
        "key_id": "k-alice",
        "request_ids": 0,
        "texts": 0,
        "predictions": 3,
        "feedback": 3,
        "split_rows": 0,  # no training run holds these texts (test_forget_splits.py)
        "split_runs": [],
    }
    assert "tweet" not in json.dumps(entry.details)  # counts only, never a text
    store.dispose()


def test_forget_by_text_works_without_logged_texts(backend_settings: Settings) -> None:
    store = open_store(backend_settings.db_url)
    # LOOPML_LOG_TEXT=false: no text, only its hash; the subject knows their text.
    hidden = log(store, age_days=2, text=None, n=1)
    other = log(store, age_days=2, text="someone else", n=1)
    with store.session() as session:
        session.get(Prediction, hidden[0]).text_hash = hashlib.sha256(b"my tweet").hexdigest()  # type: ignore[union-attr]
    label(store, hidden, key_id="k1")
    code, _, out = cli("data", "forget", "--text", "my tweet")
    assert code == 0 and "deleted 1 predictions, 1 feedback labels" in out
    assert remaining(store) == (set(other), set())
    store.dispose()


def test_forget_by_request_id_names_ids_not_in_the_log(backend_settings: Settings) -> None:
    store = open_store(backend_settings.db_url)
    ids = log(store, age_days=0, n=2)
    code, counts, _ = cli(
        "data", "forget", "--request-id", ids[0], "--request-id", "nope", "--json"
    )
    assert code == 0 and counts["predictions"] == 1
    assert counts["request_ids_not_found"] == ["nope"]
    assert remaining(store)[0] == {ids[1]}
    code, _, out = cli("data", "forget")
    assert code == 2 and "--key-id, --request-id or --text" in out
    store.dispose()


def record(rid: str, text: str) -> bytes:
    rec = {
        "request_id": rid,
        "ts": time.time(),
        "model_name": "sentiment",
        "model_version": "1",
        "variant": "champion",
        "text": text,
        "text_hash": hashlib.sha256(text.encode()).hexdigest(),
        "text_length": len(text),
        "label": "positive",
        "probabilities": {"negative": 0.5, "positive": 0.5},
        "latency_ms": 1.0,
    }
    return orjson.dumps(rec) + b"\n"


def test_deleting_next_to_a_running_writer(backend_settings: Settings) -> None:
    """A record still in the journal is reported not found (and deleted by a second run once
    written); purges and forgets in between never stall or dead-letter the writer."""
    store = open_store(backend_settings.db_url)
    plog = PredictionLog(
        backend_settings.spool_dir, store.engine, Metrics(), batch_size=50, flush_interval_s=0.05
    )
    plog.record(
        record("pending", "wait for me"), [("pending", "positive")], ["negative", "positive"]
    )
    code, counts, _ = cli("data", "forget", "--request-id", "pending", "--json")
    assert counts["request_ids_not_found"] == ["pending"]  # in the journal, not in the table
    plog.start()
    try:
        assert plog.flush(30)
        code, counts, _ = cli("data", "forget", "--request-id", "pending", "--json")
        assert code == 0 and counts["predictions"] == 1 and not counts["request_ids_not_found"]
        purged = 0
        for batch in range(10):
            ids = [f"b{batch}-{i}" for i in range(50)]
            lines = b"".join(record(rid, f"text {rid}") for rid in ids)
            plog.record(lines, [(rid, "positive") for rid in ids], ["negative", "positive"])
            if batch % 3 == 0:
                assert plog.flush(30)  # some purges find committed rows, others race the writer
            code, counts, _ = cli("data", "purge", "--older-than", "0", "--json")
            assert code == 0
            purged += counts["predictions"]
        assert plog.flush(30)
        assert plog.dead_letter == 0 and plog.backlog == 0 and plog.written == 501
        assert purged >= 50 and purged + len(remaining(store)[0]) == 500
        # the writer goes on writing after the deletions
        plog.record(record("after", "later"), [("after", "positive")], ["negative", "positive"])
        assert plog.flush(30)
        assert "after" in remaining(store)[0]
    finally:
        assert plog.drain(10)
        store.dispose()


@pytest.mark.parametrize("command", ["purge", "forget"])
def test_help(command: str) -> None:
    result = runner.invoke(app, ["data", command, "--help"])
    assert result.exit_code == 0 and "--json" in result.stdout
