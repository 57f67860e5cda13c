"""The prediction log under real conditions: hashing, graceful drain, a database that goes away
under load (SQLite locked, PostgreSQL refusing connections), and kill -9 of the server."""

from __future__ import annotations

import contextlib
import hashlib
import re
import sqlite3
import subprocess
import threading
import time
from typing import Any

import httpx
import pytest
from serving_helpers import (
    LoadResult,
    Server,
    TrainedRegistry,
    count_ids,
    db_settings,
    db_url,
    run_load,
    wait_for,
)


def metric(url: str, name: str) -> float:
    """Sum of a metric's samples on ``/metrics``."""
    text = httpx.get(url + "/metrics", timeout=10).text
    return sum(float(m) for m in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def assert_accounting(url: str) -> None:
    """served == written + dead-lettered + backlog, on the metrics and on /v1/status."""
    status = httpx.get(url + "/v1/status").json()["predlog"]
    assert status["served"] == status["written"] + status["dead_letter"] + status["backlog"]
    served, written = (
        metric(url, "loopml_predlog_served_total"),
        metric(url, "loopml_predlog_written_total"),
    )
    assert served == written + status["dead_letter"] + metric(url, "loopml_predlog_backlog")


def test_hashes_only_without_log_text_and_drains_on_shutdown(
    trained: TrainedRegistry, make_server, database: dict[str, Any]
) -> None:
    server = make_server(
        log_text="false",
        predlog_flush_interval_s=60,
        predlog_batch_size=10_000,
        **db_settings(database),
    )
    texts = ["private text one", "private text two"]
    answer = httpx.post(server.url + "/v1/predict", json={"texts": texts}).json()
    ids = [p["request_id"] for p in answer["predictions"]]
    assert httpx.get(server.url + "/v1/status").json()["predlog"]["backlog"] == 2
    assert_accounting(server.url)
    server.stop()  # SIGTERM: the backlog is written before the process ends
    assert count_ids(db_url(database, server), ids) == dict.fromkeys(ids, 1)
    assert list((server.home / "spool").iterdir()) == []
    import sqlalchemy as sa

    engine = sa.create_engine(
        db_url(database, server).replace("postgresql://", "postgresql+psycopg://", 1)
    )
    with engine.connect() as conn:
        rows = conn.execute(sa.text("select text, text_hash, text_length from predictions")).all()
    engine.dispose()
    assert {r[0] for r in rows} == {None}
    expected = {(hashlib.sha256(t.encode()).hexdigest(), len(t)) for t in texts}
    assert {(r[1], r[2]) for r in rows} == expected


def _load_in_background(
    server: Server, trained: TrainedRegistry, seconds: float
) -> tuple[threading.Thread, threading.Event, LoadResult]:
    stop, result = threading.Event(), LoadResult()
    thread = threading.Thread(
        target=run_load,
        args=(server.url, trained.texts),
        kwargs={"seconds": seconds, "concurrency": 12, "batch": 2, "stop": stop, "result": result},
    )
    thread.start()
    wait_for(lambda: result.requests > 100, 30, "load to start")
    return thread, stop, result


def _make_db_unavailable(database: dict[str, Any], server: Server) -> Any:
    """Take the database away; returns a function that brings it back."""
    if database["kind"] == "sqlite":
        conn = sqlite3.connect(server.home / "loopml.db", timeout=30, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")  # every writer now waits, then fails

        def back() -> None:
            conn.execute("COMMIT")
            conn.close()

        return back
    admin, name = database["admin"], database["name"]
    admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
    )
    return lambda: admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


@pytest.mark.slow
def test_database_outage_under_load_loses_nothing(
    trained: TrainedRegistry, make_server, database: dict[str, Any]
) -> None:
    server = make_server(predlog_flush_interval_s=0.1, **db_settings(database))
    thread, stop, result = _load_in_background(server, trained, 60)
    try:
        bring_back = _make_db_unavailable(database, server)
        try:
            wait_for(
                lambda: metric(server.url, "loopml_predlog_spooled_total") > 0,
                30,
                "records to be spooled",
            )
            answered_during_outage = result.requests
            time.sleep(3)
            assert result.requests > answered_during_outage  # serving does not wait for the DB
            assert httpx.get(server.url + "/v1/status").json()["predlog"]["database_ok"] is False
        finally:
            bring_back()
        time.sleep(1)
    finally:
        stop.set()
        thread.join()
    assert result.failures == []
    wait_for(
        lambda: httpx.get(server.url + "/v1/status").json()["predlog"]["backlog"] == 0,
        60,
        "the backlog to drain",
    )
    assert_accounting(server.url)
    counts = count_ids(db_url(database, server), result.ids)
    assert set(counts.values()) == {1}, "every answered prediction is stored exactly once"


@pytest.mark.slow
def test_kill_9_under_load_loses_no_answered_prediction(
    trained: TrainedRegistry, make_server, database: dict[str, Any]
) -> None:
    # A slow writer keeps a backlog in the journal at the moment of the kill.
    settings = {
        "predlog_flush_interval_s": 2,
        "predlog_batch_size": 100_000,
        **db_settings(database),
    }
    server = make_server(**settings)
    thread, stop, result = _load_in_background(server, trained, 60)
    time.sleep(1.5)
    server.kill()  # SIGKILL, no shutdown code runs
    stop.set()
    thread.join()
    assert len(result.ids) > 200
    leftovers = list((server.home / "spool").glob("*.seg"))
    assert leftovers, "the journal of the killed process is still on disk"
    server.start()  # same home: the new process replays the dead one's journal
    wait_for(
        lambda: not list((server.home / "spool").glob(leftovers[0].name)),
        60,
        "the dead process's journal to be replayed",
    )
    counts = count_ids(db_url(database, server), result.ids)
    missing = [rid for rid, n in counts.items() if n == 0]
    assert not missing, f"{len(missing)} answered predictions are not in the database"
    assert set(counts.values()) == {1}
    assert metric(server.url, "loopml_predlog_replayed_total") > 0


# -- issue 10: a prediction log that never stalls and never lies ---------------------------------


def test_nul_is_refused_at_the_door_alike_on_every_store(
    trained: TrainedRegistry, make_server, database: dict[str, Any]
) -> None:
    server = make_server(**db_settings(database))
    bodies = [
        ("/v1/predict", {"text": "hello\u0000world"}, "text"),
        ("/v1/predict", {"texts": ["fine", "a\u0000b"]}, "texts[1]"),
    ]
    for path, body, where in bodies:
        answer = httpx.post(server.url + path, json=body, timeout=10)
        assert answer.status_code == 422, answer.text
        assert where in answer.json()["error"] and "NUL" in answer.json()["error"]
    ok = httpx.post(server.url + "/v1/predict", json={"text": "hello world"}, timeout=10).json()
    rid = ok["predictions"][0]["request_id"]
    bad_label = httpx.post(
        server.url + "/v1/feedback", json={"request_id": rid, "label": "pos\u0000"}, timeout=10
    )
    assert bad_label.status_code == 422 and "NUL" in bad_label.json()["error"]
    wait_for(lambda: count_ids(db_url(database, server), [rid]) == {rid: 1}, 30, "the record")
    assert metric(server.url, "loopml_predlog_dead_letter_total") == 0


def test_a_bad_journal_line_is_dead_lettered_and_alerted_the_rest_committed(
    trained: TrainedRegistry, make_server, database: dict[str, Any]
) -> None:
    server = make_server(start=False, **db_settings(database))
    spool = server.home / "spool"
    spool.mkdir(parents=True, exist_ok=True)
    good = [f"orphan-{i}" for i in range(30)]
    lines = [_journal_line(rid) for rid in good[:15]]
    lines.append(_journal_line("wrong-type").replace(b'"text_length":4', b'"text_length":"4"'))
    lines += [_journal_line(rid) for rid in good[15:]]
    (spool / "jdead-00000000-000001.seg").write_bytes(b"".join(lines))  # a dead process's
    server.start()
    wait_for(lambda: metric(server.url, "loopml_predlog_replayed_total") == 30, 60, "replay")
    assert metric(server.url, "loopml_predlog_dead_letter_total") == 1
    assert count_ids(db_url(database, server), good) == dict.fromkeys(good, 1)
    dead = (spool / "deadletter.jsonl").read_text().splitlines()
    assert len(dead) == 1 and "wrong-type" in dead[0]
    answer = httpx.post(server.url + "/v1/predict", json={"text": "still logging"}, timeout=10)
    rid = answer.json()["predictions"][0]["request_id"]
    wait_for(lambda: count_ids(db_url(database, server), [rid]) == {rid: 1}, 30, "a new record")


def _journal_line(rid: str) -> bytes:
    import orjson

    rec = {
        "request_id": rid,
        "ts": time.time(),
        "model_name": "sentiment",
        "model_version": "1",
        "variant": "champion",
        "text": "text",
        "text_hash": "0" * 64,
        "text_length": 4,
        "label": "negative",
        "probabilities": {"negative": 0.5, "neutral": 0.3, "positive": 0.2},
        "latency_ms": 1.0,
    }
    return orjson.dumps(rec) + b"\n"


@pytest.mark.slow
def test_full_disk_answers_503_and_every_200_is_logged(
    trained: TrainedRegistry, make_server, tmp_path_factory: pytest.TempPathFactory
) -> None:
    home = tmp_path_factory.mktemp("fulldisk")
    spool = home / "spool"
    spool.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(spool)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        server = make_server(home=home)
        httpx.post(server.url + "/v1/predict", json={"text": "warm up"}, timeout=10)
        filler = spool / "filler"
        # fill the disk to its last byte
        with filler.open("wb", buffering=0) as fh, contextlib.suppress(OSError):
            while True:
                fh.write(b"\0" * 4096)
        answered: list[str] = []
        statuses: list[int] = []
        for i in range(200):
            body = {"texts": [f"text {i} " + "x" * 300 for _ in range(4)]}
            r = httpx.post(server.url + "/v1/predict", json=body, timeout=10)
            statuses.append(r.status_code)
            if r.status_code == 200:
                answered += [p["request_id"] for p in r.json()["predictions"]]
            else:
                assert r.status_code == 503 and r.headers["retry-after"] == "5", r.text
            if i == 150:
                filler.unlink()  # space again: the log goes on
        assert statuses.count(503) > 0 and statuses[-1] == 200
        wait_for(
            lambda: httpx.get(server.url + "/v1/status").json()["predlog"]["backlog"] == 0,
            60,
            "the backlog to drain",
        )
        counts = count_ids(f"sqlite:///{home / 'loopml.db'}", answered)
        assert set(counts.values()) == {1}, "every answered prediction is stored exactly once"
        assert metric(server.url, "loopml_predlog_dead_letter_total") == 0  # no torn record
        assert metric(server.url, "loopml_predlog_dropped_total") == 4 * statuses.count(503)
        server.stop()
    finally:
        subprocess.run(["umount", "-l", str(spool)], check=False)


@pytest.mark.slow
def test_metrics_answer_and_feedback_fails_fast_while_sqlite_is_locked(
    trained: TrainedRegistry, make_server
) -> None:
    server = make_server()
    answer = httpx.post(server.url + "/v1/predict", json={"text": "a fine day"}, timeout=10)
    rid = answer.json()["predictions"][0]["request_id"]
    lock = sqlite3.connect(server.home / "loopml.db", timeout=30, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        results: list[tuple[int, float]] = []

        def send() -> None:
            t0 = time.monotonic()
            r = httpx.post(
                server.url + "/v1/feedback",
                json={"request_id": rid, "label": "positive"},  # found, then written: waits
                timeout=60,
            )
            results.append((r.status_code, time.monotonic() - t0))

        threads = [threading.Thread(target=send) for _ in range(40)]
        for t in threads:
            t.start()
        metrics = httpx.get(server.url + "/metrics", timeout=30)  # completes; never queued
        assert metrics.status_code == 200
        for t in threads:
            t.join()
        assert {status for status, _ in results} == {503}  # WAL: reads pass, the write waits
        # at most workers + queue (18) wait for the busy timeout; the rest are refused at once
        fast = [s for _, s in results if s < 2.5]
        assert len(fast) >= 40 - 18
    finally:
        lock.execute("COMMIT")
        lock.close()
    wait_for(
        lambda: (
            httpx.post(
                server.url + "/v1/feedback",
                json={"request_id": rid, "label": "positive"},
                timeout=30,
            ).status_code
            == 200
        ),
        30,
        "feedback to work again",
    )


@pytest.mark.slow
def test_feedback_finds_a_prediction_another_worker_has_not_committed_yet(
    trained: TrainedRegistry, make_server
) -> None:
    # Each worker indexes only its own uncommitted records; a label that reaches the other worker
    # before the answering worker's writer committed the record must still be accepted.
    server = make_server(workers=2, predlog_flush_interval_s=0.5)
    texts = trained.texts[:40]
    statuses = []
    for text in texts:
        with httpx.Client(timeout=30) as client:  # a new connection: either worker may answer
            rid = client.post(server.url + "/v1/predict", json={"text": text}).json()[
                "predictions"
            ][0]["request_id"]
        with httpx.Client(timeout=30) as client:
            label = {"request_id": rid, "label": "positive"}
            statuses.append(client.post(server.url + "/v1/feedback", json=label).status_code)
    assert statuses == [200] * len(texts)
    unknown = {"request_id": "no-such-prediction", "label": "positive"}
    assert httpx.post(server.url + "/v1/feedback", json=unknown, timeout=30).status_code == 404
