"""Test harness: real Postgres and Redis, one isolated database and namespace per test.

Servers come from ``ABGATE_TEST_DATABASE_URL`` / ``ABGATE_TEST_REDIS_URL``; when
unset, embedded ones (pip wheels) start once per session. Each test gets a fresh
database cloned from a migrated template (fast) and a unique Redis namespace.
"""

from __future__ import annotations

import asyncio
import os
import queue
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from abgate.config import Settings
from abgate.embedded import EmbeddedServices, start_postgres, start_redis, with_database
from abgate.migrations import ensure_partitions, migrate_up

TEST_KEYS = (
    "test1:" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="  # 32 ascii bytes, test only
)


@pytest.fixture(scope="session")
def services() -> Iterator[EmbeddedServices]:
    """Server URLs for the session: the machine's if given, else embedded ones."""
    embedded = EmbeddedServices(
        database_url=os.environ.get("ABGATE_TEST_DATABASE_URL") or None,
        redis_url=os.environ.get("ABGATE_TEST_REDIS_URL") or None,
    )
    workdir = Path(tempfile.mkdtemp(prefix="abgate-test-"))
    try:
        if embedded.database_url is None:
            start_postgres(workdir / "pg", embedded, keep=False)
        if embedded.redis_url is None:
            start_redis(workdir / "redis", embedded)
        yield embedded
    finally:
        embedded.stop()


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.fixture(scope="session")
def template_db(services: EmbeddedServices) -> Iterator[str]:
    """A migrated template database cloned by every test's database."""
    assert services.database_url is not None
    name = f"abgate_tpl_{_worker()}_{uuid.uuid4().hex[:8]}"

    async def create() -> None:
        admin = await asyncpg.connect(services.database_url)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        conn = await asyncpg.connect(with_database(services.database_url, name))
        try:
            await migrate_up(conn)
            await ensure_partitions(conn, ahead=2)
        finally:
            await conn.close()

    asyncio.run(create())
    yield name
    asyncio.run(_drop(services.database_url, name))


async def _drop(admin_dsn: str, name: str) -> None:
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def _create_database(admin_dsn: str, name: str, template: str | None) -> str:
    admin = await asyncpg.connect(admin_dsn)
    try:
        clause = f' TEMPLATE "{template}"' if template else ""
        await admin.execute(f'CREATE DATABASE "{name}"{clause}')
    finally:
        await admin.close()
    return with_database(admin_dsn, name)


class _Dropper:
    """Drops finished tests' databases on a background thread.

    DROP DATABASE waits for a checkpoint; doing it off the test's critical path
    keeps per-test isolation cheap.
    """

    def __init__(self, admin_dsn: str) -> None:
        self._admin_dsn = admin_dsn
        self._names: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="db-dropper", daemon=True)
        self._thread.start()

    def drop(self, name: str) -> None:
        self._names.put(name)

    def close(self) -> None:
        self._names.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (name := self._names.get()) is not None:
            asyncio.run(_drop(self._admin_dsn, name))


@pytest.fixture(scope="session")
def dropper(services: EmbeddedServices) -> Iterator[_Dropper]:
    assert services.database_url is not None
    dropper = _Dropper(services.database_url)
    yield dropper
    dropper.close()


@pytest.fixture
async def database_url(
    services: EmbeddedServices, template_db: str, dropper: _Dropper
) -> AsyncIterator[str]:
    """A fresh, migrated database for this test only."""
    assert services.database_url is not None
    name = f"abgate_t_{uuid.uuid4().hex[:12]}"
    yield await _create_database(services.database_url, name, template_db)
    dropper.drop(name)


@pytest.fixture
async def empty_database_url(services: EmbeddedServices, dropper: _Dropper) -> AsyncIterator[str]:
    """A fresh database with no schema at all (for migration tests)."""
    assert services.database_url is not None
    name = f"abgate_e_{uuid.uuid4().hex[:12]}"
    yield await _create_database(services.database_url, name, None)
    dropper.drop(name)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    from abgate.db import connect

    conn = await connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture
def redis_namespace() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def redis_client(services: EmbeddedServices) -> AsyncIterator[aioredis.Redis]:
    assert services.redis_url is not None
    client = aioredis.Redis.from_url(services.redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def settings(
    database_url: str, services: EmbeddedServices, redis_namespace: str
) -> Settings:
    """Settings for this test's database and Redis namespace, with a test key."""
    env = {
        "ABGATE_DATABASE_URL": database_url,
        "ABGATE_REDIS_URL": services.redis_url or "",
        "ABGATE_REDIS_NAMESPACE": redis_namespace,
        "ABGATE_ENCRYPTION_KEYS": TEST_KEYS,
        "ABGATE_ALLOW_INSECURE_UPSTREAM": "1",
    }
    return Settings.from_env(env)
