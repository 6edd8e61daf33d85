"""Monthly request partitions: names, UTC month ranges, idempotence and routing of rows."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import asyncpg
import pytest

from abgate.db import connect
from abgate.migrations import MigrationError, ensure_partitions

from . import rows

DECEMBER_2030 = datetime(2030, 12, 15, 12, 0, tzinfo=UTC)
PLUS_ONE = timezone(timedelta(hours=1))


@pytest.fixture
def db(rollback_db: asyncpg.Connection) -> asyncpg.Connection:
    """Partition DDL is transactional: each test's partitions are rolled back."""
    return rollback_db


async def partitions(conn: asyncpg.Connection) -> dict[str, str]:
    """Partition name -> its bound expression, rendered in UTC."""
    async with conn.transaction():
        await conn.execute("SET LOCAL TimeZone = 'UTC'")
        found = await conn.fetch(
            """
            SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound
            FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = 'model_experiment_request'::regclass
            """
        )
    return {row["relname"]: row["bound"] for row in found}


async def test_ensure_creates_the_current_month_and_n_months_ahead(
    db: asyncpg.Connection,
) -> None:
    names = await ensure_partitions(db, ahead=3, now=DECEMBER_2030)
    assert names == [
        "model_experiment_request_2030_12",
        "model_experiment_request_2031_01",
        "model_experiment_request_2031_02",
        "model_experiment_request_2031_03",
    ]
    assert set(names) <= set(await partitions(db))


async def test_ensure_twice_creates_nothing_new(db: asyncpg.Connection) -> None:
    first = await ensure_partitions(db, ahead=3, now=DECEMBER_2030)
    existing = await partitions(db)

    second = await ensure_partitions(db, ahead=3, now=DECEMBER_2030)

    assert second == first
    assert await partitions(db) == existing


async def test_ahead_zero_creates_only_the_current_month(db: asyncpg.Connection) -> None:
    before = set(await partitions(db))
    names = await ensure_partitions(db, ahead=0, now=DECEMBER_2030)
    assert names == ["model_experiment_request_2030_12"]
    assert set(await partitions(db)) - before == {"model_experiment_request_2030_12"}


async def test_negative_ahead_is_refused(db: asyncpg.Connection) -> None:
    with pytest.raises(MigrationError, match="ahead"):
        await ensure_partitions(db, ahead=-1, now=DECEMBER_2030)


async def test_partition_ranges_are_utc_months_across_the_year_boundary(
    db: asyncpg.Connection,
) -> None:
    await ensure_partitions(db, ahead=1, now=DECEMBER_2030)
    bounds = await partitions(db)
    assert bounds["model_experiment_request_2030_12"] == (
        "FOR VALUES FROM ('2030-12-01 00:00:00+00') TO ('2031-01-01 00:00:00+00')"
    )
    assert bounds["model_experiment_request_2031_01"] == (
        "FOR VALUES FROM ('2031-01-01 00:00:00+00') TO ('2031-02-01 00:00:00+00')"
    )


async def test_partition_ranges_do_not_depend_on_the_session_time_zone(
    db: asyncpg.Connection,
) -> None:
    await db.execute("SET LOCAL TimeZone = 'Pacific/Kiritimati'")  # UTC+14
    await ensure_partitions(db, ahead=0, now=DECEMBER_2030)
    bound = (await partitions(db))["model_experiment_request_2030_12"]
    assert bound == "FOR VALUES FROM ('2030-12-01 00:00:00+00') TO ('2031-01-01 00:00:00+00')"


async def test_the_current_month_is_the_utc_month_of_now(db: asyncpg.Connection) -> None:
    # 00:30 on 1 January at UTC+1 is still 31 December in UTC.
    names = await ensure_partitions(db, ahead=0, now=datetime(2031, 1, 1, 0, 30, tzinfo=PLUS_ONE))
    assert names == ["model_experiment_request_2030_12"]


@pytest.mark.parametrize(
    ("created_at", "partition"),
    [
        (datetime(2030, 12, 1, tzinfo=UTC), "2030_12"),
        (datetime(2030, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), "2030_12"),
        (datetime(2031, 1, 1, 0, 30, tzinfo=PLUS_ONE), "2030_12"),
        (datetime(2031, 1, 1, tzinfo=UTC), "2031_01"),
        (datetime(2031, 2, 28, 23, 59, 59, tzinfo=UTC), "2031_02"),
        (datetime(2031, 3, 1, tzinfo=UTC), "2031_03"),
        (datetime(2031, 3, 31, 23, 59, 59, tzinfo=UTC), "2031_03"),
    ],
)
async def test_a_request_row_lands_in_the_partition_of_its_utc_month(
    db: asyncpg.Connection, version_id: int, created_at: datetime, partition: str
) -> None:
    await ensure_partitions(db, ahead=3, now=DECEMBER_2030)
    row = await rows.request(db, version_id, created_at=created_at)
    landed = await db.fetchval(
        "SELECT tableoid::regclass::text FROM model_experiment_request WHERE usage_id = $1",
        row["usage_id"],
    )
    assert landed == f"model_experiment_request_{partition}"


async def test_concurrent_ensure_calls_both_succeed(database_url: str) -> None:
    first, second = await connect(database_url), await connect(database_url)
    try:
        results = await asyncio.gather(
            ensure_partitions(first, ahead=3, now=DECEMBER_2030),
            ensure_partitions(second, ahead=3, now=DECEMBER_2030),
        )
        assert results[0] == results[1]
        assert set(results[0]) <= set(await partitions(first))
    finally:
        await first.close()
        await second.close()
