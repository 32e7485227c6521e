"""Fixtures every test can use: settings on an isolated database, an app, a client.

The suite runs on SQLite by default; with ``TOLLWAY_TEST_DATABASE_URL`` (and
``TOLLWAY_TEST_REDIS_URL``) set it runs, unchanged, on PostgreSQL and Redis.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy.engine import make_url

from tests.fixtures.databases import (
    DatabaseTemplate,
    build_postgres_template,
    build_sqlite_template,
)
from tollway.app import create_app
from tollway.config import Settings
from tollway.db import Database
from tollway.kit.clock import ManualClock

TEST_DATABASE_URL = os.environ.get("TOLLWAY_TEST_DATABASE_URL")
TEST_REDIS_URL = os.environ.get("TOLLWAY_TEST_REDIS_URL")
ON_POSTGRES = bool(TEST_DATABASE_URL)

#: When the suite's clock starts: a Thursday, mid-month, far from any DST change.
START = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if ON_POSTGRES:
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL: set TOLLWAY_TEST_DATABASE_URL (CI does)")
    for item in items:
        if "postgres_only" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def worker_name() -> str:
    """``gw0``, ``gw1``... under pytest-xdist, ``main`` without it (``-p no:xdist`` works)."""
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.fixture(scope="session")
def database_template(
    tmp_path_factory: pytest.TempPathFactory, worker_name: str
) -> DatabaseTemplate:
    if TEST_DATABASE_URL:
        return build_postgres_template(TEST_DATABASE_URL, worker_name)
    return build_sqlite_template(tmp_path_factory.mktemp("template"))


def _redis_url_for(worker: str) -> str | None:
    """Each xdist worker gets its own Redis database number so flushes don't collide:
    the URL's number + 1 + the worker's index (parallel runs can take disjoint ranges)."""
    if not TEST_REDIS_URL:
        return None
    url = make_url(TEST_REDIS_URL)
    index = int(worker[2:]) if worker.startswith("gw") else 0
    number = (int(url.database or 0) + 1 + index) % 16
    return url.set(database=str(number)).render_as_string(hide_password=False)


@pytest.fixture
async def settings(
    database_template: DatabaseTemplate, tmp_path: Path, worker_name: str
) -> Settings:
    redis_url = _redis_url_for(worker_name)
    if redis_url is not None:
        redis = Redis.from_url(redis_url)
        await redis.flushdb()
        await redis.aclose()
    return Settings(
        env="test",
        database_url=await database_template.fresh_url(tmp_path),
        redis_url=redis_url,
        data_dir=tmp_path / "data",
        migrate_on_start=False,
        run_worker_in_process=False,
        log_level="warning",
        secret_key="test-secret-key-for-the-suite-0123456789",
        api_key_pepper="test-api-key-pepper-0123456789abcdef",
        webhook_secret="test-webhook-secret-0123456789abcdef",
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def app_factory(settings: Settings, clock: ManualClock) -> Callable[..., Any]:
    """Builds more app instances on the same database (a second process, as it were)."""

    def build(**overrides: Any) -> FastAPI:
        return create_app(settings.model_copy(update=overrides), clock=clock)

    return build


@pytest.fixture
async def app(app_factory: Callable[..., FastAPI]) -> AsyncIterator[FastAPI]:
    application = app_factory()
    # asgi-lifespan's default 5 s start-up bound failed a start-up on a loaded two-core
    # machine; a start-up that never ends still fails, after a minute.
    async with LifespanManager(application, startup_timeout=60, shutdown_timeout=60):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture
def database(app: FastAPI) -> Database:
    db: Database = app.state.database
    return db
