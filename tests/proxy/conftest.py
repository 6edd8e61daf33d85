"""Fixtures for proxy integration tests: a mock upstream, a running proxy, seeded experiments.

Experiments are written straight to Postgres and announced with
abgate.routing_protocol (bump + publish), exactly as the admin app does, so
these tests do not depend on the admin app.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from abgate import routing_protocol
from abgate.config import Settings
from abgate.crypto import KeyRing
from abgate.mock_upstream import MockConfig, MockServer, start_mock
from proxy.app import PROXY, ProxyState, create_runner

PUBLIC_ID = "partner/preview-foo"
PARTNER_KEY = "sk-partner-SECRET-0123456789abcdef"


@dataclass
class RunningProxy:
    url: str
    runner: web.AppRunner

    @property
    def state(self) -> ProxyState:
        state = self.runner.app[PROXY].state
        assert state is not None
        return state

    async def close(self) -> None:
        await self.runner.cleanup()


@dataclass
class SeededVariant:
    id: int
    label: str
    weight: int
    version_id: int
    internal_id: str


@dataclass
class Seeded:
    experiment_id: str
    public_model_id: str
    variants: list[SeededVariant] = field(default_factory=list)

    def by_internal_id(self, internal_id: str) -> SeededVariant:
        return next(v for v in self.variants if v.internal_id == internal_id)


def upstream_json(base_url: str, internal_id: str, api_kind: str, **extra: Any) -> dict[str, Any]:
    return {"internal_id": internal_id, "base_url": base_url, "api_kind": api_kind, **extra}


class Experiments:
    """Writes routing state the way the admin app does: commit, bump, publish."""

    def __init__(self, db: asyncpg.Connection, settings: Settings, redis: aioredis.Redis) -> None:
        self.db = db
        self.settings = settings
        self.redis = redis
        self.keyring = KeyRing(settings.encryption_keys)

    async def seed(
        self,
        mock: MockServer,
        *,
        api_kind: str = "chat_completions",
        public_model_id: str = PUBLIC_ID,
        weights: tuple[int, ...] = (1, 1),
        status: str = "active",
        upstream_extra: dict[str, Any] | None = None,
        api_key: str = PARTNER_KEY,
        base_url: str | None = None,
    ) -> Seeded:
        """An experiment with one variant per weight, each with one current version.

        ``base_url`` defaults to the mock under ``/partner/v1``.
        """
        base_url = base_url or f"{mock.url}/partner/v1"
        async with self.db.transaction():
            experiment_id = await self.db.fetchval(
                "INSERT INTO model_experiment (public_model_id, name, status, started_at)"
                " VALUES ($1, 'test', $2, now()) RETURNING id",
                public_model_id,
                status,
            )
            seeded = Seeded(str(experiment_id), public_model_id)
            for index, weight in enumerate(weights):
                label = f"variant-{chr(ord('a') + index)}"
                variant_id = await self.db.fetchval(
                    "INSERT INTO model_experiment_variant (experiment_id, label, weight)"
                    " VALUES ($1, $2, $3) RETURNING id",
                    experiment_id,
                    label,
                    weight,
                )
                internal_id = f"ckpt-{label}-internal-7f3e"
                upstream = upstream_json(base_url, internal_id, api_kind, **(upstream_extra or {}))
                version_id = await self._insert_version(variant_id, upstream, api_key)
                seeded.variants.append(
                    SeededVariant(variant_id, label, weight, version_id, internal_id)
                )
            await self._bump(public_model_id)
        await self._publish(public_model_id)
        return seeded

    async def _insert_version(
        self, variant_id: int, upstream: dict[str, Any], api_key: str, blob: Any = None
    ) -> int:
        version_id: int = await self.db.fetchval(
            "INSERT INTO model_experiment_variant_version"
            " (variant_id, upstream, encrypted_api_key) VALUES ($1, $2, $3) RETURNING id",
            variant_id,
            upstream,
            blob if blob is not None else self.keyring.encrypt(api_key),
        )
        return version_id

    async def hot_swap(
        self,
        seeded: Seeded,
        variant: SeededVariant,
        upstream: dict[str, Any],
        api_key: str = PARTNER_KEY,
        blob: Any = None,
    ) -> int:
        async with self.db.transaction():
            version_id = await self._insert_version(variant.id, upstream, api_key, blob)
            await self._bump(seeded.public_model_id)
        await self._publish(seeded.public_model_id)
        return version_id

    async def set_status(self, seeded: Seeded, status: str) -> None:
        async with self.db.transaction():
            await self.db.execute(
                "UPDATE model_experiment SET status = $2 WHERE id = $1",
                seeded.experiment_id,
                status,
            )
            await self._bump(seeded.public_model_id)
        await self._publish(seeded.public_model_id)

    async def _bump(self, public_model_id: str) -> None:
        self._last_version = await routing_protocol.bump_version(self.db, public_model_id)

    async def _publish(self, public_model_id: str) -> None:
        await self.redis.delete(
            routing_protocol.snapshot_key(self.settings.redis_namespace, public_model_id)
        )
        members = await routing_protocol.current_members(self.db)
        invalidation = routing_protocol.Invalidation(public_model_id, self._last_version, members)
        await self.redis.publish(
            routing_protocol.channel(self.settings.redis_namespace), invalidation.encode()
        )


@pytest.fixture
async def mock() -> AsyncIterator[MockServer]:
    server = await start_mock(MockConfig(chunks=4, wording="alpha beta gamma delta"))
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
def proxy_settings(settings: Settings, mock: MockServer, tmp_path: Path) -> Settings:
    """Test settings with the mock as the gateway and a private spool."""
    return dataclasses.replace(
        settings,
        gateway_url=mock.url,
        spool_dir=str(tmp_path / "spool"),
        drain_s=2.0,
    )


@pytest.fixture
async def start_proxy(
    database_url: str, mock: MockServer
) -> AsyncIterator[Callable[[Settings], Awaitable[RunningProxy]]]:
    """Start proxies (real AppRunner, port 0); all are stopped at teardown.

    Depends on the database and the mock so that proxies stop before those go away.
    """
    running: list[RunningProxy] = []

    async def start(settings: Settings) -> RunningProxy:
        runner = create_runner(settings)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        proxy = RunningProxy(f"http://127.0.0.1:{port}", runner)
        running.append(proxy)
        return proxy

    yield start
    for proxy in reversed(running):
        await proxy.close()


@pytest.fixture
async def experiments(
    db: asyncpg.Connection, settings: Settings, redis_client: aioredis.Redis
) -> Experiments:
    return Experiments(db, settings, redis_client)


@pytest.fixture
async def seed_experiment(
    experiments: Experiments, mock: MockServer
) -> Callable[..., Awaitable[Seeded]]:
    """Seed an experiment (committed and announced) before or after the proxy starts."""

    async def seed(**kwargs: Any) -> Seeded:
        return await experiments.seed(mock, **kwargs)

    return seed


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain client that never decompresses, so bytes can be compared exactly."""
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


