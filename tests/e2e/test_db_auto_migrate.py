"""`loopml serve` with LOOPML_DB_AUTO_MIGRATE=false on a schema behind the code (a release rolled
out before its migration Job ran): it answers, /readyz stays 503 naming `loopml db upgrade`, the
prediction log keeps every record on the spool; after `loopml db upgrade` it becomes ready and
every answered prediction reaches the database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from alembic import command
from serving_helpers import free_port, wait_for
from sqlalchemy import text

from loopml.config import Settings
from loopml.control.promotion import promote
from loopml.data import Dataset
from loopml.pipeline.train import train
from loopml.registry import Registry
from loopml.store import open_store
from loopml.store._db import alembic_config, head_revision, make_engine, schema_state

pytestmark = pytest.mark.slow


def env_of(home: Path, **extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LOOPML_")}
    return {**clean, "LOOPML_HOME": str(home), "LOOPML_PREDLOG_FLUSH_INTERVAL_S": "0.05", **extra}


class Served:
    def __init__(self, home: Path, log: Path, **extra: str) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "loopml", "serve", "--port", self.url.rsplit(":", 1)[1]],
                env=env_of(home, **extra),
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def get(self, path: str) -> httpx.Response | None:
        if self.proc.poll() is not None:
            pytest.fail(f"serve exited {self.proc.returncode}:\n{self.logs()}")
        try:
            return httpx.get(self.url + path, timeout=5)
        except httpx.HTTPError:
            return None

    def code(self, path: str) -> int:
        r = self.get(path)
        return 0 if r is None else r.status_code

    def ready(self) -> bool:
        """Whether a model is loaded (what /v1/status says, whatever /readyz answers)."""
        r = self.get("/v1/status")
        return r is not None and r.status_code == 200 and r.json()["ready"] is True

    def predict(self, texts: list[str]) -> list[str]:
        r = httpx.post(self.url + "/v1/predict", json={"texts": texts}, timeout=30)
        assert r.status_code == 200, r.text
        return [p["request_id"] for p in r.json()["predictions"]]

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def servers() -> Iterator[list[Served]]:
    started: list[Served] = []
    yield started
    for server in started:
        server.stop()


def logged(url: str, ids: list[str]) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT request_id FROM predictions")).scalars()
            return len(set(rows) & set(ids))
    finally:
        engine.dispose()


def test_serve_waits_for_db_upgrade_and_loses_nothing(
    settings: Settings, small_tweets: Dataset, home: Path, servers: list[Served], tmp_path: Path
) -> None:
    with open_store(settings.db_url) as store:
        train(settings, dataset=small_tweets)
        # Forced: a busy machine can fail the gate's latency budget, not what this tests.
        promote(store, Registry(settings), "1", force=True, reason="test champion")
    # A first server at the head: the champion's copy is downloaded and authenticated.
    first = Served(home, tmp_path / "serve-1.log")
    servers.append(first)
    wait_for(lambda: first.code("/readyz") == 200, 120, "the first server ready")
    first.predict(["warm up"])
    assert first.stop() == 0, first.logs()

    # The schema one revision behind this code, as a new release finds it before its Job ran.
    engine = make_engine(settings.db_url)
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "-1")
    behind = schema_state(engine)
    engine.dispose()
    assert behind.status == "behind"

    second = Served(home, tmp_path / "serve-2.log", LOOPML_DB_AUTO_MIGRATE="false")
    servers.append(second)
    wait_for(lambda: second.code("/healthz") == 200, 120, "/healthz")
    # The champion loads (its recorded hashes are in a table the older schema has).
    wait_for(lambda: second.ready(), 60, "the champion loaded")
    ids = second.predict([f"@united lost my bag {i}" for i in range(20)])
    time.sleep(2)  # forty flush intervals: the writer tried, and left them on the spool
    readyz = second.get("/readyz")
    assert readyz is not None and readyz.status_code == 503
    assert "run `loopml db upgrade`" in readyz.json()["error"], readyz.text
    assert f"revision {behind.revision}" in readyz.json()["error"]
    assert logged(settings.db_url, ids) == 0
    assert schema_state(make_engine(settings.db_url)).revision == behind.revision  # not migrated
    spool = b"".join(p.read_bytes() for p in (home / "spool").glob("*.seg"))
    assert all(i.encode() in spool for i in ids)

    upgrade = subprocess.run(
        [sys.executable, "-m", "loopml", "db", "upgrade"],
        env=env_of(home),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert upgrade.returncode == 0, upgrade.stderr
    assert f"upgraded {behind.revision} -> {head_revision()}" in upgrade.stdout
    started = time.monotonic()
    wait_for(lambda: second.code("/readyz") == 200, 30, "/readyz 200 after the upgrade")
    wait_for(
        lambda: logged(settings.db_url, ids) == 20, 30, "every answered prediction in the database"
    )
    print(f"\n[db] ready {time.monotonic() - started:.1f} s after `loopml db upgrade`")
    assert second.stop() == 0, second.logs()
    assert "run `loopml db upgrade`" in second.logs()
