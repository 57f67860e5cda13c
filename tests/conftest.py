"""Shared fixtures: an isolated LOOPML_HOME, small real datasets, and database back-ends."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from label_studio_server import label_studio  # noqa: F401  (a session's real Label Studio)
from sklearn.model_selection import train_test_split

from loopml.config import Settings, get_settings, load_settings
from loopml.data import Dataset, content_version, load_dataset

POSTGRES_ENV = "LOOPML_TEST_POSTGRES_URL"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every test starts without LOOPML_* settings from the caller's shell, in its own folder."""
    for key in list(os.environ):
        if key.startswith("LOOPML_") and key != POSTGRES_ENV:
            monkeypatch.delenv(key)
    monkeypatch.setenv("LOOPML_CONFIG", str(tmp_path / "loopml.toml"))
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh LOOPML_HOME, also exported for CLI runs."""
    path = tmp_path / "home"
    monkeypatch.setenv("LOOPML_HOME", str(path))
    return path


@pytest.fixture
def settings(home: Path) -> Settings:
    """Settings on the embedded SQLite stores under ``home``."""
    return load_settings().prepare()


@pytest.fixture(scope="session")
def tweets() -> Dataset:
    """The whole built-in corpus (validated)."""
    return load_dataset("builtin:tweets")


def sample_dataset(tweets: Dataset, rows: int, *, seed: int = 0) -> Dataset:
    """A stratified sample of the built-in corpus as its own dataset version."""
    frame, _ = train_test_split(
        tweets.frame, train_size=rows, random_state=seed, stratify=tweets.frame["label"]
    )
    frame = frame.sort_index()
    return Dataset(
        source=f"builtin:tweets[sample {rows}]", frame=frame, version=content_version(frame)
    )


@pytest.fixture(scope="session")
def small_tweets(tweets: Dataset) -> Dataset:
    """About 4,000 real tweets: trains in a second or two."""
    return sample_dataset(tweets, 4000)


@pytest.fixture(scope="session")
def postgres_server_url() -> str | None:
    """The PostgreSQL of LOOPML_TEST_POSTGRES_URL; unset means skip, unreachable means fail."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        return None
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        pytest.fail(f"{POSTGRES_ENV}={url} is set but unreachable: {exc}")
    return url


def _admin(url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


@pytest.fixture
def postgres_db(postgres_server_url: str | None) -> Iterator[str]:
    """A new, empty PostgreSQL database for one test, dropped afterwards."""
    if postgres_server_url is None:
        pytest.skip(f"{POSTGRES_ENV} not set")
    name = f"loopml_t_{uuid.uuid4().hex[:10]}"
    _admin(postgres_server_url, f'CREATE DATABASE "{name}"')
    base = postgres_server_url.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        _admin(postgres_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def backend_settings(
    request: pytest.FixtureRequest, home: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """Settings on SQLite, then on PostgreSQL (both the MLflow store and the loopml DB)."""
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_db")
        monkeypatch.setenv("LOOPML_TRACKING_URI", url)
        monkeypatch.setenv("LOOPML_DATABASE_URL", url)
    return load_settings().prepare()
