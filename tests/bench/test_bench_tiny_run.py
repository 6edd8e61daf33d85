"""A one-second benchmark run through a real proxy: every request served has its row.

The harness's own machinery end to end, in process: experiments seeded the
way ``bench.run`` falls back to (SQL + routing version bump), the load
generator with its answer checks, and the row count it compares against.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from abgate.config import Settings
from abgate.crypto import KeyRing
from abgate.mock_upstream import MockConfig, MockServer, start_mock
from bench.loadgen import LoadSpec, expected_text, run_load
from bench.seed import ExperimentSpec, seed_via_sql
from bench.services import count_rows
from proxy.app import create_runner

PREVIEW = "bench/preview-tiny"
CHUNKS = 5


@pytest.fixture
async def mock() -> AsyncIterator[MockServer]:
    server = await start_mock(MockConfig(chunks=CHUNKS))
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def proxy_url(settings: Settings, mock: MockServer, tmp_path: Path,
                    database_url: str) -> AsyncIterator[str]:
    await seed_via_sql(database_url, KeyRing(settings.encryption_keys),
                       [ExperimentSpec(PREVIEW, f"{mock.url}/v1")])
    runner = create_runner(dataclasses.replace(
        settings, gateway_url=mock.url, spool_dir=str(tmp_path / "spool"), drain_s=2.0))
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1/chat/completions"
    finally:
        await runner.cleanup()


async def _rows_after_flush(database_url: str, expected: int, within_s: float = 10.0) -> int:
    deadline = time.monotonic() + within_s
    while True:
        usage, requests = await count_rows(database_url)
        if min(usage, requests) >= expected or time.monotonic() > deadline:
            return min(usage, requests)
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_rows_written_equal_experiment_requests_served(
        proxy_url: str, database_url: str, stream: bool) -> None:
    result = await run_load(LoadSpec(
        url=proxy_url, model=PREVIEW, duration_s=1.0, concurrency=4, stream=stream,
        expect_text=expected_text(CHUNKS), expect_model=PREVIEW))
    assert result.errors == 0, result.error_samples
    assert result.total_requests > 0
    assert await _rows_after_flush(database_url, result.total_requests) == result.total_requests


async def test_passthrough_requests_write_no_rows(proxy_url: str, database_url: str) -> None:
    result = await run_load(LoadSpec(
        url=proxy_url, model="bench/production-model", duration_s=0.3, concurrency=2,
        expect_text=expected_text(CHUNKS), expect_model="bench/production-model"))
    assert result.errors == 0 and result.total_requests > 0
    assert await count_rows(database_url) == (0, 0)
