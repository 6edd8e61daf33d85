"""Postgres connection pool shared by the proxy and the admin app.

jsonb columns are decoded and encoded with orjson so that callers deal in
plain dicts, never in JSON strings.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import orjson

__all__ = ["close_pool", "connect", "create_pool", "init_connection"]


def _encode_json(value: Any) -> str:
    return orjson.dumps(value).decode()


async def init_connection(conn: asyncpg.Connection) -> None:
    """Register orjson codecs for json and jsonb on a new connection."""
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, schema="pg_catalog", encoder=_encode_json, decoder=orjson.loads
        )


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    command_timeout: float | None = 30.0,
    **kwargs: Any,
) -> asyncpg.Pool:
    """A pool whose connections speak jsonb as Python objects."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        command_timeout=command_timeout,
        init=init_connection,
        **kwargs,
    )
    assert pool is not None
    return pool


async def connect(dsn: str, **kwargs: Any) -> asyncpg.Connection:
    """A single connection with the same codecs as the pool."""
    conn = await asyncpg.connect(dsn, **kwargs)
    await init_connection(conn)
    return conn


async def close_pool(pool: asyncpg.Pool, grace_s: float = 5.0) -> None:
    """Close gracefully, but never hang shutdown on a connection that is not given back."""
    try:
        await asyncio.wait_for(pool.close(), grace_s)
    except TimeoutError:
        pool.terminate()
