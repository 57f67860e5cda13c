"""The prediction log under real conditions: hashing, graceful drain, a database that goes away
under load (SQLite locked, PostgreSQL refusing connections), and kill -9 of the server."""

from __future__ import annotations

import hashlib
import re
import sqlite3
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
    """served == written + backlog, on the metrics and on /v1/status."""
    served, written = (
        metric(url, "loopml_predlog_served_total"),
        metric(url, "loopml_predlog_written_total"),
    )
    assert served == written + metric(url, "loopml_predlog_backlog")
    status = httpx.get(url + "/v1/status").json()["predlog"]
    assert status["served"] == status["written"] + status["backlog"]


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
