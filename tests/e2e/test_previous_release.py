"""The previous release's code on the newest schema, as after a ``kubectl rollout undo``.

The previous release is the code of the commit before the newest migration was added (``git
archive`` of it, run from the same virtual environment with PYTHONPATH pointing at its ``src``).
This code migrates the database to its head; then the previous release's ``loopml serve`` opens
it, serves and logs predictions, takes feedback, and its CLI writes and reads the audit log. It
works because migrations are additive (``src/loopml/store/migrations/env.py``). On SQLite and on
PostgreSQL. Needs the repository's git history (CI clones it whole).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from serving_helpers import free_port, wait_for
from sqlalchemy import text

from loopml.config import Settings, load_settings
from loopml.control.promotion import promote
from loopml.data import Dataset
from loopml.pipeline.train import train
from loopml.registry import Registry
from loopml.store import open_store
from loopml.store._db import head_revision, make_engine, schema_state

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
VERSIONS = Path("src/loopml/store/migrations/versions")


def git(*args: str) -> str:
    if shutil.which("git") is None:
        pytest.fail("git is not installed: this test runs the previous release from git history")
    proc = subprocess.run(
        ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    if proc.returncode != 0:
        pytest.fail(
            f"git {' '.join(args)} failed ({proc.stderr.strip()}): this test needs the"
            " repository's git history (a full clone; `git fetch --unshallow` in a shallow one)"
        )
    return proc.stdout


def newest_migration() -> Path:
    """The migration file of this code's head revision."""
    head = head_revision()
    for path in sorted((REPO / VERSIONS).glob("*.py")):
        if re.search(rf'^revision = "{re.escape(head)}"$', path.read_text(), re.M):
            return path.relative_to(REPO)
    pytest.fail(f"no migration file in {VERSIONS} has revision {head}")


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """(commit, its src folder): the code before the newest migration was added."""
    migration = newest_migration()
    added = git("log", "--format=%H", "--diff-filter=A", "--", str(migration)).split()
    if not added:
        pytest.fail(
            f"git log finds no commit adding {migration}: this test needs the repository's git"
            " history with that file committed (a full clone; `git fetch --unshallow`)"
        )
    commit = git("rev-parse", "--verify", f"{added[-1]}^").strip()
    out = tmp_path_factory.mktemp("previous-release")
    archive = out / "src.tar"
    with archive.open("wb") as fh:
        proc = subprocess.run(
            ["git", "archive", "--format=tar", commit, "src"], cwd=REPO, stdout=fh, check=False
        )
    if proc.returncode != 0:
        pytest.fail(f"git archive {commit} src failed: the git history is incomplete")
    with tarfile.open(archive) as tar:
        tar.extractall(out, filter="data")
    src = out / "src"
    assert not (src / migration.relative_to("src")).exists()
    return commit, src


@pytest.fixture(params=["sqlite", "postgres"])
def settings_on(
    request: pytest.FixtureRequest, home: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """The loopml database on SQLite or PostgreSQL (MLflow's store stays SQLite in the home)."""
    if request.param == "postgres":
        monkeypatch.setenv("LOOPML_DATABASE_URL", request.getfixturevalue("postgres_db"))
    return load_settings().prepare()


@pytest.fixture
def old_env(settings_on: Settings, previous_release: tuple[str, Path]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPML_")}
    return {
        **env,
        "PYTHONPATH": str(previous_release[1]),
        "LOOPML_HOME": str(settings_on.home),
        "LOOPML_DATABASE_URL": settings_on.db_url,
        "LOOPML_PREDLOG_FLUSH_INTERVAL_S": "0.05",
    }


@pytest.fixture
def old_server(old_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[[], tuple[str, Path]]]:
    """Starts the previous release's ``loopml serve`` (stopped at the end): (its URL, its log)."""
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> tuple[str, Path]:
        port = free_port()
        log = tmp_path / "old-serve.log"
        with log.open("wb") as out:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "loopml", "serve", "--port", str(port)],
                    env=old_env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        return f"http://127.0.0.1:{port}", log

    yield start
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def old_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loopml", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_previous_release_serves_and_logs_on_the_newest_schema(
    settings_on: Settings,
    small_tweets: Dataset,
    previous_release: tuple[str, Path],
    old_env: dict[str, str],
    old_server: Callable[[], tuple[str, Path]],
) -> None:
    settings = settings_on
    commit, old_src = previous_release
    # This code: the schema at its head, a champion trained and promoted.
    with open_store(settings.db_url) as store:
        assert schema_state(store.engine).revision == head_revision()
        # mask_identity's preprocessor is newer than the previous release: a model pickled with
        # it cannot load there (a rollback of code across it needs a model without it)
        train(settings, dataset=small_tweets, params={"mask_identity": False})
        # Forced: a busy machine can fail the gate's latency budget, not what this tests.
        promote(store, Registry(settings), "1", force=True, reason="test champion")
    probe = old_cli(old_env, "--help")
    assert probe.returncode == 0, probe.stderr
    print(f"\n[previous release] {commit[:12]} from {old_src} against schema {head_revision()}")

    url, log = old_server()

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(ready, 120, f"the previous release's /readyz ({log})")
    texts = ["@united lost my bag again", "what a great phone", "the car drives itself"]
    r = httpx.post(f"{url}/v1/predict", json={"texts": texts * 4}, timeout=30)
    assert r.status_code == 200, r.text
    ids = [p["request_id"] for p in r.json()["predictions"]]
    for request_id in ids[:3]:
        fb = httpx.post(
            f"{url}/v1/feedback", json={"request_id": request_id, "label": "negative"}, timeout=30
        )
        assert fb.status_code in (200, 201), fb.text

    engine = make_engine(settings.db_url)
    try:

        def stored() -> bool:
            with engine.connect() as conn:
                rows = conn.execute(text("SELECT request_id FROM predictions")).scalars()
                return set(ids) <= set(rows)

        wait_for(stored, 30, "the previous release's predictions in the database")
        with engine.connect() as conn:
            labels = conn.execute(text("SELECT request_id, label FROM feedback")).all()
        assert dict(labels) == dict.fromkeys(ids[:3], "negative")
    finally:
        engine.dispose()

    # Its CLI writes an audit record and reads the audit log back.
    forget = old_cli(old_env, "data", "forget", "--request-id", ids[-1], "--reason", "rollback")
    assert forget.returncode == 0, forget.stderr
    history = old_cli(old_env, "history", "--json")
    assert history.returncode == 0, history.stderr
    entries = json.loads(history.stdout)
    assert len(entries) >= 2, entries  # this code's promotion, the previous release's record
    assert "forget" in entries[0]["action"], entries

    logs = log.read_text(errors="replace")
    assert "Traceback" not in logs, logs[-3000:]
    engine = make_engine(settings.db_url)
    try:
        assert schema_state(engine).revision == head_revision()  # left at the newest revision
    finally:
        engine.dispose()
