"""Postgres and Redis for a benchmark run: the machine's when configured, else embedded.

A fresh database is created (and migrated) for every run and dropped at the
end, so the row counts the harness checks start at zero.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from abgate.db import connect
from abgate.embedded import EmbeddedServices, start_postgres, start_redis, with_database
from abgate.migrations import ensure_partitions, migrate_up

__all__ = ["BenchServices", "count_rows", "start_services"]


@dataclass
class BenchServices:
    admin_dsn: str
    database_url: str
    database_name: str
    redis_url: str
    description: str  # where Postgres and Redis come from, for the report
    _pg_embedded: bool = False
    _embedded: EmbeddedServices | None = None
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    async def close(self) -> None:
        if not self._pg_embedded:  # an embedded server is deleted whole below
            conn = await connect(self.admin_dsn)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{self.database_name}" WITH (FORCE)')
            finally:
                await conn.close()
        if self._embedded is not None:
            self._embedded.stop()
        if self._tmp is not None:
            self._tmp.cleanup()


async def start_services() -> BenchServices:
    """Pick the services (env first), create and migrate a fresh database."""
    admin_dsn = os.environ.get("BENCH_DATABASE_URL") or os.environ.get(
        "ABGATE_TEST_DATABASE_URL")
    redis_url = os.environ.get("BENCH_REDIS_URL") or os.environ.get("ABGATE_TEST_REDIS_URL")
    pg_embedded = not admin_dsn
    redis_embedded = not redis_url
    embedded: EmbeddedServices | None = None
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if not admin_dsn or not redis_url:
        tmp = tempfile.TemporaryDirectory(prefix="abgate-bench-")
        embedded = EmbeddedServices()
        if not admin_dsn:
            admin_dsn = start_postgres(Path(tmp.name) / "pg", embedded, keep=False)
        if not redis_url:
            redis_url = start_redis(Path(tmp.name) / "redis", embedded)
    name = f"abgate_bench_{os.getpid()}_{secrets.token_hex(3)}"
    conn = await connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    dsn = with_database(admin_dsn, name)
    conn = await connect(dsn)
    try:
        await migrate_up(conn)
        await ensure_partitions(conn, ahead=2)
    finally:
        await conn.close()
    description = (f"Postgres {'embedded' if pg_embedded else 'of the machine'}, "
                   f"Redis {'embedded' if redis_embedded else 'of the machine'}")
    return BenchServices(admin_dsn, dsn, name, redis_url, description, pg_embedded,
                         embedded, tmp)


async def count_rows(database_url: str) -> tuple[int, int]:
    """Rows in ``usage`` and ``model_experiment_request``."""
    conn = await connect(database_url)
    try:
        usage = await conn.fetchval("SELECT count(*) FROM usage")
        requests = await conn.fetchval("SELECT count(*) FROM model_experiment_request")
    finally:
        await conn.close()
    return int(usage), int(requests)
