"""Fixtures of the serving tests: a small real registry, real servers on loopback, real DBs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from serving_helpers import ADMIN_TOKEN, POSTGRES_ENV, Server, TrainedRegistry, server_env

from loopml.config import load_settings
from loopml.data import Dataset, content_version, load_dataset


def _sample(tweets: Dataset, rows: int, seed: int) -> Dataset:
    frame = tweets.frame.sample(rows, random_state=seed).reset_index(drop=True)
    return Dataset(
        source=f"{tweets.source}#sample{seed}", frame=frame, version=content_version(frame)
    )


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainedRegistry:
    """Train two small real models once per session and make version 1 the champion."""
    from loopml.pipeline.train import train
    from loopml.registry import Registry
    from loopml.store import open_store

    home = tmp_path_factory.mktemp("registry")
    settings = load_settings(home=home, database_url=None, tracking_uri=None).prepare()
    tweets = load_dataset("builtin:tweets")
    versions = [train(settings, dataset=_sample(tweets, 3000, seed)).version for seed in (0, 1)]
    store = open_store(settings.db_url)
    Registry(settings).promote(store, versions[0], force=True, reason="serving tests")
    store.dispose()
    texts = tweets.frame["text"].sample(500, random_state=3).tolist()
    return TrainedRegistry(settings, versions, texts)


@pytest.fixture
def make_server(
    trained: TrainedRegistry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """Factory of servers, all stopped (SIGTERM, then SIGKILL) at the end of the test."""
    started: list[Server] = []

    def make(
        model_name: str | None = None,
        *,
        workers: int = 1,
        start: bool = True,
        home: Path | None = None,
        **settings: Any,
    ) -> Server:
        home = home or tmp_path_factory.mktemp("serve")
        name = model_name or trained.clone()[0]
        server = Server(home, server_env(trained, home, name, **settings), workers=workers)
        started.append(server)
        return server.start() if start else server

    yield make
    for server in started:
        try:
            server.stop(30)
        except AssertionError:
            server.kill()


@pytest.fixture(scope="session")
def main_server(
    trained: TrainedRegistry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One server shared by the endpoint tests: admin token set, no API keys, SQLite."""
    home = tmp_path_factory.mktemp("main-server")
    name, _ = trained.clone()
    server = Server(
        home,
        server_env(trained, home, name, admin_token=ADMIN_TOKEN, predlog_flush_interval_s=0.05),
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def client(main_server: Server) -> Iterator[httpx.Client]:
    """An HTTP client on the shared server."""
    with httpx.Client(base_url=main_server.url, timeout=30) as http:
        yield http


@pytest.fixture(scope="session")
def postgres_url() -> str | None:
    """The PostgreSQL URL of LOOPML_TEST_POSTGRES_URL, checked reachable (fail, never skip)."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        return None
    import sqlalchemy as sa

    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
    except Exception as exc:
        pytest.fail(f"{POSTGRES_ENV} is set but PostgreSQL is unreachable: {exc}")
    finally:
        engine.dispose()
    return url
