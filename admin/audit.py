"""The audit log: one row per mutation, written in the mutation's transaction.

``before``/``after`` hold the API's own JSON shapes (experiment, variant,
version), which never contain key material; :func:`record` also refuses any
object that carries a key-like field, so a future caller cannot leak one.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import asyncpg
from aiohttp import web

from admin.context import context
from admin.http import json_response
from admin.validation import parse_audit_query

__all__ = ["record", "register_routes"]

_SECRET_FIELDS = frozenset({"api_key", "encrypted_api_key"})

_ENTRY_COLUMNS = (
    "id, created_at, actor, action, experiment_id, variant_id, version_id, before, after"
)


def _check_no_secrets(value: Any) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key in _SECRET_FIELDS:
                raise ValueError(f"audit values must not carry {key}")
            _check_no_secrets(item)
    elif isinstance(value, list):
        for item in value:
            _check_no_secrets(item)


async def record(
    conn: asyncpg.Connection,
    *,
    actor: str,
    action: str,
    experiment_id: uuid.UUID | str | None = None,
    variant_id: int | None = None,
    version_id: int | None = None,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
) -> None:
    """Append one audit row; call inside the mutation's transaction."""
    for value in (before, after):
        if value is not None and not isinstance(value, Mapping):
            raise TypeError("before/after must be JSON objects")
        _check_no_secrets(value)
    await conn.execute(
        "INSERT INTO audit_log (actor, action, experiment_id, variant_id, version_id, "
        "before, after) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        actor, action,
        uuid.UUID(str(experiment_id)) if experiment_id is not None else None,
        variant_id, version_id,
        _plain(before), _plain(after),
    )


def _plain(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return dict(value) if value is not None else None


def _entry_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "created_at": row["created_at"],
        "actor": row["actor"],
        "action": row["action"],
        "experiment_id": str(row["experiment_id"]) if row["experiment_id"] else None,
        "variant_id": row["variant_id"],
        "version_id": row["version_id"],
        "before": row["before"],
        "after": row["after"],
    }


async def list_audit(request: web.Request) -> web.Response:
    """GET /api/audit?experiment_id=&limit=&cursor= — newest first, keyset-paginated."""
    query = parse_audit_query(request.query)
    conditions: list[str] = []
    args: list[Any] = []
    if query.experiment_id is not None:
        args.append(query.experiment_id)
        conditions.append(f"experiment_id = ${len(args)}")
    if query.before_id is not None:
        args.append(query.before_id)
        conditions.append(f"id < ${len(args)}")
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    args.append(query.limit + 1)
    rows = await context(request).pool.fetch(
        # Only constant fragments are interpolated; values are bound parameters.
        f"SELECT {_ENTRY_COLUMNS} FROM audit_log {where} "  # noqa: S608
        f"ORDER BY id DESC LIMIT ${len(args)}",
        *args,
    )
    page = rows[: query.limit]
    more = len(rows) > query.limit
    return json_response({
        "entries": [_entry_json(r) for r in page],
        "next_cursor": str(page[-1]["id"]) if more else None,
    })


def register_routes(app: web.Application) -> None:
    app.router.add_get("/api/audit", list_audit)
