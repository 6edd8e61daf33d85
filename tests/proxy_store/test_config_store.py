"""ConfigStore: tiers, single-flight, fencing, push and poll, failure of either store."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from redis.asyncio.client import PubSub

from abgate.routing_protocol import Invalidation, bump_version, channel, snapshot_key
from proxy import config_store, snapshot_loader
from proxy.config_store import ConfigStore, ConfigUnavailable
from proxy.snapshot_loader import snapshot_to_json

from .routing_rows import (
    config_lookups,
    create_experiment,
    eventually,
    insert_version,
    publish,
    set_status,
    upstream_json,
)
from .tcp_cut import TcpCut

StoreFactory = Callable[..., Awaitable[ConfigStore]]


@pytest.fixture
async def make_store(
    pool: asyncpg.Pool, redis_client: aioredis.Redis, redis_namespace: str
) -> AsyncIterator[StoreFactory]:
    """Started stores (Postgres pool and Redis of the test by default), closed at the end."""
    stores: list[ConfigStore] = []

    async def make(**kwargs: Any) -> ConfigStore:
        store = ConfigStore(
            kwargs.pop("pool", pool),
            kwargs.pop("redis", redis_client),
            redis_namespace,
            **kwargs,
        )
        stores.append(store)
        await store.start()
        return store

    yield make
    for store in stores:
        await store.close()


@pytest.fixture
def count_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every Postgres snapshot load, by public model id."""
    loads: list[str] = []
    real = snapshot_loader.read_snapshot

    async def counting(conn: asyncpg.Connection, public_model_id: str) -> Any:
        loads.append(public_model_id)
        await asyncio.sleep(0.05)  # keep the load in flight while others ask
        return await real(conn, public_model_id)

    monkeypatch.setattr(snapshot_loader, "read_snapshot", counting)
    return loads


async def wait_subscribed(redis_client: aioredis.Redis, namespace: str) -> None:
    async def subscribed() -> bool:
        counts = await redis_client.pubsub_numsub(channel(namespace))
        return bool(counts and counts[0][1] >= 1)

    await eventually(subscribed, 2.0, "the store to subscribe")


# ---------------------------------------------------------------- tiers


async def test_first_get_loads_from_postgres_and_the_next_is_a_local_hit(
    db: asyncpg.Connection, make_store: StoreFactory
) -> None:
    experiment = await create_experiment(db, "preview/a")
    store = await make_store()
    metrics = config_lookups()

    first = await store.get("preview/a")
    assert metrics.delta() == {("local", "miss"): 1, ("redis", "miss"): 1, ("postgres", "hit"): 1}
    second = await store.get("preview/a")
    assert second is first
    assert metrics[("local", "hit")] == 1
    assert first is not None
    assert first.experiment_id == str(experiment.id)
    assert [v.version_id for v in first.variants] == experiment.version_ids


async def test_a_postgres_load_is_written_back_to_redis_for_other_proxies(
    db: asyncpg.Connection,
    make_store: StoreFactory,
    redis_client: aioredis.Redis,
    redis_namespace: str,
) -> None:
    await create_experiment(db, "preview/a")
    loaded = await (await make_store()).get("preview/a")
    assert loaded is not None
    ttl = await redis_client.ttl(snapshot_key(redis_namespace, "preview/a"))
    assert 0 < ttl <= 300

    other_proxy = await make_store()
    metrics = config_lookups()
    assert await other_proxy.get("preview/a") == loaded
    assert metrics.delta() == {("local", "miss"): 1, ("redis", "hit"): 1}


async def test_local_entry_expires_after_local_ttl(
    db: asyncpg.Connection, make_store: StoreFactory
) -> None:
    await create_experiment(db, "preview/a")
    store = await make_store(local_ttl_s=0.05)
    await store.get("preview/a")
    await asyncio.sleep(0.1)
    metrics = config_lookups()
    await store.get("preview/a")
    assert metrics.delta() == {("local", "stale"): 1, ("redis", "hit"): 1}


async def test_lru_evicts_the_least_recently_used_id(
    db: asyncpg.Connection, make_store: StoreFactory
) -> None:
    for name in ("preview/a", "preview/b", "preview/c"):
        await create_experiment(db, name)
    store = await make_store(local_size=2, redis=None)
    await store.get("preview/a")
    await store.get("preview/b")
    await store.get("preview/a")  # b is now the least recently used
    await store.get("preview/c")
    metrics = config_lookups()
    await store.get("preview/a")
    await store.get("preview/b")
    assert metrics.delta() == {("local", "hit"): 1, ("local", "miss"): 1, ("postgres", "hit"): 1}


