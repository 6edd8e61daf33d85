"""Admin side of the routing invalidation protocol (see abgate.routing_protocol).

A routing-affecting mutation calls :func:`prepare` inside its transaction
(bumping the public id's config version and reading the new membership set), and
:meth:`Publisher.publish` after the commit. Publication is best effort: a Redis
failure is logged and counted, and proxies catch up through their poll of
``routing_config_version`` within ``POLL_INTERVAL_S``.
"""

from __future__ import annotations

import logging

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from abgate.routing_protocol import (
    Invalidation,
    bump_version,
    channel,
    current_members,
    snapshot_key,
)
from admin.metrics import PUBLISH_FAILURES, PUBLISHES

__all__ = ["Publisher", "prepare"]

log = logging.getLogger("abgate.admin.publish")


async def prepare(conn: asyncpg.Connection, public_model_id: str) -> Invalidation:
    """Bump the routing version of ``public_model_id``; call inside the mutation's transaction."""
    version = await bump_version(conn, public_model_id)
    return Invalidation(public_model_id, version, await current_members(conn))


class Publisher:
    """Publishes invalidations after commit; never raises for a Redis failure."""

    def __init__(self, redis: aioredis.Redis | None, namespace: str) -> None:
        self._redis = redis
        self._namespace = namespace

    async def publish(self, invalidation: Invalidation) -> bool:
        """Drop the cached snapshot and announce the change. False when Redis failed."""
        if self._redis is None:
            return True  # no Redis configured: proxies read Postgres and poll
        try:
            await self._redis.delete(snapshot_key(self._namespace, invalidation.public_model_id))
            await self._redis.publish(channel(self._namespace), invalidation.encode())
        except (RedisError, OSError) as exc:
            PUBLISH_FAILURES.inc()
            # The exception type only: redis errors can quote the connection URL.
            log.warning(
                "routing invalidation for %r version %d not published (%s); "
                "proxies will pick it up by polling",
                invalidation.public_model_id, invalidation.version, type(exc).__name__,
            )
            return False
        PUBLISHES.inc()
        return True
