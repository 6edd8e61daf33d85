"""Read one public model id's routing snapshot from Postgres, and its Redis form.

The snapshot and its fencing version are read by a single statement in one
``REPEATABLE READ`` read-only transaction, so the version always describes
exactly the rows read with it (see abgate.routing_protocol, "Fencing").
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import asyncpg

from abgate.upstream import Upstream, UpstreamError, parse_upstream
from proxy.snapshot import Snapshot, VariantRoute

__all__ = [
    "SNAPSHOT_JSON_FORMAT",
    "load_snapshot",
    "read_snapshot",
    "snapshot_from_json",
    "snapshot_to_json",
]

log = logging.getLogger(__name__)

#: Bumped whenever the Redis form changes; other formats are treated as a miss.
SNAPSHOT_JSON_FORMAT = 1

# One row per variant of the live experiment (variant columns NULL when the
# experiment has none), or a single row with a NULL experiment when there is no
# live experiment. ``now()`` is the transaction's start time, so "current" and
# "scheduled" are judged at one instant.
_SNAPSHOT_SQL = """
SELECT
    coalesce(cfg.version, 0) AS config_version,
    exp.id AS experiment_id,
    exp.status,
    var.id AS variant_id,
    var.label,
    var.weight,
    cur.id AS version_id,
    cur.upstream,
    cur.encrypted_api_key,
    nxt.next_effective_at
FROM (SELECT 1) AS one
LEFT JOIN routing_config_version AS cfg ON cfg.public_model_id = $1
LEFT JOIN model_experiment AS exp
    ON exp.public_model_id = $1 AND exp.status IN ('active', 'paused')
LEFT JOIN model_experiment_variant AS var ON var.experiment_id = exp.id
LEFT JOIN LATERAL (
    SELECT vv.id, vv.upstream, vv.encrypted_api_key
    FROM model_experiment_variant_version AS vv
    WHERE vv.variant_id = var.id AND vv.effective_at <= now()
    ORDER BY vv.effective_at DESC, vv.id DESC
    LIMIT 1
) AS cur ON true
LEFT JOIN LATERAL (
    SELECT min(vv.effective_at) AS next_effective_at
    FROM model_experiment_variant_version AS vv
    WHERE vv.variant_id = var.id AND vv.effective_at > now()
) AS nxt ON true
ORDER BY var.id
"""


async def load_snapshot(conn: asyncpg.Connection, public_model_id: str) -> Snapshot | None:
    """The live experiment on ``public_model_id`` as a snapshot, or None if there is none.

    ``conn`` must decode jsonb to Python objects (abgate.db.create_pool/connect).
    """
    _version, snapshot = await read_snapshot(conn, public_model_id)
    return snapshot


async def read_snapshot(
    conn: asyncpg.Connection, public_model_id: str
) -> tuple[int, Snapshot | None]:
    """Like :func:`load_snapshot`, also returning the config version read with it.

    The version matters even without a live experiment: it fences that
    negative answer like any snapshot.
    """
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        rows = await conn.fetch(_SNAPSHOT_SQL, public_model_id)
    first = rows[0]
    version: int = first["config_version"]
    if first["experiment_id"] is None:
        return version, None
    variants: list[VariantRoute] = []
    scheduled: list[datetime] = []
    for row in rows:
        if row["variant_id"] is None:  # a live experiment with no variants
            continue
        variants.append(
            VariantRoute(
                variant_id=row["variant_id"],
                label=row["label"],
                weight=row["weight"],
                version_id=row["version_id"],
                upstream=_stored_upstream(row["upstream"], row["version_id"]),
                encrypted_api_key=row["encrypted_api_key"],
            )
        )
        if row["next_effective_at"] is not None:
            scheduled.append(row["next_effective_at"])
    return version, Snapshot(
        experiment_id=str(first["experiment_id"]),
        public_model_id=public_model_id,
        status=first["status"],
        version=version,
        variants=tuple(variants),
        valid_until=min(scheduled).timestamp() if scheduled else None,
    )


def _stored_upstream(value: Any, version_id: int | None) -> Upstream | None:
    """Parse an upstream validated at write time; an unparsable one routes to a 503."""
    if value is None:
        return None
    try:
        return parse_upstream(value, allow_insecure=True)
    except UpstreamError as exc:
        # The field name only: messages never echo base_url or extra_body values.
        log.error("variant version %s has an invalid upstream (%s)", version_id, exc.field)
        return None


def snapshot_to_json(snapshot: Snapshot) -> dict[str, Any]:
    """An orjson-serialisable dict; the API key stays encrypted."""
    return {
        "format": SNAPSHOT_JSON_FORMAT,
        "experiment_id": snapshot.experiment_id,
        "public_model_id": snapshot.public_model_id,
        "status": snapshot.status,
        "version": snapshot.version,
        "valid_until": snapshot.valid_until,
        "variants": [
            {
                "variant_id": v.variant_id,
                "label": v.label,
                "weight": v.weight,
                "version_id": v.version_id,
                "upstream": v.upstream.to_json() if v.upstream is not None else None,
                "encrypted_api_key": v.encrypted_api_key,
            }
            for v in snapshot.variants
        ],
    }


def snapshot_from_json(data: Any) -> Snapshot:
    """Inverse of :func:`snapshot_to_json`; raises ValueError for anything malformed."""
    try:
        if data["format"] != SNAPSHOT_JSON_FORMAT:
            raise ValueError("unknown snapshot format")
        variants = tuple(_variant_from_json(v) for v in data["variants"])
        snapshot = Snapshot(
            experiment_id=_typed(data["experiment_id"], str),
            public_model_id=_typed(data["public_model_id"], str),
            status=_typed(data["status"], str),
            version=_typed(data["version"], int),
            variants=variants,
            valid_until=_optional_number(data["valid_until"]),
        )
    except (KeyError, TypeError, UpstreamError) as exc:
        raise ValueError("malformed snapshot") from exc
    if snapshot.status not in ("active", "paused"):
        raise ValueError("malformed snapshot")
    return snapshot


def _variant_from_json(data: Any) -> VariantRoute:
    upstream = data["upstream"]
    key = data["encrypted_api_key"]
    if key is not None and not isinstance(key, dict):
        raise TypeError("encrypted_api_key")
    version_id = data["version_id"]
    return VariantRoute(
        variant_id=_typed(data["variant_id"], int),
        label=_typed(data["label"], str),
        weight=_typed(data["weight"], int),
        version_id=_typed(version_id, int) if version_id is not None else None,
        upstream=parse_upstream(upstream, allow_insecure=True) if upstream is not None else None,
        encrypted_api_key=key,
    )


def _typed(value: Any, kind: type) -> Any:
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TypeError(kind.__name__)
    return value


def _optional_number(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("valid_until")
    return float(value)