async def test_an_id_without_a_live_experiment_gets_none(
    db: asyncpg.Connection, make_store: StoreFactory
) -> None:
    await create_experiment(db, "preview/draft", status="draft")
    store = await make_store()
    metrics = config_lookups()
    assert await store.get("preview/draft") is None
    assert await store.get("preview/draft") is None  # remembered locally
    assert metrics.delta() == {
        ("local", "miss"): 1,
        ("local", "hit"): 1,
        ("redis", "miss"): 1,
        ("postgres", "miss"): 1,
    }


async def test_concurrent_misses_share_one_postgres_load(
    db: asyncpg.Connection, make_store: StoreFactory, count_loads: list[str]
) -> None:
    await create_experiment(db, "preview/a")
    store = await make_store()
    results = await asyncio.gather(*(store.get("preview/a") for _ in range(100)))
    assert count_loads == ["preview/a"]
    assert all(r is results[0] and r is not None for r in results)


async def test_a_cancelled_caller_does_not_cancel_the_shared_load(
    db: asyncpg.Connection, make_store: StoreFactory, count_loads: list[str]
) -> None:
    await create_experiment(db, "preview/a")
    store = await make_store()
    impatient = asyncio.create_task(store.get("preview/a"))
    patient = asyncio.create_task(store.get("preview/a"))
    await asyncio.sleep(0.01)
    impatient.cancel()
    snapshot = await patient
    assert snapshot is not None
    assert count_loads == ["preview/a"]


# ---------------------------------------------------------------- fencing


async def test_a_stale_redis_snapshot_is_ignored_after_an_invalidation(
    db: asyncpg.Connection,
    make_store: StoreFactory,
    redis_client: aioredis.Redis,
    redis_namespace: str,
) -> None:
    experiment = await create_experiment(db, "preview/a")
    old = await (await make_store()).get("preview/a")
    assert old is not None and old.status == "active"
    # The admin pauses it, but its Redis delete is lost: the old copy stays in Redis.
    version = await set_status(db, experiment, "paused")
    store = await make_store(poll_interval_s=60)
    store._apply(Invalidation("preview/a", version, frozenset({"preview/a"})))

    metrics = config_lookups()
    fresh = await store.get("preview/a")
    assert fresh is not None
    assert (fresh.status, fresh.version) == ("paused", version)
    assert metrics.delta() == {("local", "miss"): 1, ("redis", "stale"): 1, ("postgres", "hit"): 1}
    cached = orjson.loads(await redis_client.get(snapshot_key(redis_namespace, "preview/a")))
    assert cached["version"] == version


async def test_start_fences_every_id_at_its_current_version(
    db: asyncpg.Connection,
    make_store: StoreFactory,
    redis_client: aioredis.Redis,
    redis_namespace: str,
) -> None:
    experiment = await create_experiment(db, "preview/a")
    stale = await (await make_store()).get("preview/a")
    assert stale is not None
    await set_status(db, experiment, "paused")  # push lost, Redis still holds `stale`
    assert await redis_client.exists(snapshot_key(redis_namespace, "preview/a"))

    new_proxy = await make_store(poll_interval_s=60)
    snapshot = await new_proxy.get("preview/a")
    assert snapshot is not None and snapshot.status == "paused"


async def test_an_invalidation_arriving_during_a_load_causes_a_reread(
    db: asyncpg.Connection, make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch,
    database_url: str,
) -> None:
    experiment = await create_experiment(db, "preview/a")
    store = await make_store(redis=None, poll_interval_s=60)
    real = snapshot_loader.read_snapshot
    loads = 0

    async def racing(conn: asyncpg.Connection, public_model_id: str) -> Any:
        nonlocal loads
        loads += 1
        result = await real(conn, public_model_id)
        if loads == 1:  # the admin commits a pause right after our read
            version = await set_status(db, experiment, "paused")
            store._apply(Invalidation("preview/a", version, frozenset({"preview/a"})))
        return result

    monkeypatch.setattr(snapshot_loader, "read_snapshot", racing)
    snapshot = await store.get("preview/a")
    assert loads == 2
    assert snapshot is not None and snapshot.status == "paused"


