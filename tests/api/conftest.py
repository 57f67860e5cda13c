"""Fixtures of the serving tests: a small real registry, real servers on loopback, real DBs."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from serving_helpers import (
    ADMIN_TOKEN,
    POSTGRES_ENV,
    Server,
    TrainedRegistry,
    server_env,
    train_registry,
)


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainedRegistry:
    """Train two small real models once per session and make version 1 the champion."""
    return train_registry(tmp_path_factory.mktemp("registry"))


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


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, postgres_url: str | None) -> Iterator[dict[str, Any]]:
    """A fresh loopml database: SQLite under the server's home, or a dedicated PostgreSQL
    database (created and dropped here, so parallel runs never collide)."""
    if request.param == "sqlite":
        yield {"kind": "sqlite"}
        return
    if postgres_url is None:
        pytest.skip("LOOPML_TEST_POSTGRES_URL is not set")
    name = f"loopml_serving_{uuid.uuid4().hex[:10]}"
    admin = psycopg.connect(postgres_url, autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = postgres_url.rpartition("/")
    try:
        yield {"kind": "postgres", "url": f"{base}/{name}", "name": name, "admin": admin}
    finally:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()
