"""Valid rows for every table, so that a test changes exactly one column.

Each helper inserts a row that satisfies every constraint, with the caller's
overrides applied on top, and returns the inserted row. Unique columns get
random values so that helpers can be called any number of times.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg


def sha256_hex(seed: str | None = None) -> str:
    """64 lowercase hex characters (random unless seeded)."""
    return hashlib.sha256((seed or secrets.token_hex(16)).encode()).hexdigest()


def encrypted_key() -> dict[str, str]:
    """The stored shape of an encrypted API key (contents are irrelevant to the schema)."""
    return {"kid": "k1", "iv": "aXY=", "data": "ZGF0YQ==", "authTag": "dGFn"}


async def insert(conn: asyncpg.Connection, table: str, columns: dict[str, Any]) -> asyncpg.Record:
    """INSERT one row; table and column names come from test code, never from input."""
    names = ", ".join(columns)
    params = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    sql = f"INSERT INTO {table} ({names}) VALUES ({params}) RETURNING *"  # noqa: S608
    row = await conn.fetchrow(sql, *columns.values())
    assert row is not None
    return row


async def experiment(conn: asyncpg.Connection, **overrides: Any) -> asyncpg.Record:
    columns = {"public_model_id": f"partner/preview-{uuid.uuid4().hex[:8]}", "name": "Experiment"}
    return await insert(conn, "model_experiment", columns | overrides)


async def variant(
    conn: asyncpg.Connection, experiment_id: uuid.UUID | None = None, **overrides: Any
) -> asyncpg.Record:
    if experiment_id is None:
        experiment_id = (await experiment(conn))["id"]
    columns = {"experiment_id": experiment_id, "label": f"v-{uuid.uuid4().hex[:8]}", "weight": 1}
    return await insert(conn, "model_experiment_variant", columns | overrides)


async def version(
    conn: asyncpg.Connection, variant_id: int | None = None, **overrides: Any
) -> asyncpg.Record:
    if variant_id is None:
        variant_id = (await variant(conn))["id"]
    columns = {
        "variant_id": variant_id,
        "upstream": {
            "internal_id": "ckpt-1",
            "base_url": "https://partner.example/v1",
            "api_kind": "chat_completions",
        },
        "encrypted_api_key": encrypted_key(),
    }
    return await insert(conn, "model_experiment_variant_version", columns | overrides)


async def usage(conn: asyncpg.Connection, **overrides: Any) -> asyncpg.Record:
    columns = {
        "id": uuid.uuid4(),
        "created_at": datetime.now(UTC),
        "request_kind": "chat_completions",
        "upstream_model": "ckpt-1",
        "status_code": 200,
    }
    return await insert(conn, "usage", columns | overrides)


async def request(
    conn: asyncpg.Connection, variant_version_id: int, **overrides: Any
) -> asyncpg.Record:
    """A request row; creates its usage row (same id and created_at) unless given usage_id."""
    created_at = overrides.pop("created_at", None) or datetime.now(UTC)
    if "usage_id" not in overrides:
        overrides["usage_id"] = (await usage(conn, created_at=created_at))["id"]
    columns = {
        "created_at": created_at,
        "variant_version_id": variant_version_id,
        "allocation_subject": "user",
        "subject_value": "user-1",
        "client_request_id": f"req-{uuid.uuid4().hex}",
        "request_kind": "chat_completions",
        "system_prompt_sha256": sha256_hex(),
        "request_body_sha256": sha256_hex(),
    }
    return await insert(conn, "model_experiment_request", columns | overrides)


async def rate_card(conn: asyncpg.Connection, **overrides: Any) -> asyncpg.Record:
    columns = {
        "provider": "partner",
        "model": f"ckpt-{uuid.uuid4().hex[:8]}",
        "effective_from": datetime(2025, 1, 1, tzinfo=UTC),
        "input_per_1m_microdollars": 1_000_000,
        "output_per_1m_microdollars": 2_000_000,
    }
    return await insert(conn, "rate_card", columns | overrides)


async def feedback(conn: asyncpg.Connection, **overrides: Any) -> asyncpg.Record:
    columns = {
        "client_request_id": f"req-{uuid.uuid4().hex}",
        "allocation_subject": "user",
        "subject_value": "user-1",
        "rating": 1,
    }
    return await insert(conn, "feedback", columns | overrides)


async def prompt_blob(conn: asyncpg.Connection, **overrides: Any) -> asyncpg.Record:
    content = overrides.pop("content", secrets.token_bytes(16))
    columns = {"sha256": hashlib.sha256(content).hexdigest(), "content": content}
    return await insert(conn, "prompt_blob", columns | overrides)


async def admin_token(conn: asyncpg.Connection, **overrides: Any) -> asyncpg.Record:
    columns = {"name": "ci", "role": "admin", "token_sha256": sha256_hex()}
    return await insert(conn, "admin_token", columns | overrides)


async def audit_entry(conn: asyncpg.Connection, **overrides: Any) -> asyncpg.Record:
    columns = {"actor": "token:ci", "action": "experiment.create", "after": {"name": "x"}}
    return await insert(conn, "audit_log", columns | overrides)
