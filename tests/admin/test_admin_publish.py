"""Cache publication: routing versions bump in the transaction, invalidations after commit."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator

import asyncpg
import pytest
import redis.asyncio as aioredis
from admin_api import ADMIN_TOKEN, API_KEY, Api, start_api, upstream
from prometheus_client import REGISTRY

from abgate.config import Settings
from abgate.routing_protocol import Invalidation, channel, snapshot_key


class Subscriber:
    def __init__(self, pubsub: aioredis.client.PubSub) -> None:
        self.pubsub = pubsub

    async def next(self, timeout: float = 5.0) -> Invalidation:
        async with asyncio.timeout(timeout):
            while True:
                message = await self.pubsub.get_message(ignore_subscribe_messages=True,
                                                        timeout=timeout)
                if message is not None:
                    return Invalidation.decode(message["data"])

    async def assert_silent(self) -> None:
        message = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        assert message is None


@pytest.fixture
async def invalidations(
    redis_client: aioredis.Redis, redis_namespace: str
) -> AsyncIterator[Subscriber]:
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(channel(redis_namespace))
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    yield Subscriber(pubsub)
    await pubsub.aclose()


async def test_routing_mutations_publish_strictly_increasing_versions(
    api: Api, invalidations: Subscriber
) -> None:
    experiment = await api.ready_experiment("partner/preview-pub")
    await invalidations.next()  # the two version inserts of the draft
    await invalidations.next()
    variant_id = experiment["variants"][0]["id"]
    steps = [
        ("POST", f"/api/experiments/{experiment['id']}/activate", None),
        ("POST", f"/api/variants/{variant_id}/versions", {"upstream": upstream(internal_id="v2")}),
        ("POST", f"/api/variants/{variant_id}/rotate-key", {"api_key": "sk-rotated"}),
        ("POST", f"/api/experiments/{experiment['id']}/pause", None),
        ("POST", f"/api/experiments/{experiment['id']}/activate", None),
        ("POST", f"/api/experiments/{experiment['id']}/complete", None),
    ]
    received = []
    for method, path, body in steps:
        reply = await api.call(method, path, body)
        assert reply.status in (200, 201), reply.text
        received.append(await invalidations.next())
    versions = [m.version for m in received]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    assert {m.public_model_id for m in received} == {"partner/preview-pub"}
    assert received[0].members == {"partner/preview-pub"}
    assert received[-1].members == frozenset()


async def test_the_published_version_is_the_committed_one(
    api: Api, invalidations: Subscriber, db: asyncpg.Connection
) -> None:
    experiment = await api.ready_experiment("partner/preview-v")
    await invalidations.next()
    await invalidations.next()
    await api.post(f"/api/experiments/{experiment['id']}/activate")
    message = await invalidations.next()
    stored = await db.fetchval(
        "SELECT version FROM routing_config_version WHERE public_model_id = $1",
        "partner/preview-v")
    assert message.version == stored


async def test_publication_drops_the_cached_snapshot(
    api: Api, invalidations: Subscriber, redis_client: aioredis.Redis, redis_namespace: str
) -> None:
    experiment = await api.ready_experiment("partner/preview-snap")
    key = snapshot_key(redis_namespace, "partner/preview-snap")
    await redis_client.set(key, b"stale")
    await api.post(f"/api/experiments/{experiment['id']}/activate")
    assert await redis_client.exists(key) == 0


async def test_non_routing_mutations_neither_bump_nor_publish(
    api: Api, db: asyncpg.Connection, redis_client: aioredis.Redis, redis_namespace: str
) -> None:
    experiment = await api.active_experiment("partner/preview-quiet")
    bumped = await db.fetchval("SELECT max(version) FROM routing_config_version")
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(channel(redis_namespace))
    await pubsub.get_message(timeout=1)
    quiet = Subscriber(pubsub)
    try:
        eid, vid = experiment["id"], experiment["variants"][0]["id"]
        assert (await api.patch(f"/api/experiments/{eid}", {"name": "n", "description": "d"})
                ).status == 200
        assert (await api.patch(f"/api/variants/{vid}", {"label": "relabelled"})).status == 200
        await api.post(f"/api/experiments/{eid}/pause")
        await quiet.next()  # pause is routing-affecting
        paused_version = await db.fetchval("SELECT max(version) FROM routing_config_version")
        assert (await api.post(f"/api/experiments/{eid}/archive", {"archived": True})
                ).status == 200
        assert (await api.post(f"/api/experiments/{eid}/pause")).status == 200  # no-op
        await quiet.assert_silent()
        assert await db.fetchval("SELECT max(version) FROM routing_config_version") == \
            paused_version
        assert paused_version == bumped + 1
    finally:
        await pubsub.aclose()


async def test_redis_down_the_mutation_still_succeeds_and_is_counted(
    admin_settings: Settings, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    settings = dataclasses.replace(admin_settings, redis_url="redis://127.0.0.1:1/0")
    before = REGISTRY.get_sample_value("abgate_admin_publish_failures_total") or 0.0
    client = await start_api(settings)
    try:
        api = Api(client, ADMIN_TOKEN)
        with caplog.at_level(logging.INFO):
            experiment = await api.active_experiment("partner/preview-down")
            reply = await api.post(
                f"/api/variants/{experiment['variants'][0]['id']}/rotate-key",
                {"api_key": "sk-while-redis-is-down"})
        assert reply.status == 201
        assert experiment["status"] == "active"
        after = REGISTRY.get_sample_value("abgate_admin_publish_failures_total") or 0.0
        assert after - before == 4  # two versions, the activation and the rotation
        assert await db.fetchval(
            "SELECT version FROM routing_config_version WHERE public_model_id = $1",
            "partner/preview-down") is not None
        assert "not published" in caplog.text
        for secret in (API_KEY, "sk-while-redis-is-down", ADMIN_TOKEN):
            assert secret not in caplog.text
    finally:
        await client.close()


async def test_without_redis_configured_mutations_succeed(admin_settings: Settings) -> None:
    settings = dataclasses.replace(admin_settings, redis_url=None)
    client = await start_api(settings)
    try:
        api = Api(client, ADMIN_TOKEN)
        experiment = await api.active_experiment("partner/preview-noredis")
        assert experiment["status"] == "active"
    finally:
        await client.close()


async def test_publish_failure_logs_never_carry_the_redis_password(
    admin_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings = dataclasses.replace(
        admin_settings, redis_url="redis://:hunter2-redis-pass@127.0.0.1:1/0")
    client = await start_api(settings)
    try:
        api = Api(client, ADMIN_TOKEN)
        with caplog.at_level(logging.DEBUG):
            experiment = await api.experiment()
            variant = await api.variant(experiment["id"], "a")
            reply = await api.post(f"/api/variants/{variant['id']}/versions",
                                   {"upstream": upstream(), "api_key": API_KEY})
        assert reply.status == 201
        assert "not published" in caplog.text
        assert "hunter2-redis-pass" not in caplog.text
        assert API_KEY not in caplog.text
    finally:
        await client.close()
