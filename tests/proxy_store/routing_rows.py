"""Experiment rows as the admin app writes them, plus small test utilities."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from abgate.routing_protocol import Invalidation, bump_version, channel, current_members

# Shape-valid ciphertext; never decrypted by these tests.
ENCRYPTED_KEY = {"kid": "test1", "iv": "aXZpdml2aXZpdml2", "data": "c2VjcmV0", "authTag": "dGFn"}


def upstream_json(internal_id: str) -> dict[str, Any]:
    return {
        "internal_id": internal_id,
        "base_url": "http://127.0.0.1:9/v1",
        "api_kind": "chat_completions",
    }


@dataclass
class Experiment:
    id: uuid.UUID
    public_model_id: str
    variant_ids: list[int]
    version_ids: list[int]


async def create_experiment(
    db: asyncpg.Connection,
    public_model_id: str,
    *,
    status: str = "active",
    weights: Iterable[int] = (1, 1),
) -> Experiment:
    """An experiment with one current version per variant, bumped like an activation."""
    async with db.transaction():
        experiment_id = await db.fetchval(
            "INSERT INTO model_experiment (public_model_id, name, status) VALUES ($1, 'exp', $2)"
            " RETURNING id",
            public_model_id,
            status,
        )
        variant_ids, version_ids = [], []
        for i, weight in enumerate(weights):
            variant_id = await db.fetchval(
                "INSERT INTO model_experiment_variant (experiment_id, label, weight)"
                " VALUES ($1, $2, $3) RETURNING id",
                experiment_id,
                f"label-{i}",
                weight,
            )
            variant_ids.append(variant_id)
            version_ids.append(
                await insert_version(
                    db, variant_id, upstream_json(f"{public_model_id}-ckpt-{i}"), ago_s=60
                )
            )
        if status in ("active", "paused"):
            await bump_version(db, public_model_id)
    return Experiment(experiment_id, public_model_id, variant_ids, version_ids)


async def insert_version(
    db: asyncpg.Connection,
    variant_id: int,
    upstream: dict[str, Any],
    *,
    ago_s: float | None = None,
    effective_at: datetime | None = None,
) -> int:
    """A variant version effective ``ago_s`` seconds ago, or at ``effective_at``."""
    if effective_at is None:
        effective_at = await db.fetchval(
            "SELECT now() - make_interval(secs => $1)", float(ago_s or 0)
        )
    version_id: int = await db.fetchval(
        "INSERT INTO model_experiment_variant_version"
        " (variant_id, upstream, encrypted_api_key, effective_at)"
        " VALUES ($1, $2, $3, $4) RETURNING id",
        variant_id,
        upstream,
        ENCRYPTED_KEY,
        effective_at,
    )
    return version_id


async def set_status(db: asyncpg.Connection, experiment: Experiment, status: str) -> int:
    """Change status and bump the routing version in one transaction, like the admin app."""
    async with db.transaction():
        await db.execute(
            "UPDATE model_experiment SET status = $2 WHERE id = $1", experiment.id, status
        )
        return await bump_version(db, experiment.public_model_id)


async def publish(
    redis: aioredis.Redis, namespace: str, db: asyncpg.Connection, public_model_id: str,
    version: int,
) -> None:
    """The admin app's push: drop the Redis snapshot, publish the invalidation."""
    members = await current_members(db)
    await redis.delete(f"{namespace}:snapshot:{public_model_id}")
    invalidation = Invalidation(public_model_id, version, members)
    await redis.publish(channel(namespace), invalidation.encode())


async def eventually(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    """Wait until ``predicate()`` (sync or async) is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


class MetricDelta:
    """Changes of one labelled counter since construction, as {label values: delta}."""

    def __init__(self, name: str, label_names: tuple[str, ...], combos: Iterable[tuple[str, ...]]):
        self._name = name
        self._label_names = label_names
        self._combos = list(combos)
        self._before = {c: self._value(c) for c in self._combos}

    def _value(self, combo: tuple[str, ...]) -> float:
        labels = dict(zip(self._label_names, combo, strict=True))
        return REGISTRY.get_sample_value(self._name, labels) or 0.0

    def delta(self) -> dict[tuple[str, ...], float]:
        changes = {c: self._value(c) - before for c, before in self._before.items()}
        return {c: d for c, d in changes.items() if d}

    def __getitem__(self, combo: tuple[str, ...]) -> float:
        return self._value(combo) - self._before[combo]


def config_lookups() -> MetricDelta:
    return MetricDelta(
        "abgate_config_lookups_total",
        ("tier", "result"),
        [
            (tier, result)
            for tier in ("local", "redis", "postgres")
            for result in ("hit", "miss", "stale", "error")
        ],
    )


def recorder_rows() -> MetricDelta:
    return MetricDelta(
        "abgate_recorder_rows_total",
        ("result",),
        [(r,) for r in ("written", "spilled", "replayed", "dropped")],
    )
