# ruff: noqa: S608 - SQL is built only from the constant column lists below; values are bound.
"""SQL of the admin app, and the JSON shapes of its rows.

Every query lists its columns. ``encrypted_api_key`` is never selected into a
row that could reach a client: versions report ``api_key_configured`` instead,
and a hot-swap that keeps the key copies the ciphertext inside one INSERT ...
SELECT, so it never even enters Python.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

from admin.errors import NotFound
from admin.lifecycle import VariantCurrent

__all__ = [
    "api_kinds_in_use",
    "delete_experiment",
    "delete_variant",
    "experiment_detail",
    "experiment_json",
    "insert_experiment",
    "insert_variant",
    "insert_version",
    "list_experiments",
    "lock_experiment",
    "prior_version",
    "share_total",
    "touch_experiment",
    "transaction_now",
    "update_experiment",
    "update_variant_label",
    "variant_currents",
    "variant_experiment_id",
    "variant_json",
    "variants_of",
    "version_json",
]

Row: TypeAlias = asyncpg.Record
Json: TypeAlias = dict[str, Any]

_EXPERIMENT_COLUMNS = (
    "id, public_model_id, name, description, status, is_archived, "
    "created_at, updated_at, started_at, ended_at"
)
_VARIANT_COLUMNS = "id, experiment_id, label, weight, created_at"
# api_key_configured is a fact about the key, never the key itself.
_VERSION_COLUMNS = (
    "v.id, v.variant_id, v.upstream, v.effective_at, v.created_at, "
    "(v.encrypted_api_key IS NOT NULL) AS api_key_configured"
)
# Columns a PATCH may set (the handler passes only these names).
_PATCHABLE = frozenset({"name", "description", "public_model_id", "status", "is_archived",
                        "started_at", "ended_at"})


# -- JSON shapes (CONTRACT.md) -------------------------------------------------


def experiment_json(row: Mapping[str, Any]) -> Json:
    return {
        "id": str(row["id"]),
        "public_model_id": row["public_model_id"],
        "name": row["name"],
        "description": row["description"],
        "status": row["status"],
        "is_archived": row["is_archived"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "started_at": row["started_at"],
        "ended_at": row["ended_at"],
    }


def variant_json(row: Mapping[str, Any], total_weight: int) -> Json:
    return {
        "id": row["id"],
        "experiment_id": str(row["experiment_id"]),
        "label": row["label"],
        "weight": row["weight"],
        "share": row["weight"] / total_weight if total_weight else 0.0,
        "created_at": row["created_at"],
    }


def version_json(row: Mapping[str, Any]) -> Json:
    return {
        "id": row["id"],
        "variant_id": row["variant_id"],
        "upstream": row["upstream"],
        "effective_at": row["effective_at"],
        "created_at": row["created_at"],
        "api_key_configured": row["api_key_configured"],
    }


# -- experiments -----------------------------------------------------------------


async def transaction_now(conn: asyncpg.Connection) -> datetime:
    """The transaction's timestamp: the "now" every check in it agrees on."""
    now: datetime = await conn.fetchval("SELECT now()")
    return now


async def lock_experiment(conn: asyncpg.Connection, experiment_id: uuid.UUID) -> Row:
    """Read and row-lock an experiment; every mutation starts here (serialises them)."""
    row = await conn.fetchrow(
        f"SELECT {_EXPERIMENT_COLUMNS} FROM model_experiment WHERE id = $1 FOR UPDATE",
        experiment_id,
    )
    if row is None:
        raise NotFound("experiment not found")
    return row


async def list_experiments(conn: asyncpg.Connection, archived: bool | None) -> list[Row]:
    if archived is None:
        return await conn.fetch(
            f"SELECT {_EXPERIMENT_COLUMNS} FROM model_experiment ORDER BY created_at DESC, id"
        )
    return await conn.fetch(
        f"SELECT {_EXPERIMENT_COLUMNS} FROM model_experiment WHERE is_archived = $1 "
        "ORDER BY created_at DESC, id",
        archived,
    )


async def insert_experiment(
    conn: asyncpg.Connection, public_model_id: str, name: str, description: str, actor: str
) -> Row:
    row: Row = await conn.fetchrow(
        "INSERT INTO model_experiment (public_model_id, name, description, created_by) "
        f"VALUES ($1, $2, $3, $4) RETURNING {_EXPERIMENT_COLUMNS}",
        public_model_id, name, description, actor,
    )
    return row


