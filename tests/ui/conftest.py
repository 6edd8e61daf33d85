"""Fixtures for the browser tests: the real admin app in-process, a mock upstream,
and headless Debian Chromium driven by Playwright's async API.

Playwright is used only as a driver: its browser downloads are never used, the
system ``chromium`` package is launched by path (``bin/test`` installs it).
Without Chromium the tests fail with the install command: a machine without a
browser must not pass silently.

``ABGATE_UI_SCREENS_DIR``, when set, receives one screenshot per page (for review).
A failing test leaves a screenshot in ``tests/ui/artifacts/``.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import shutil
from collections.abc import AsyncIterator, Generator
from pathlib import Path
from typing import Final

import asyncpg
import pytest
import pytest_asyncio
from aiohttp import web
from playwright.async_api import Browser, Page, async_playwright
from ui_support import ADMIN_TOKEN

from abgate.config import Settings
from abgate.db import connect
from abgate.mock_upstream import MockServer, start_mock
from admin.app import create_app
from proxy.app import create_runner

CHROMIUM = os.environ.get("ABGATE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember whether the test body failed, for the screenshot in ``page``."""
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


@pytest.fixture
def ui_settings(settings: Settings) -> Settings:
    """The ``settings`` fixture's values plus a bootstrap admin token, read from env."""
    keys = ",".join(
        f"{k.kid}:{base64.b64encode(k.key).decode()}" for k in settings.encryption_keys
    )
    env = {
        "ABGATE_DATABASE_URL": settings.database_url or "",
        "ABGATE_REDIS_URL": settings.redis_url or "",
        "ABGATE_REDIS_NAMESPACE": settings.redis_namespace,
        "ABGATE_ENCRYPTION_KEYS": keys,
        "ABGATE_ALLOW_INSECURE_UPSTREAM": "1" if settings.allow_insecure_upstream else "0",
        "ABGATE_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    return Settings.from_env(env)


# The browser is started once per session (per xdist worker) and lives in the session's
# event loop, so every fixture that touches it, and the tests (pytestmark in the test
# module), run in that loop too. Fixtures that only return plain values (database_url,
# settings) may run in any loop.
SESSION_LOOP: Final = "session"


@pytest_asyncio.fixture(loop_scope=SESSION_LOOP)
async def admin_url(ui_settings: Settings) -> AsyncIterator[str]:
    """The real admin app on an ephemeral loopback port."""
    runner = web.AppRunner(create_app(ui_settings), access_log=None)
    try:
        yield await _serve(runner)
    finally:
        await runner.cleanup()


async def _serve(runner: web.AppRunner) -> str:
    """Start ``runner`` on an ephemeral loopback port; returns its base URL."""
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    return f"http://127.0.0.1:{port}"


@pytest_asyncio.fixture(loop_scope=SESSION_LOOP)
async def proxy_url(ui_settings: Settings, tmp_path: Path) -> AsyncIterator[str]:
    """The real proxy app, recording into the test's database."""
    runner = create_runner(dataclasses.replace(ui_settings, spool_dir=str(tmp_path / "spool")))
    try:
        yield await _serve(runner)
    finally:
        await runner.cleanup()


@pytest_asyncio.fixture(loop_scope=SESSION_LOOP)
async def ui_db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the test's database in the session loop (``db`` is per-test loop)."""
    conn = await connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest_asyncio.fixture(loop_scope=SESSION_LOOP)
async def mock_upstream() -> AsyncIterator[MockServer]:
    server = await start_mock()
    try:
        yield server
    finally:
        await server.close()


@pytest_asyncio.fixture(scope="session", loop_scope=SESSION_LOOP)
async def browser() -> AsyncIterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"there is no Chromium at {CHROMIUM}; run bin/test or apt-get install chromium")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest_asyncio.fixture(loop_scope=SESSION_LOOP)
async def page(browser: Browser, request: pytest.FixtureRequest) -> AsyncIterator[Page]:
    """A fresh browser context (so a fresh sessionStorage) and page.

    Uncaught script errors fail the test; a failed test leaves a screenshot.
    """
    context = await browser.new_context(viewport={"width": 1280, "height": 900},
                                        accept_downloads=True)
    context.set_default_timeout(10_000)
    page = await context.new_page()
    script_errors: list[str] = []
    page.on("pageerror", lambda exc: script_errors.append(str(exc)))
    try:
        yield page
        if request.node.stash.get(_FAILED, False):
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"),
                                  full_page=True)
        assert not script_errors, f"uncaught script errors in the page: {script_errors}"
    finally:
        await context.close()
