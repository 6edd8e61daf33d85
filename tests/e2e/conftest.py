"""Fixtures for end-to-end tests: the admin app, proxies and mock upstreams, all in-process.

Real Postgres and Redis come from tests/conftest.py. Routing state is created
only through the admin HTTP API; proxies learn about it through the
admin → proxy invalidation protocol, as in production.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from e2e_support import ADMIN_TOKEN, AdminClient, RunningApp, StartApp, serve

from abgate.config import Settings
from abgate.mock_upstream import MockConfig, MockServer, start_mock
from admin.app import create_app as create_admin_app
from proxy.app import create_runner as create_proxy_runner


async def _mock(wording: str) -> MockServer:
    return await start_mock(MockConfig(chunks=3, wording=wording))


@pytest.fixture
async def mock_a() -> AsyncIterator[MockServer]:
    """A partner upstream."""
    server = await _mock("alpha beta gamma")
    yield server
    await server.close()


@pytest.fixture
async def mock_b() -> AsyncIterator[MockServer]:
    """A second partner upstream (hot-swap target)."""
    server = await _mock("delta epsilon zeta")
    yield server
    await server.close()


@pytest.fixture
async def gateway() -> AsyncIterator[MockServer]:
    """The LLM gateway stand-in that passthrough traffic goes to."""
    server = await _mock("gateway says hi")
    yield server
    await server.close()


@pytest.fixture
def e2e_settings(settings: Settings, gateway: MockServer) -> Settings:
    """Settings shared by both apps: bootstrap admin token, gateway, a short drain."""
    return dataclasses.replace(
        settings, admin_token=ADMIN_TOKEN, gateway_url=gateway.url, drain_s=2.0
    )


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def start_admin(
    database_url: str, client: aiohttp.ClientSession
) -> AsyncIterator[Callable[[Settings], Awaitable[AdminClient]]]:
    """Start admin apps on free ports; each is stopped at teardown."""
    running: list[RunningApp] = []

    async def start(settings: Settings) -> AdminClient:
        app = await serve(web.AppRunner(create_admin_app(settings), access_log=None))
        running.append(app)
        return AdminClient(client, app.url)

    yield start
    for app in reversed(running):
        await app.close()


@pytest.fixture
async def admin(
    start_admin: Callable[[Settings], Awaitable[AdminClient]], e2e_settings: Settings
) -> AdminClient:
    """The admin API of an admin app running with ``e2e_settings``."""
    return await start_admin(e2e_settings)


@pytest.fixture
async def start_proxy(
    database_url: str,
    mock_a: MockServer,
    mock_b: MockServer,
    gateway: MockServer,
    tmp_path: Path,
) -> AsyncIterator[StartApp]:
    """Start proxies (the production AppRunner, free port); all are stopped at teardown.

    Each proxy gets a spool directory of its own: spool files are named by pid,
    and these proxies share one process. Depends on the database and the mocks
    so that proxies stop before those go away.
    """
    running: list[RunningApp] = []

    async def start(settings: Settings) -> RunningApp:
        spool_dir = str(tmp_path / f"spool-{len(running)}")
        own_spool = dataclasses.replace(settings, spool_dir=spool_dir)
        proxy = await serve(create_proxy_runner(own_spool))
        running.append(proxy)
        return proxy

    yield start
    for proxy in reversed(running):
        await proxy.close()