async def update_experiment(
    conn: asyncpg.Connection, experiment_id: uuid.UUID, changes: Mapping[str, Any]
) -> Row:
    """Set the given columns (names from a fixed allowlist) and bump updated_at."""
    names = list(changes)
    if not set(names) <= _PATCHABLE:
        raise ValueError(f"not patchable: {sorted(set(names) - _PATCHABLE)}")
    assignments = ", ".join(f"{name} = ${i + 2}" for i, name in enumerate(names))
    row: Row = await conn.fetchrow(
        f"UPDATE model_experiment SET {assignments}, updated_at = now() WHERE id = $1 "
        f"RETURNING {_EXPERIMENT_COLUMNS}",
        experiment_id, *changes.values(),
    )
    return row


async def delete_experiment(conn: asyncpg.Connection, experiment_id: uuid.UUID) -> None:
    await conn.execute("DELETE FROM model_experiment WHERE id = $1", experiment_id)


# One statement (one round trip, one consistent snapshot): the experiment joined with
# its variants and their versions, newest version first within each variant.
_DETAIL_SQL = f"""
SELECT {", ".join(f"e.{c.strip()}" for c in _EXPERIMENT_COLUMNS.split(","))},
       va.id AS va_id, va.experiment_id AS va_experiment_id, va.label AS va_label,
       va.weight AS va_weight, va.created_at AS va_created_at,
       v.id AS v_id, v.variant_id AS v_variant_id, v.upstream AS v_upstream,
       v.effective_at AS v_effective_at, v.created_at AS v_created_at,
       (v.encrypted_api_key IS NOT NULL) AS v_api_key_configured,
       (v.effective_at <= now()) AS v_in_effect
FROM model_experiment e
LEFT JOIN model_experiment_variant va ON va.experiment_id = e.id
LEFT JOIN model_experiment_variant_version v ON v.variant_id = va.id
WHERE e.id = $1
ORDER BY va.id, v.effective_at DESC, v.id DESC
"""


def _prefixed(row: Mapping[str, Any], prefix: str, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: row[prefix + name] for name in names}


_VARIANT_FIELDS = ("id", "experiment_id", "label", "weight", "created_at")
_VERSION_FIELDS = ("id", "variant_id", "upstream", "effective_at", "created_at",
                   "api_key_configured", "in_effect")


async def experiment_detail(
    conn: asyncpg.Connection | asyncpg.Pool, experiment_id: uuid.UUID
) -> Json:
    """Experiment JSON with ``variants``, each with ``current_version`` and ``versions``."""
    rows = await conn.fetch(_DETAIL_SQL, experiment_id)
    if not rows:
        raise NotFound("experiment not found")
    variants: dict[int, dict[str, Any]] = {}
    versions: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        if row["va_id"] is None:
            continue
        variants.setdefault(row["va_id"], _prefixed(row, "va_", _VARIANT_FIELDS))
        bucket = versions.setdefault(row["va_id"], [])
        if row["v_id"] is not None:
            bucket.append(_prefixed(row, "v_", _VERSION_FIELDS))
    total = sum(v["weight"] for v in variants.values())
    out = experiment_json(rows[0])
    out["variants"] = []
    for variant_id, variant in variants.items():
        history = versions[variant_id]
        current = next((v for v in history if v["in_effect"]), None)
        item = variant_json(variant, total)
        item["current_version"] = version_json(current) if current is not None else None
        item["versions"] = [version_json(v) for v in history]
        out["variants"].append(item)
    return out


# -- variants --------------------------------------------------------------------


async def variants_of(conn: asyncpg.Connection, experiment_id: uuid.UUID) -> list[Row]:
    return await conn.fetch(
        f"SELECT {_VARIANT_COLUMNS} FROM model_experiment_variant "
        "WHERE experiment_id = $1 ORDER BY id",
        experiment_id,
    )


async def variant_experiment_id(conn: asyncpg.Connection, variant_id: int) -> uuid.UUID:
    experiment_id: uuid.UUID | None = await conn.fetchval(
        "SELECT experiment_id FROM model_experiment_variant WHERE id = $1", variant_id
    )
    if experiment_id is None:
        raise NotFound("variant not found")
    return experiment_id


async def insert_variant(
    conn: asyncpg.Connection, experiment_id: uuid.UUID, label: str, weight: int
) -> Row:
    row: Row = await conn.fetchrow(
        "INSERT INTO model_experiment_variant (experiment_id, label, weight) "
        f"VALUES ($1, $2, $3) RETURNING {_VARIANT_COLUMNS}",
        experiment_id, label, weight,
    )
    return row


