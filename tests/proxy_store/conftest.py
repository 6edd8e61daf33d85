"""Fixtures for the proxy's config store, spool and recorder: real Postgres and Redis."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import asyncpg
import pytest
import redis.asyncio as aioredis

from abgate.db import close_pool, create_pool
from abgate.embedded import EmbeddedServices

from .tcp_cut import TcpCut


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, min_size=1, max_size=5)
    yield pool
    await close_pool(pool)


@pytest.fixture
async def pg_relay(database_url: str) -> AsyncIterator[TcpCut]:
    """A cuttable relay in front of this test's Postgres."""
    relay = await TcpCut.for_url(database_url).start()
    yield relay
    await relay.close()


@pytest.fixture
async def relayed_pool(database_url: str, pg_relay: TcpCut) -> AsyncIterator[asyncpg.Pool]:
    """A pool whose connections go through ``pg_relay`` (cut it to take Postgres away)."""
    pool = await create_pool(
        pg_relay.url_through(database_url), min_size=0, max_size=5, timeout=2.0
    )
    yield pool
    pool.terminate()


@pytest.fixture
async def redis_relay(services: EmbeddedServices) -> AsyncIterator[TcpCut]:
    assert services.redis_url is not None
    relay = await TcpCut.for_url(services.redis_url).start()
    yield relay
    await relay.close()


@pytest.fixture
def closed_port() -> int:
    """A local port nothing listens on: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def dead_redis(closed_port: int) -> AsyncIterator[aioredis.Redis]:
    """A Redis client, with default settings, for a server that is not there."""
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{closed_port}/0")
    yield client
    await client.aclose()
