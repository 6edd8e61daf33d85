"""The admin's live stats agree with the rows the proxy recorded for the same traffic."""

from __future__ import annotations

from collections import Counter

import aiohttp
import asyncpg
from e2e_support import (
    AdminClient,
    StartApp,
    eventually,
    gather_limited,
    send_chat,
    sender_of,
    upstream,
)

from abgate.config import Settings
from abgate.mock_upstream import MockServer

MACHINES = [f"machine-{n}" for n in range(30)]


async def test_stats_count_every_proxied_request_under_the_version_that_served_it(
    admin: AdminClient,
    start_proxy: StartApp,
    e2e_settings: Settings,
    client: aiohttp.ClientSession,
    db: asyncpg.Connection,
    mock_a: MockServer,
) -> None:
    experiment = await admin.live_experiment(
        [("a", 1, upstream(mock_a, "ckpt-a-1")), ("b", 1, upstream(mock_a, "ckpt-b-1"))]
    )
    proxy = await start_proxy(e2e_settings)
    sent = 0

    async def wave(tag: str) -> None:
        nonlocal sent
        statuses = await gather_limited(
            send_chat(client, proxy.url, machine, client_request_id=f"{tag}-{machine}")
            for machine in MACHINES
        )
        assert statuses == [200] * len(MACHINES)
        sent += len(statuses)

    await wave("first")
    on_a = next(sender_of(r) for r in mock_a.requests if r.json()["model"] == "ckpt-a-1")
    await admin.add_version(experiment.variants[0].id, upstream(mock_a, "ckpt-a-2"))

    async def swapped() -> bool:
        nonlocal sent
        assert await send_chat(client, proxy.url, on_a.removeprefix("first-")) == 200
        sent += 1
        return bool(mock_a.requests[-1].json()["model"] == "ckpt-a-2")

    await eventually(swapped, timeout=1.0)
    await wave("second")

    async def recorded() -> list[asyncpg.Record] | None:
        rows = await db.fetch(
            "SELECT r.variant_version_id, x.variant_id FROM usage u"
            " JOIN model_experiment_request r ON r.usage_id = u.id"
            " JOIN model_experiment_variant_version x ON x.id = r.variant_version_id"
        )
        return rows if len(rows) >= sent else None

    rows = await eventually(recorded, timeout=5.0)
    stats = await admin.ok("GET", f"/api/experiments/{experiment.id}/stats")

    assert len(rows) == sent
    rows_per_version = Counter(row["variant_version_id"] for row in rows)
    rows_per_variant = Counter(row["variant_id"] for row in rows)
    assert len(rows_per_version) == 3  # a before and after the swap, and b
    assert {
        v["variant_version_id"]: v["totals"]["requests"] for v in stats["versions"]
    } == rows_per_version
    assert {v["variant_id"]: v["totals"]["requests"] for v in stats["variants"]} == rows_per_variant
    assert sum(v["totals"]["requests"] for v in stats["versions"]) == sent