async def _eventually(
    check: Callable[[], Awaitable[Any]], timeout: float = 5.0, interval: float = 0.02
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


@pytest.fixture
def eventually() -> Callable[..., Awaitable[Any]]:
    """``await eventually(check, timeout=5)``: poll ``check`` until it returns a truthy value."""
    return _eventually


@pytest.fixture
def wait_for_rows(db: asyncpg.Connection) -> Callable[..., Awaitable[list[asyncpg.Record]]]:
    async def wait(count: int = 1, timeout: float = 5.0) -> list[asyncpg.Record]:
        async def rows() -> list[asyncpg.Record] | None:
            found = await db.fetch(
                "SELECT u.*, r.variant_version_id, r.allocation_subject, r.subject_value,"
                " r.client_request_id, r.request_kind AS r_kind, r.system_prompt_sha256,"
                " r.request_body_sha256, r.was_truncated"
                " FROM usage u JOIN model_experiment_request r ON r.usage_id = u.id"
                " ORDER BY u.created_at"
            )
            return found if len(found) >= count else None

        result: list[asyncpg.Record] = await _eventually(rows, timeout)
        return result

    return wait


PartnerHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def partner() -> AsyncIterator[Callable[[PartnerHandler], Awaitable[str]]]:
    """Start a hand-written partner upstream; returns its base URL (``.../v1``)."""
    runners: list[web.AppRunner] = []

    async def start(handler: PartnerHandler) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}/v1"

    yield start
    for runner in runners:
        await runner.cleanup()
