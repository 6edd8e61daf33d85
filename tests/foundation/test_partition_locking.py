"""Creating a partition while a writer is mid-transaction never deadlocks.

A writer inserts the usage row and then the request row in one transaction;
partition creation must take its locks in the same order (usage first).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg

from abgate.db import connect

from . import rows


async def test_partition_creation_waits_for_a_writer_instead_of_deadlocking(
    database_url: str,
) -> None:
    setup = await connect(database_url)
    writer = await connect(database_url)
    creator = await connect(database_url)
    try:
        version_id = int((await rows.version(setup))["id"])
        now = datetime.now(UTC)
        async with writer.transaction():
            usage = await rows.usage(writer, created_at=now)
            # A month no test has created yet: creation has real work (and locks) to take.
            creating = asyncio.ensure_future(creator.fetchval(
                "SELECT abgate_ensure_request_partition($1)", datetime(2031, 7, 15, tzinfo=UTC)
            ))
            await asyncio.sleep(0.3)  # let the creator reach its first lock
            await asyncio.wait_for(
                rows.request(writer, version_id, usage_id=usage["id"], created_at=now), 10
            )
        assert await asyncio.wait_for(creating, 10) == "model_experiment_request_2031_07"
    except asyncpg.DeadlockDetectedError as exc:  # the failure this test exists for
        raise AssertionError("partition creation deadlocked with a writer") from exc
    finally:
        for conn in (setup, writer, creator):
            await conn.close()
