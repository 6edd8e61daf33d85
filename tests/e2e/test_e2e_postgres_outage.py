"""Postgres going away under load loses no request row and duplicates none.

The proxy's pool reaches Postgres through a relay the test cuts (every
connection aborted, new ones refused) and restores. Routing config is cached
before the cut, so the proxy keeps serving; the recorder spools rows to disk and
replays them once Postgres is back.

DESIGN/issue 4 describe a 30 s outage; this test cuts for about 8 s, which
already spans several writer backoff rounds (capped at 5 s), to keep CI fast.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest
from e2e_support import AdminClient, StartApp, eventually, send_chat, upstream
from prometheus_client import REGISTRY
from proxy_store.tcp_cut import TcpCut

from abgate.config import Settings
from abgate.mock_upstream import MockServer

REQUESTS = 200
SEND_EVERY_S = 0.05  # 200 requests over about 10 s
CUT_AFTER_S = 1.0
CUT_FOR_S = 8.0


@pytest.fixture
async def pg_relay(database_url: str) -> AsyncIterator[TcpCut]:
    relay = await TcpCut.for_url(database_url).start()
    yield relay
    await relay.close()


def _recorder_rows(result: str) -> float:
    return REGISTRY.get_sample_value("abgate_recorder_rows_total", {"result": result}) or 0.0


async def test_rows_of_requests_served_while_postgres_was_down_all_arrive_once_it_returns(
    admin: AdminClient,
    start_proxy: StartApp,
    e2e_settings: Settings,
    database_url: str,
    pg_relay: TcpCut,
    client: aiohttp.ClientSession,
    db: asyncpg.Connection,
    mock_a: MockServer,
) -> None:
    await admin.live_experiment(
        [("a", 1, upstream(mock_a, "ckpt-a-1")), ("b", 1, upstream(mock_a, "ckpt-b-1"))]
    )
    proxy = await start_proxy(
        dataclasses.replace(e2e_settings, database_url=pg_relay.url_through(database_url))
    )
    assert await send_chat(client, proxy.url, "warm-up") == 200  # config now cached
    spilled_before, replayed_before = _recorder_rows("spilled"), _recorder_rows("replayed")

    async def one(n: int) -> int:
        await asyncio.sleep(n * SEND_EVERY_S)
        return await send_chat(
            client, proxy.url, f"machine-{n % 40}", client_request_id=f"load-{n}"
        )

    load = asyncio.gather(*(one(n) for n in range(REQUESTS)))
    await asyncio.sleep(CUT_AFTER_S)
    pg_relay.cut()
    await asyncio.sleep(CUT_FOR_S)
    pg_relay.restore()
    statuses = await load

    async def all_rows() -> list[asyncpg.Record] | None:
        rows = await db.fetch(
            "SELECT r.client_request_id FROM usage u"
            " JOIN model_experiment_request r ON r.usage_id = u.id"
            " WHERE r.client_request_id LIKE 'load-%'"
        )
        return rows if len(rows) >= REQUESTS else None

    rows = await eventually(all_rows, timeout=20.0, interval=0.2)
    assert statuses == [200] * REQUESTS
    assert sorted(row["client_request_id"] for row in rows) == sorted(
        f"load-{n}" for n in range(REQUESTS)
    )
    assert _recorder_rows("spilled") > spilled_before
    assert _recorder_rows("replayed") > replayed_before
