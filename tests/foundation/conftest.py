"""Fixtures for the foundation tests (schema, migrations, partitions, CLI, settings)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from abgate.db import connect
from abgate.embedded import EmbeddedServices, with_database

from . import rows


async def _admin_execute(admin_dsn: str, sql: str) -> None:
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(sql)
    finally:
        await admin.close()


@pytest.fixture(scope="module")
def shared_database_url(services: EmbeddedServices, template_db: str) -> Iterator[str]:
    """One migrated database for a whole module; tests use it through ``rollback_db``.

    Cloning the template costs far more than a constraint test itself, so the
    constraint tests share one clone and each runs inside a rolled-back transaction.
    """
    assert services.database_url is not None
    name = f"abgate_f_{uuid.uuid4().hex[:12]}"
    asyncio.run(
        _admin_execute(services.database_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    )
    yield with_database(services.database_url, name)
    asyncio.run(
        _admin_execute(services.database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    )


@pytest.fixture
async def rollback_db(shared_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the module's migrated database whose writes are rolled back."""
    conn = await connect(shared_database_url)
    transaction = conn.transaction()
    await transaction.start()
    try:
        yield conn
    finally:
        await transaction.rollback()
        await conn.close()


@pytest.fixture
async def empty_db(empty_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a database with no schema at all."""
    conn = await connect(empty_database_url)
    yield conn
    await conn.close()


@pytest.fixture
async def version_id(rollback_db: asyncpg.Connection) -> int:
    """A variant version (with its experiment and variant) that request rows can cite."""
    return int((await rows.version(rollback_db))["id"])