async def update_variant_label(conn: asyncpg.Connection, variant_id: int, label: str) -> Row:
    row: Row = await conn.fetchrow(
        f"UPDATE model_experiment_variant SET label = $2 WHERE id = $1 "
        f"RETURNING {_VARIANT_COLUMNS}",
        variant_id, label,
    )
    return row


async def delete_variant(conn: asyncpg.Connection, variant_id: int) -> None:
    await conn.execute("DELETE FROM model_experiment_variant WHERE id = $1", variant_id)


async def touch_experiment(conn: asyncpg.Connection, experiment_id: uuid.UUID) -> None:
    """A change to a variant or version is a change to its experiment."""
    await conn.execute("UPDATE model_experiment SET updated_at = now() WHERE id = $1",
                       experiment_id)


# -- versions --------------------------------------------------------------------

# Per variant: does it have a current version, and which api kinds will it speak
# (its current version's and any scheduled one's).
_VARIANT_CURRENTS_SQL = """
SELECT va.label,
       cur.id IS NOT NULL AS has_current,
       ARRAY(
           SELECT DISTINCT v.upstream->>'api_kind'
           FROM model_experiment_variant_version v
           WHERE v.variant_id = va.id AND (v.id = cur.id OR v.effective_at > now())
       ) AS api_kinds
FROM model_experiment_variant va
LEFT JOIN LATERAL (
    SELECT c.id FROM model_experiment_variant_version c
    WHERE c.variant_id = va.id AND c.effective_at <= now()
    ORDER BY c.effective_at DESC, c.id DESC LIMIT 1
) cur ON true
WHERE va.experiment_id = $1
ORDER BY va.id
"""


async def variant_currents(
    conn: asyncpg.Connection, experiment_id: uuid.UUID
) -> list[VariantCurrent]:
    rows = await conn.fetch(_VARIANT_CURRENTS_SQL, experiment_id)
    return [
        VariantCurrent(
            label=r["label"], has_current_version=r["has_current"],
            api_kinds=frozenset(k for k in r["api_kinds"] if k is not None),
        )
        for r in rows
    ]


async def api_kinds_in_use(conn: asyncpg.Connection, experiment_id: uuid.UUID) -> frozenset[str]:
    """Api kinds the experiment's current and scheduled versions speak."""
    kinds: set[str] = set()
    for variant in await variant_currents(conn, experiment_id):
        kinds |= variant.api_kinds
    return frozenset(kinds)


async def prior_version(
    conn: asyncpg.Connection, variant_id: int, effective_at: datetime
) -> Row | None:
    """The version a new one at ``effective_at`` succeeds (current at that instant)."""
    row: Row | None = await conn.fetchrow(
        f"SELECT {_VERSION_COLUMNS} FROM model_experiment_variant_version v "
        "WHERE v.variant_id = $1 AND v.effective_at <= $2 "
        "ORDER BY v.effective_at DESC, v.id DESC LIMIT 1",
        variant_id, effective_at,
    )
    return row


async def insert_version(
    conn: asyncpg.Connection,
    *,
    variant_id: int,
    upstream: Mapping[str, Any],
    effective_at: datetime,
    actor: str,
    encrypted_api_key: Mapping[str, str] | None = None,
    key_from_version: int | None = None,
) -> Row:
    """Insert a version with a new ciphertext, or with the one of ``key_from_version``."""
    if (encrypted_api_key is None) == (key_from_version is None):
        raise ValueError("give exactly one of encrypted_api_key and key_from_version")
    returning = f"RETURNING {_VERSION_COLUMNS.replace('v.', '')}"
    if encrypted_api_key is not None:
        row: Row = await conn.fetchrow(
            "INSERT INTO model_experiment_variant_version "
            "(variant_id, upstream, encrypted_api_key, effective_at, created_by) "
            f"VALUES ($1, $2, $3, $4, $5) {returning}",
            variant_id, dict(upstream), dict(encrypted_api_key), effective_at, actor,
        )
        return row
    row = await conn.fetchrow(
        "INSERT INTO model_experiment_variant_version "
        "(variant_id, upstream, encrypted_api_key, effective_at, created_by) "
        "SELECT $1, $2, p.encrypted_api_key, $4, $5 "
        f"FROM model_experiment_variant_version p WHERE p.id = $3 {returning}",
        variant_id, dict(upstream), key_from_version, effective_at, actor,
    )
    return row


def share_total(variants: Sequence[Mapping[str, Any]]) -> int:
    return sum(int(v["weight"]) for v in variants)
