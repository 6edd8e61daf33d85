"""Routing snapshots for the proxy: local LRU, then Redis, then Postgres.

Freshness follows abgate.routing_protocol: every invalidation (pushed on the
Redis channel or found by the Postgres poll) raises a per-id *fence*, and no
tier's snapshot older than the fence is ever served or cached. Both paths go
through :meth:`ConfigStore._apply`.

Failure policy: Redis is an optimisation. When it is down the store serves
from the local cache and Postgres, the poll keeps invalidations flowing, and a
warning is logged at most every :data:`_WARN_EVERY_S`. When no tier can answer,
:meth:`ConfigStore.get` raises :class:`ConfigUnavailable` (the proxy answers
503); it never falls open to passthrough.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from abgate import routing_protocol
from abgate.routing_protocol import Invalidation, ProtocolError
from proxy import snapshot_loader
from proxy.metrics import CONFIG_LOOKUPS, CONFIG_VERSION
from proxy.snapshot import Snapshot
from proxy.snapshot_loader import snapshot_from_json, snapshot_to_json

__all__ = ["ConfigStore", "ConfigUnavailable"]

log = logging.getLogger(__name__)

SNAPSHOT_REDIS_TTL_S = 300
_WARN_EVERY_S = 30.0
# The poll re-reads versions committed this long before the highest one seen:
# sequence values are taken before commit, so a slow transaction can commit a
# version lower than one already seen. Rows at or below a fence are ignored.
_POLL_LOOKBACK_S = 30.0
# After a Redis error the snapshot tier is skipped for a jittered, growing while.
_REDIS_SKIP_BASE_S = 0.5
_REDIS_SKIP_CAP_S = 5.0
# A snapshot read while a newer invalidation arrived is re-read this many times.
_MAX_LOAD_ATTEMPTS = 3

# Bound once: ``labels()`` on every request would cost a lock and a dict lookup.
_LOOKUP = {
    (tier, result): CONFIG_LOOKUPS.labels(tier=tier, result=result)
    for tier in ("local", "redis", "postgres")
    for result in ("hit", "miss", "stale", "error")
}

_PG_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
_REDIS_ERRORS = (RedisError, OSError, TimeoutError)
_CLOSE_ATTEMPTS = 20
_CLOSE_RETRY_S = 0.25


class ConfigUnavailable(Exception):
    """No tier could produce a current snapshot; the request must get a 503."""


@dataclass(slots=True)
class _Entry:
    snapshot: Snapshot | None  # None: no live experiment on this id at ``version``
    version: int
    expires_at: float  # time.monotonic()


class _RateLimitedWarning:
    """Logs a recurring failure once per interval, with a count of the rest."""

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._next_at = 0.0
        self._suppressed = 0

    def warn(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now < self._next_at:
            self._suppressed += 1
            return
        suffix = f" ({self._suppressed} similar suppressed)" if self._suppressed else ""
        log.warning(message + suffix, *args)
        self._next_at = now + self._interval_s
        self._suppressed = 0


class _Backoff:
    """Capped exponential backoff with full jitter."""

    def __init__(self, base_s: float, cap_s: float) -> None:
        self._base_s = base_s
        self._cap_s = cap_s
        self._failures = 0

    def next_delay(self) -> float:
        delay = min(self._cap_s, self._base_s * 2**self._failures)
        self._failures = min(self._failures + 1, 32)
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self._failures = 0


def _not_due(snapshot: Snapshot) -> bool:
    """False once a scheduled version has become current (the snapshot must be re-read)."""
    return snapshot.valid_until is None or time.time() < snapshot.valid_until


class ConfigStore:
    """Membership set and per-id routing snapshots, kept fresh by push and poll."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: aioredis.Redis | None,
        namespace: str,
        *,
        local_size: int = 1024,
        local_ttl_s: float = 30.0,
        poll_interval_s: float = routing_protocol.POLL_INTERVAL_S,
        load_timeout_s: float = 5.0,
        redis_timeout_s: float = 0.5,
    ) -> None:
        self._pool = pool
        self._redis = redis
        self._namespace = namespace
        self._local_size = local_size
        self._local_ttl_s = local_ttl_s
        self._poll_interval_s = poll_interval_s
        self._load_timeout_s = load_timeout_s
        self._redis_timeout_s = redis_timeout_s
        #: Public ids with a live experiment; read on every request, replaced whole.
        self.members: frozenset[str] = frozenset()
        #: True once membership and versions were loaded from Postgres.
        self.ready = False
        self._local: OrderedDict[str, _Entry] = OrderedDict()
        self._fences: dict[str, int] = {}
        self._max_version = 0
        self._inflight: dict[str, asyncio.Task[Snapshot | None]] = {}
        self._watermarks: deque[tuple[float, int]] = deque()  # (monotonic, max version seen)
        self._pushes_applied = 0
        self._last_sync: float | None = None
        self._wake_poll = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._redis_skip_until = 0.0
        self._redis_backoff = _Backoff(_REDIS_SKIP_BASE_S, _REDIS_SKIP_CAP_S)
        self._redis_warning = _RateLimitedWarning(_WARN_EVERY_S)
        self._channel_warning = _RateLimitedWarning(_WARN_EVERY_S)
        self._pg_warning = _RateLimitedWarning(_WARN_EVERY_S)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Try one sync with Postgres, then keep syncing (and listening) in the background.

        A failed first sync does not raise: the poll task retries and ``ready``
        stays False until it succeeds.
        """
        await self._sync_once()
        self._tasks.append(asyncio.create_task(self._poll_loop(), name="abgate-config-poll"))
        if self._redis is not None:
            self._tasks.append(
                asyncio.create_task(self._listen_loop(), name="abgate-config-listen")
            )

    async def close(self) -> None:
        self._closed = True
        tasks = self._tasks + list(self._inflight.values())
        self._tasks = []
        for task in tasks:
            task.cancel()
        # redis-py's pub/sub read can absorb a cancellation and read on (seen with
        # redis 8.1 under load), so a listener may outlive one cancel(): cancel
        # again until every task is done, and the loops also stop on _closed.
        pending = {task for task in tasks if not task.done()}
        for _ in range(_CLOSE_ATTEMPTS):
            if not pending:
                break
            _, pending = await asyncio.wait(pending, timeout=_CLOSE_RETRY_S)
            for task in pending:
                task.cancel()
        if pending:
            log.error("%d routing config task(s) did not stop", len(pending))
        for task in tasks:  # a failed load was its callers' error: retrieve it quietly
            if task.done() and not task.cancelled():
                task.exception()

    @property
    def last_sync_age_s(self) -> float:
        """Seconds since the last successful poll of Postgres (inf before the first)."""
        if self._last_sync is None:
            return float("inf")
        return time.monotonic() - self._last_sync

    @property
    def max_version(self) -> int:
        """The highest routing config version seen so far."""
        return self._max_version

    # ------------------------------------------------------------------ lookups

    async def get(self, public_model_id: str) -> Snapshot | None:
        """The current snapshot, or None when the id has no live experiment.

        Raises ConfigUnavailable when neither Redis nor Postgres can answer.
        """
        entry = self._local.get(public_model_id)
        if entry is not None:
            if self._is_fresh(public_model_id, entry):
                self._local.move_to_end(public_model_id)
                _LOOKUP["local", "hit"].inc()
                return entry.snapshot
            del self._local[public_model_id]
            _LOOKUP["local", "stale"].inc()
        else:
            _LOOKUP["local", "miss"].inc()
        task = self._inflight.get(public_model_id)
        if task is None:
            # A task, not a coroutine: a cancelled caller must not cancel the
            # load that other callers are waiting on (single-flight).
            task = asyncio.create_task(self._load(public_model_id))
            self._inflight[public_model_id] = task
            task.add_done_callback(functools.partial(self._load_done, public_model_id))
        return await asyncio.shield(task)

    def _load_done(self, public_model_id: str, task: asyncio.Task[Snapshot | None]) -> None:
        if self._inflight.get(public_model_id) is task:
            del self._inflight[public_model_id]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have gone away

    def _is_fresh(self, public_model_id: str, entry: _Entry) -> bool:
        if entry.version < self._fences.get(public_model_id, 0):
            return False
        if time.monotonic() >= entry.expires_at:
            return False
        return entry.snapshot is None or _not_due(entry.snapshot)

    async def _load(self, public_model_id: str) -> Snapshot | None:
        found, snapshot = await self._from_redis(public_model_id)
        if found:
            self._remember(public_model_id, snapshot, snapshot.version if snapshot else 0)
            return snapshot
        return await self._from_postgres(public_model_id)

    async def _from_redis(self, public_model_id: str) -> tuple[bool, Snapshot | None]:
        if self._redis is None or time.monotonic() < self._redis_skip_until:
            return False, None
        key = routing_protocol.snapshot_key(self._namespace, public_model_id)
        try:
            async with asyncio.timeout(self._redis_timeout_s):
                raw = await self._redis.get(key)
        except _REDIS_ERRORS as exc:
            self._redis_failed("read", exc)
            _LOOKUP["redis", "error"].inc()
            return False, None
        self._redis_ok()
        if raw is None:
            _LOOKUP["redis", "miss"].inc()
            return False, None
        try:
            snapshot = snapshot_from_json(orjson.loads(raw))
        except (orjson.JSONDecodeError, ValueError):
            log.warning("ignoring a malformed snapshot in Redis for a public model id")
            _LOOKUP["redis", "error"].inc()
            return False, None
        if snapshot.public_model_id != public_model_id or not self._is_current(snapshot):
            _LOOKUP["redis", "stale"].inc()
            return False, None
        _LOOKUP["redis", "hit"].inc()
        return True, snapshot

    def _is_current(self, snapshot: Snapshot) -> bool:
        if snapshot.version < self._fences.get(snapshot.public_model_id, 0):
            return False
        return _not_due(snapshot)

    async def _from_postgres(self, public_model_id: str) -> Snapshot | None:
        for _ in range(_MAX_LOAD_ATTEMPTS):
            fence_before = self._fences.get(public_model_id, 0)
            try:
                async with asyncio.timeout(self._load_timeout_s):
                    async with self._pool.acquire() as conn:
                        version, snapshot = await snapshot_loader.read_snapshot(
                            conn, public_model_id
                        )
            except _PG_ERRORS as exc:
                _LOOKUP["postgres", "error"].inc()
                self._pg_warning.warn("config load from Postgres failed: %s", type(exc).__name__)
                raise ConfigUnavailable("routing config store unavailable") from None
            if version < fence_before:
                # A read that began after the fence was raised cannot miss the change
                # (invalidations follow commits): Postgres went back, e.g. a restore.
                log.warning(
                    "routing version of a public model id went backwards (%d < %d); "
                    "trusting Postgres",
                    version,
                    fence_before,
                )
                self._fences[public_model_id] = version
            elif version < self._fences.get(public_model_id, 0):
                # An invalidation arrived while reading: newer rows are committed.
                _LOOKUP["postgres", "stale"].inc()
                continue
            _LOOKUP["postgres", "hit" if snapshot is not None else "miss"].inc()
            self._remember(public_model_id, snapshot, version)
            if snapshot is not None:
                await self._write_redis(snapshot)
            return snapshot
        _LOOKUP["postgres", "error"].inc()
        raise ConfigUnavailable("routing config kept changing while being read")

    def _remember(self, public_model_id: str, snapshot: Snapshot | None, version: int) -> None:
        if version < self._fences.get(public_model_id, 0):
            return
        self._local[public_model_id] = _Entry(
            snapshot, version, time.monotonic() + self._local_ttl_s
        )
        self._local.move_to_end(public_model_id)
        while len(self._local) > self._local_size:
            self._local.popitem(last=False)

    async def _write_redis(self, snapshot: Snapshot) -> None:
        if self._redis is None or time.monotonic() < self._redis_skip_until:
            return
        key = routing_protocol.snapshot_key(self._namespace, snapshot.public_model_id)
        try:
            async with asyncio.timeout(self._redis_timeout_s):
                await self._redis.set(
                    key, orjson.dumps(snapshot_to_json(snapshot)), ex=SNAPSHOT_REDIS_TTL_S
                )
        except _REDIS_ERRORS as exc:
            self._redis_failed("write", exc)
            return
        self._redis_ok()

    def _redis_failed(self, what: str, exc: BaseException) -> None:
        self._redis_skip_until = time.monotonic() + self._redis_backoff.next_delay()
        self._redis_warning.warn(
            "Redis snapshot %s failed (%s); serving from local cache and Postgres",
            what,
            type(exc).__name__,
        )

    def _redis_ok(self) -> None:
        self._redis_backoff.reset()

    # ------------------------------------------------------------------ invalidation

    def _apply(self, invalidation: Invalidation) -> None:
        """Raise the fence of one id, drop its local snapshot, replace membership."""
        public_model_id, version = invalidation.public_model_id, invalidation.version
        if version > self._fences.get(public_model_id, 0):
            self._fences[public_model_id] = version
            entry = self._local.get(public_model_id)
            if entry is not None and entry.version < version:
                del self._local[public_model_id]
        if version > self._max_version:
            self._max_version = version
            CONFIG_VERSION.set(version)
        self.members = invalidation.members

    async def _sync_once(self) -> bool:
        """One poll: apply versions not seen yet and reload membership."""
        since = self._poll_since()
        pushes_before = self._pushes_applied
        try:
            async with asyncio.timeout(self._load_timeout_s):
                async with self._pool.acquire() as conn:
                    rows = await conn.fetch(routing_protocol.CHANGES_SINCE_SQL, since)
                    members = await routing_protocol.current_members(conn)
        except _PG_ERRORS as exc:
            self._pg_warning.warn("routing config poll failed: %s", type(exc).__name__)
            return False
        if self._pushes_applied != pushes_before:
            # A push landed while we read; its membership may be newer than ours.
            # Keep it, and let the next poll re-read membership.
            members = self.members
        for row in rows:
            self._apply(Invalidation(row["public_model_id"], row["version"], members))
        self.members = members
        now = time.monotonic()
        self._watermarks.append((now, self._max_version))
        self._last_sync = now
        if not self.ready:
            self.ready = True
            log.info("routing config loaded: %d live public model ids", len(members))
        return True

    def _poll_since(self) -> int:
        """The version to poll from: the highest seen ``_POLL_LOOKBACK_S`` ago, else 0."""
        cutoff = time.monotonic() - _POLL_LOOKBACK_S
        marks = self._watermarks
        while len(marks) > 1 and marks[1][0] <= cutoff:
            marks.popleft()
        if marks and marks[0][0] <= cutoff:
            return marks[0][1]
        return 0

    async def _poll_loop(self) -> None:
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_interval_s):
                    await self._wake_poll.wait()
            self._wake_poll.clear()
            try:
                await self._sync_once()
            except Exception:  # a bug must not end invalidation for good
                log.exception("routing config poll failed unexpectedly")

    async def _listen_loop(self) -> None:
        assert self._redis is not None
        channel = routing_protocol.channel(self._namespace)
        backoff = _Backoff(0.1, 5.0)
        while not self._closed:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(channel)
                # Messages published while we were not subscribed are lost: catch up now.
                self._wake_poll.set()
                backoff.reset()
                while not self._closed:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                    if message is not None and message.get("type") == "message":
                        self._on_message(message.get("data"))
            except _REDIS_ERRORS as exc:
                self._channel_warning.warn(
                    "routing invalidation channel failed (%s); reconnecting", type(exc).__name__
                )
            except Exception:  # a bug must not end push for good; the poll still runs
                log.exception("routing invalidation listener failed unexpectedly")
            finally:
                with contextlib.suppress(*_REDIS_ERRORS):
                    await pubsub.aclose()
            await asyncio.sleep(backoff.next_delay())

    def _on_message(self, data: Any) -> None:
        try:
            invalidation = Invalidation.decode(data)
        except ProtocolError:
            log.warning("ignoring a malformed message on the routing channel")
            return
        self._pushes_applied += 1
        self._apply(invalidation)
