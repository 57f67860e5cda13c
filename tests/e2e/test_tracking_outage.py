"""A locked or unreachable MLflow tracking store (issue 19 row 10): every CLI command that touches
MLflow says so in one line and exits 2, never a SQLAlchemy traceback and exit 1 (a failed gate).

The SQLite store is held with ``BEGIN EXCLUSIVE`` by this test's own connection, as another
process (an ``mlflow ui``, a second trainer, a backup) would hold it."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
from serving_helpers import free_port, wait_for

from loopml.config import load_settings
from loopml.data import Dataset

#: What a hostile or unlucky outage must never print.
NEVER = ("Traceback", "[SQL:", "sqlalche.me", "OperationalError")


@pytest.fixture
def data_csv(small_tweets: Dataset, tmp_path: Path) -> str:
    path = tmp_path / "tweets.csv"
    small_tweets.frame.to_csv(path, index=False)
    return str(path)


def environment(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOPML_", "MLFLOW_"))}
    return env | {
        "LOOPML_HOME": str(home),
        "LOOPML_CONFIG": str(home / "absent.toml"),
        "LOOPML_GATE_MIN_SLICE_F1": "0.2",
        **extra,
    }


def start(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "loopml", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def assert_one_line_exit_2(proc: subprocess.Popen[str], reason: str) -> str:
    """Wait for ``proc``; it must exit 2 with one line naming the store and ``reason``."""
    stdout, stderr = proc.communicate(timeout=300)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: the MLflow tracking store") and reason in lines[0], stderr
    assert not any(word in stdout + stderr for word in NEVER), stderr
    return stdout + stderr


@contextmanager
def locked(db: Path) -> Iterator[sqlite3.Connection]:
    """``db`` held with an exclusive lock (no reader, no writer) until the block ends."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=60)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        yield conn
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def registered_versions(home: Path) -> int:
    with closing(sqlite3.connect(home / "mlflow.db")) as conn:
        return int(conn.execute("SELECT count(*) FROM model_versions").fetchone()[0])


def test_a_store_locked_before_train_starts(tmp_path: Path, data_csv: str) -> None:
    home = tmp_path / "home"
    load_settings(home=home).prepare()  # the empty mlflow.db a first command creates
    with locked(home / "mlflow.db"):
        trainer = start(environment(home), "train", "--data", data_csv)
        assert_one_line_exit_2(trainer, "database is locked")


def _running_run(db: Path) -> bool:
    try:
        with closing(sqlite3.connect(db, timeout=1)) as conn:
            return bool(conn.execute("SELECT 1 FROM runs WHERE status = 'RUNNING'").fetchone())
    except sqlite3.OperationalError:  # the tables are not created yet, or a write is going on
        return False


@pytest.mark.slow
def test_a_store_locked_during_train(tmp_path: Path, data_csv: str) -> None:
    # The row as seen: the lock comes while the run is open. MLflow waits 20 s (its own SQLite
    # busy timeout, not configurable) for each of the run's next write and its FAILED mark.
    home = tmp_path / "home"
    db = home / "mlflow.db"
    trainer = start(environment(home), "train", "--data", data_csv)
    try:
        wait_for(lambda: _running_run(db) or trainer.poll() is not None, 300, "an open run")
        assert trainer.poll() is None, trainer.communicate()
        with locked(db):
            assert_one_line_exit_2(trainer, "database is locked")
    finally:
        if trainer.poll() is None:
            trainer.kill()
            trainer.wait()
    assert registered_versions(home) == 0


@pytest.mark.parametrize(
    "args",
    [["train", "--data", "DATA"], ["models"], ["promote", "1"], ["rollback"], ["monitor"]],
    ids=lambda args: args[0],
)
def test_an_unreachable_tracking_server(tmp_path: Path, data_csv: str, args: list[str]) -> None:
    # Nothing listens on the port. MLflow's own retries (7 by default, with backoff: minutes)
    # are turned down so the test is fast; the message is the same with them.
    env = environment(
        tmp_path / "home",
        LOOPML_TRACKING_URI=f"http://user:s3cret-pw@127.0.0.1:{free_port()}",
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
        MLFLOW_HTTP_REQUEST_TIMEOUT="10",
    )
    proc = start(env, *[data_csv if a == "DATA" else a for a in args])
    shown = assert_one_line_exit_2(proc, "connection refused")
    assert "user:***@127.0.0.1" in shown and "s3cret-pw" not in shown