async def test_a_fence_above_anything_in_postgres_yields_to_postgres(
    db: asyncpg.Connection, make_store: StoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """After a database restore the sequence restarts lower: Postgres is the truth."""
    await create_experiment(db, "preview/a")
    store = await make_store(redis=None, poll_interval_s=60)
    store._apply(Invalidation("preview/a", 10_000, frozenset({"preview/a"})))
    snapshot = await store.get("preview/a")
    assert snapshot is not None and snapshot.version == 1
    assert "went backwards" in caplog.text
    assert await store.get("preview/a") is snapshot


# ---------------------------------------------------------------- push and poll


async def test_a_pushed_invalidation_applies_within_one_second(
    db: asyncpg.Connection,
    make_store: StoreFactory,
    redis_client: aioredis.Redis,
    redis_namespace: str,
) -> None:
    experiment = await create_experiment(db, "preview/a")
    store = await make_store(poll_interval_s=60)
    await wait_subscribed(redis_client, redis_namespace)
    assert (await store.get("preview/a")).status == "active"  # type: ignore[union-attr]

    version = await set_status(db, experiment, "completed")
    await publish(redis_client, redis_namespace, db, "preview/a", version)
    await eventually(lambda: "preview/a" not in store.members, 1.0, "the push")
    assert store.max_version == version
    assert (REGISTRY.get_sample_value("abgate_config_version") or 0) >= version
    assert await store.get("preview/a") is None


async def test_malformed_channel_messages_are_ignored(
    db: asyncpg.Connection,
    make_store: StoreFactory,
    redis_client: aioredis.Redis,
    redis_namespace: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    experiment = await create_experiment(db, "preview/a")
    store = await make_store(poll_interval_s=60)
    await wait_subscribed(redis_client, redis_namespace)
    for junk in (b"not json", b'{"public_model_id": 1}', b"[]", b'{"version": true}'):
        await redis_client.publish(channel(redis_namespace), junk)
    version = await set_status(db, experiment, "completed")
    await publish(redis_client, redis_namespace, db, "preview/a", version)
    await eventually(lambda: "preview/a" not in store.members, 1.0, "the valid push")
    assert "malformed message on the routing channel" in caplog.text


async def test_the_listener_resubscribes_after_redis_drops(
    db: asyncpg.Connection,
    make_store: StoreFactory,
    redis_client: aioredis.Redis,
    redis_namespace: str,
    redis_relay: TcpCut,
    services: Any,
) -> None:
    experiment = await create_experiment(db, "preview/a")
    relayed = aioredis.Redis.from_url(redis_relay.url_through(services.redis_url))
    try:
        store = await make_store(redis=relayed, poll_interval_s=60)
        await wait_subscribed(redis_client, redis_namespace)
        redis_relay.cut()
        await eventually(
            lambda: _no_subscribers(redis_client, redis_namespace), 2.0, "the drop"
        )
        redis_relay.restore()
        await wait_subscribed(redis_client, redis_namespace)

        version = await set_status(db, experiment, "completed")
        await publish(redis_client, redis_namespace, db, "preview/a", version)
        await eventually(lambda: "preview/a" not in store.members, 1.0, "the push")
    finally:
        await relayed.aclose()


async def _no_subscribers(redis_client: aioredis.Redis, namespace: str) -> bool:
    counts = await redis_client.pubsub_numsub(channel(namespace))
    return not counts or counts[0][1] == 0


async def test_without_redis_the_poll_picks_up_changes(
    db: asyncpg.Connection, make_store: StoreFactory
) -> None:
    experiment = await create_experiment(db, "preview/a")
    store = await make_store(redis=None, poll_interval_s=0.2)
    assert store.members == {"preview/a"}
    assert (await store.get("preview/a")).status == "active"  # type: ignore[union-attr]

    version = await set_status(db, experiment, "paused")
    await eventually(lambda: store.max_version == version, 0.5, "two poll intervals")
    snapshot = await store.get("preview/a")
    assert snapshot is not None and snapshot.status == "paused"

    other = await create_experiment(db, "preview/b")
    await eventually(lambda: store.members == {"preview/a", "preview/b"}, 0.5, "membership")
    await set_status(db, other, "completed")
    await eventually(lambda: store.members == {"preview/a"}, 0.5, "membership")


async def test_the_poll_sees_a_version_committed_after_a_higher_one(
    db: asyncpg.Connection, make_store: StoreFactory, database_url: str
) -> None:
    """Sequence values are taken before commit: v=N+1 can become visible before v=N."""
    await create_experiment(db, "preview/a")
    slow = await asyncpg.connect(database_url)
    try:
        store = await make_store(redis=None, poll_interval_s=0.1)
        await store.get("preview/a")
        slow_tx = slow.transaction()
        await slow_tx.start()
        slow_version = await bump_version(slow, "preview/a")
        fast_version = await bump_version(db, "preview/b")
        await eventually(lambda: store.max_version == fast_version, 1.0, "the fast version")
        await slow_tx.commit()
        await eventually(
            lambda: _snapshot_version(store, "preview/a", slow_version), 1.0, "the slow version"
        )
    finally:
        await slow.close()


async def _snapshot_version(store: ConfigStore, public_model_id: str, version: int) -> bool:
    snapshot = await store.get(public_model_id)
    return snapshot is not None and snapshot.version == version


async def test_membership_and_versions_load_at_start(
    db: asyncpg.Connection, make_store: StoreFactory
) -> None:
    await create_experiment(db, "preview/a")
    await create_experiment(db, "preview/p", status="paused")
    await create_experiment(db, "preview/d", status="draft")
    store = await make_store(redis=None, poll_interval_s=60)
    assert store.ready
    assert store.members == {"preview/a", "preview/p"}
    assert store.max_version == 2
    assert store.last_sync_age_s < 5


# ---------------------------------------------------------------- store failures


async def test_with_redis_down_get_answers_from_postgres(
    db: asyncpg.Connection, make_store: StoreFactory, dead_redis: aioredis.Redis
) -> None:
    await create_experiment(db, "preview/a")
    store = await make_store(redis=dead_redis, poll_interval_s=60)
    assert store.ready
    metrics = config_lookups()
    snapshot = await asyncio.wait_for(store.get("preview/a"), 2.0)
    assert snapshot is not None
    assert metrics.delta() == {("local", "miss"): 1, ("redis", "error"): 1, ("postgres", "hit"): 1}


async def test_redis_down_is_skipped_quietly_after_the_first_error(
    db: asyncpg.Connection,
    make_store: StoreFactory,
    dead_redis: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(config_store, "_REDIS_SKIP_BASE_S", 60.0)
    await create_experiment(db, "preview/a")
    await create_experiment(db, "preview/b")
    store = await make_store(redis=dead_redis, poll_interval_s=60)
    caplog.clear()
    metrics = config_lookups()
    await store.get("preview/a")
    await store.get("preview/b")
    assert metrics[("redis", "error")] == 1  # the second lookup skipped the tier
    assert metrics[("postgres", "hit")] == 2
    redis_warnings = [r for r in caplog.records if "Redis snapshot" in r.getMessage()]
    assert len(redis_warnings) == 1


async def test_with_postgres_down_a_local_hit_still_answers(
    db: asyncpg.Connection, make_store: StoreFactory, relayed_pool: asyncpg.Pool,
    pg_relay: TcpCut,
) -> None:
    await create_experiment(db, "preview/a")
    store = await make_store(pool=relayed_pool, redis=None, poll_interval_s=60)
    await store.get("preview/a")
    pg_relay.cut()
    assert await store.get("preview/a") is not None


async def test_with_no_store_reachable_get_raises_config_unavailable(
    db: asyncpg.Connection,
    make_store: StoreFactory,
    relayed_pool: asyncpg.Pool,
    pg_relay: TcpCut,
    dead_redis: aioredis.Redis,
) -> None:
    await create_experiment(db, "preview/a")
    store = await make_store(pool=relayed_pool, redis=dead_redis, poll_interval_s=60)
    pg_relay.cut()
    metrics = config_lookups()
    with pytest.raises(ConfigUnavailable):
        await asyncio.wait_for(store.get("preview/a"), 5.0)
    assert metrics[("postgres", "error")] == 1


async def test_start_without_postgres_is_not_ready_until_it_returns(
    db: asyncpg.Connection,
    make_store: StoreFactory,
    relayed_pool: asyncpg.Pool,
    pg_relay: TcpCut,
) -> None:
    await create_experiment(db, "preview/a")
    pg_relay.cut()
    store = await make_store(pool=relayed_pool, redis=None, poll_interval_s=0.1)
    assert not store.ready
    assert store.members == frozenset()
    assert store.last_sync_age_s == float("inf")
    pg_relay.restore()
    await eventually(lambda: store.ready, 3.0, "the store to become ready")
    assert store.members == {"preview/a"}


# ---------------------------------------------------------------- version selection


async def test_a_scheduled_version_is_served_once_it_becomes_current(
    db: asyncpg.Connection, make_store: StoreFactory
) -> None:
    experiment = await create_experiment(db, "preview/a")
    variant = experiment.variant_ids[0]
    effective_at = await db.fetchval("SELECT now() + interval '1.5 seconds'")
    scheduled = await insert_version(
        db, variant, upstream_json("next-ckpt"), effective_at=effective_at
    )
    store = await make_store(poll_interval_s=60)

    before = await store.get("preview/a")
    assert before is not None
    assert before.variants[0].version_id == experiment.version_ids[0]
    assert before.valid_until == pytest.approx(effective_at.timestamp())

    await eventually(
        lambda: _version_of_first(store, scheduled), 5.0, "the scheduled version to be served"
    )


async def _version_of_first(store: ConfigStore, version_id: int) -> bool:
    snapshot = await store.get("preview/a")
    return snapshot is not None and snapshot.variants[0].version_id == version_id


async def test_redis_snapshot_in_an_unknown_format_is_reloaded(
    db: asyncpg.Connection,
    make_store: StoreFactory,
    redis_client: aioredis.Redis,
    redis_namespace: str,
) -> None:
    await create_experiment(db, "preview/a")
    store = await make_store(poll_interval_s=60)
    good = await store.get("preview/a")
    assert good is not None
    bad = snapshot_to_json(good) | {"format": 999}
    await redis_client.set(snapshot_key(redis_namespace, "preview/a"), orjson.dumps(bad))
    other = await make_store(poll_interval_s=60)
    metrics = config_lookups()
    assert await other.get("preview/a") == good
    assert metrics.delta() == {("local", "miss"): 1, ("redis", "error"): 1, ("postgres", "hit"): 1}


async def test_close_stops_background_tasks(make_store: StoreFactory) -> None:
    store = await make_store()
    tasks = list(store._tasks)
    assert tasks and not any(t.done() for t in tasks)
    await store.close()
    assert all(t.done() for t in tasks)


class _CancelAbsorbingPubSub(PubSub):
    """A pub/sub whose read absorbs the first cancellation and reads on.

    redis-py 8.1 was seen doing this under load; close() must not hang on it.
    """

    absorbed = 0

    async def get_message(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().get_message(*args, **kwargs)
        except asyncio.CancelledError:
            if _CancelAbsorbingPubSub.absorbed:
                raise
            _CancelAbsorbingPubSub.absorbed += 1
            return await super().get_message(*args, **kwargs)


class _CancelAbsorbingRedis(aioredis.Redis):
    def pubsub(self, **kwargs: Any) -> PubSub:
        return _CancelAbsorbingPubSub(self.connection_pool, **kwargs)


async def test_close_stops_a_listener_that_absorbs_a_cancellation(
    make_store: StoreFactory, redis_client: aioredis.Redis, redis_namespace: str
) -> None:
    redis = _CancelAbsorbingRedis(connection_pool=redis_client.connection_pool)
    store = await make_store(redis=redis)
    await wait_subscribed(redis_client, redis_namespace)
    tasks = list(store._tasks)
    await asyncio.wait_for(store.close(), 10.0)
    assert _CancelAbsorbingPubSub.absorbed == 1
    assert all(t.done() for t in tasks)


async def test_store_logs_no_key_material(
    db: asyncpg.Connection,
    make_store: StoreFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    experiment = await create_experiment(db, "preview/a")
    await insert_version(
        db,
        experiment.variant_ids[0],
        {"internal_id": "x", "base_url": "https://user:hunter2@example.com/v1",
         "api_kind": "chat_completions"},
    )
    store = await make_store()
    snapshot = await store.get("preview/a")
    assert snapshot is not None and snapshot.variants[0].upstream is None
    assert "upstream.base_url" in caplog.text
    assert "hunter2" not in caplog.text
    assert "c2VjcmV0" not in caplog.text  # the ciphertext
