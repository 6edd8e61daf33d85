"""Fixtures for the evidence tests: a pool, the admin app with tokens, a scratch spool."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from evidence_helpers import ADMIN_TOKEN, VIEWER_TOKEN

from abgate.config import Settings
from abgate.db import close_pool, create_pool
from admin.app import create_app


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, min_size=1, max_size=4)
    yield pool
    await close_pool(pool)


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


@pytest.fixture
def admin_settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, admin_token=ADMIN_TOKEN)


@pytest.fixture
async def admin(admin_settings: Settings, db: asyncpg.Connection) -> AsyncIterator[TestClient]:
    """The admin app; ADMIN_TOKEN is an admin, VIEWER_TOKEN a viewer."""
    await db.execute(
        "INSERT INTO admin_token (name, role, token_sha256) VALUES ('viewer-1', 'viewer', $1)",
        hashlib.sha256(VIEWER_TOKEN.encode()).hexdigest(),
    )
    client = TestClient(TestServer(create_app(admin_settings, static_dir=None)))
    await client.start_server()
    yield client
    await client.close()
