"""Fixtures for the admin app: an in-process server, tokens and small builders."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import AsyncIterator

import asyncpg
import pytest
from admin_api import ADMIN_TOKEN, VIEWER_TOKEN, Api, start_api

from abgate.config import Settings


@pytest.fixture
def admin_settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, admin_token=ADMIN_TOKEN)


@pytest.fixture
async def api(admin_settings: Settings) -> AsyncIterator[Api]:
    client = await start_api(admin_settings)
    yield Api(client, ADMIN_TOKEN)
    await client.close()


@pytest.fixture
async def viewer(api: Api, db: asyncpg.Connection) -> Api:
    await db.execute(
        "INSERT INTO admin_token (name, role, token_sha256) VALUES ('viewer-1', 'viewer', $1)",
        hashlib.sha256(VIEWER_TOKEN.encode()).hexdigest(),
    )
    return api.as_(VIEWER_TOKEN)


@pytest.fixture
def anonymous(api: Api) -> Api:
    return api.as_(None)
