# ruff: noqa: S608 - SQL is assembled from constant fragments; every value is a bound parameter.
"""The request browser and prompt download.

``GET /api/requests`` lists request rows newest first, filtered by experiment,
variant, variant version, client request id, request kind, outcome
(``success``/``error``: the usage row's ``has_error``) and body state, with keyset
pagination on (created_at, usage_id) through an opaque ``cursor`` and a
``limit`` of 10-100 (default 50). Rows carry the subject's kind but never its
value, the user id, or anything of a key.

Body states: ``deleted`` (wiped: ``__deleted__``), ``failed`` (no content was
captured: ``__failed__``, or hashes without a stored body, e.g. the sink never
ran or ``ABGATE_PROMPT_STORE=off``), ``truncated`` (a ``.part`` of the first
4 MiB) and ``available``.

``GET /api/requests/{usage_id}/prompt`` answers the exact bytes that were sent
upstream (``application/json``), or the stored prefix as ``text/plain`` with a
``.part`` file name; 404 when nothing was captured, 410 when it was wiped.
Every download is written to the audit log before the bytes are sent.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from abgate.prompt_store import (
    DELETED,
    FAILED,
    CorruptEvidence,
    EvidenceDeleted,
    EvidenceRef,
    StoredBody,
    load_bodies,
    open_blob_store,
)
from admin.audit import record
from admin.context import actor, context
from admin.errors import ApiError, BadRequest, InternalError, NotFound
from admin.evidence_openapi import error, nullable, obj, ok, op, query, ref
from admin.http import json_response
from admin.query_params import (
    optional_id,
    optional_text,
    optional_uuid,
    parse_timestamp,
    path_uuid,
)

__all__ = ["BODY_STATES", "Gone", "RequestQuery", "parse_request_query", "register_routes"]

LIMIT_MIN, LIMIT_MAX, LIMIT_DEFAULT = 10, 100, 50
REQUEST_KINDS = ("chat_completions", "responses", "messages")
OUTCOMES = ("success", "error")
BODY_STATES = ("available", "truncated", "failed", "deleted")

_BODY_STATE_SQL = {
    "deleted": f"m.request_body_sha256 = '{DELETED}'",
    "failed": f"(m.request_body_sha256 = '{FAILED}' OR (m.request_body_sha256 <> '{DELETED}' "
              "AND m.body_blob_sha256 IS NULL))",
    "truncated": "(m.body_blob_sha256 IS NOT NULL AND m.was_truncated)",
    "available": "(m.body_blob_sha256 IS NOT NULL AND NOT m.was_truncated)",
}


class Gone(ApiError):
    status = 410


@dataclass(frozen=True)
class RequestQuery:
    experiment_id: uuid.UUID | None = None
    variant_id: int | None = None
    variant_version_id: int | None = None
    client_request_id: str | None = None
    request_kind: str | None = None
    outcome: str | None = None
    body_state: str | None = None
    limit: int = LIMIT_DEFAULT
    before: tuple[datetime, uuid.UUID] | None = None


def _choice(query: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str | None:
    value = query.get(name)
    if not value:
        return None
    if value not in allowed:
        raise BadRequest(f"{name} must be one of {', '.join(allowed)}")
    return value


def _limit(query: Mapping[str, str]) -> int:
    text = query.get("limit")
    if text is None:
        return LIMIT_DEFAULT
    if not text.isdigit() or not LIMIT_MIN <= int(text) <= LIMIT_MAX:
        raise BadRequest(f"limit must be an integer from {LIMIT_MIN} to {LIMIT_MAX}")
    return int(text)


def encode_cursor(created_at: datetime, usage_id: uuid.UUID) -> str:
    raw = orjson.dumps([created_at.isoformat(), str(usage_id)])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[datetime, uuid.UUID]:
    problem = BadRequest("cursor is not valid; use next_cursor from a previous page")
    if len(text) > 200:
        raise problem
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        created_at, usage_id = orjson.loads(raw)
        return parse_timestamp(created_at, "cursor"), uuid.UUID(usage_id)
    except (binascii.Error, ValueError, TypeError, BadRequest):
        raise problem from None


def parse_request_query(query: Mapping[str, str]) -> RequestQuery:
    allowed = {"experiment_id", "variant_id", "variant_version_id", "client_request_id",
               "request_kind", "outcome", "body_state", "limit", "cursor"}
    unknown = sorted(set(query) - allowed)
    if unknown:
        raise BadRequest(
            f"unknown parameter {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})"
        )
    cursor = query.get("cursor")
    return RequestQuery(
        experiment_id=optional_uuid(query, "experiment_id"),
        variant_id=optional_id(query, "variant_id"),
        variant_version_id=optional_id(query, "variant_version_id"),
        client_request_id=optional_text(query, "client_request_id", 500),
        request_kind=_choice(query, "request_kind", REQUEST_KINDS),
        outcome=_choice(query, "outcome", OUTCOMES),
        body_state=_choice(query, "body_state", BODY_STATES),
        limit=_limit(query),
        before=decode_cursor(cursor) if cursor else None,
    )


_COLUMNS = """
m.usage_id, m.created_at, m.variant_version_id, x.variant_id, v.label, v.experiment_id,
m.allocation_subject, m.client_request_id, m.request_kind, m.system_prompt_sha256,
m.request_body_sha256, m.was_truncated, m.body_blob_sha256,
u.status_code, u.has_error, u.cancelled, u.streamed, u.latency_ms, u.ttft_ms,
u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens,
u.market_cost_microdollars
"""
_FROM = """
FROM model_experiment_request m
JOIN usage u ON u.id = m.usage_id
JOIN model_experiment_variant_version x ON x.id = m.variant_version_id
JOIN model_experiment_variant v ON v.id = x.variant_id
"""


def _where(q: RequestQuery) -> tuple[list[str], list[Any]]:
    conditions: list[str] = []
    args: list[Any] = []

    def bind(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if q.experiment_id is not None:
        # Resolved to version ids first so the (version, created_at) index serves it.
        conditions.append(
            f"m.variant_version_id = ANY(ARRAY(SELECT x2.id FROM model_experiment_variant_version"
            f" x2 JOIN model_experiment_variant v2 ON v2.id = x2.variant_id"
            f" WHERE v2.experiment_id = {bind(q.experiment_id)}))"
        )
    if q.variant_id is not None:
        conditions.append(
            f"m.variant_version_id = ANY(ARRAY(SELECT x3.id FROM model_experiment_variant_version"
            f" x3 WHERE x3.variant_id = {bind(q.variant_id)}))"
        )
    if q.variant_version_id is not None:
        conditions.append(f"m.variant_version_id = {bind(q.variant_version_id)}")
    if q.client_request_id is not None:
        conditions.append(f"m.client_request_id = {bind(q.client_request_id)}")
    if q.request_kind is not None:
        conditions.append(f"m.request_kind = {bind(q.request_kind)}")
    if q.outcome is not None:
        conditions.append("u.has_error" if q.outcome == "error" else "NOT u.has_error")
    if q.body_state is not None:
        conditions.append(_BODY_STATE_SQL[q.body_state])
    if q.before is not None:
        created_at, usage_id = q.before
        conditions.append(f"(m.created_at, m.usage_id) < ({bind(created_at)}, {bind(usage_id)})")
    return conditions, args


def body_state(row: Mapping[str, Any]) -> str:
    if row["request_body_sha256"] == DELETED:
        return "deleted"
    if row["request_body_sha256"] == FAILED or row["body_blob_sha256"] is None:
        return "failed"
    return "truncated" if row["was_truncated"] else "available"


def _row_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "usage_id": str(row["usage_id"]),
        "created_at": row["created_at"],
        "experiment_id": str(row["experiment_id"]),
        "variant_id": row["variant_id"],
        "label": row["label"],
        "variant_version_id": row["variant_version_id"],
        "subject_kind": row["allocation_subject"],
        "client_request_id": row["client_request_id"],
        "request_kind": row["request_kind"],
        "status_code": row["status_code"],
        "outcome": "error" if row["has_error"] else "success",
        "cancelled": row["cancelled"],
        "streamed": row["streamed"],
        "latency_ms": row["latency_ms"],
        "ttft_ms": row["ttft_ms"],
        "input_tokens": row["input_tokens"],
        "output_tokens": row["output_tokens"],
        "cache_read_tokens": row["cache_read_tokens"],
        "cache_write_tokens": row["cache_write_tokens"],
        "market_cost_microdollars": row["market_cost_microdollars"],
        "system_prompt_sha256": row["system_prompt_sha256"],
        "request_body_sha256": row["request_body_sha256"],
        "was_truncated": row["was_truncated"],
        "body_state": body_state(row),
    }


async def list_requests(request: web.Request) -> web.Response:
    q = parse_request_query(request.query)
    conditions, args = _where(q)
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    args.append(q.limit + 1)
    rows = await context(request).pool.fetch(
        f"SELECT {_COLUMNS} {_FROM} {where} "
        f"ORDER BY m.created_at DESC, m.usage_id DESC LIMIT ${len(args)}",
        *args,
    )
    page = rows[: q.limit]
    more = len(rows) > q.limit
    return json_response({
        "requests": [_row_json(r) for r in page],
        "next_cursor": encode_cursor(page[-1]["created_at"], page[-1]["usage_id"]) if more
        else None,
    })


_ONE_SQL = f"SELECT {_COLUMNS} {_FROM} WHERE m.usage_id = $1"


async def _body(conn: asyncpg.Connection, row: Mapping[str, Any], store_setting: str
                ) -> StoredBody:
    ref = EvidenceRef(row["request_body_sha256"], row["body_blob_sha256"])
    [result] = await load_bodies(conn, open_blob_store(store_setting), [ref])
    if isinstance(result, StoredBody):
        return result
    if isinstance(result, EvidenceDeleted):
        raise Gone(str(result))
    if isinstance(result, CorruptEvidence):
        raise InternalError(f"stored prompt evidence is corrupt: {result}")
    raise NotFound(str(result))


async def download_prompt(request: web.Request) -> web.StreamResponse:
    usage_id = path_uuid(request.match_info["usage_id"], "request")
    ctx = context(request)
    who = actor(request).name
    async with ctx.pool.acquire() as conn:
        row = await conn.fetchrow(_ONE_SQL, usage_id)
        if row is None:
            raise NotFound("request not found")
        body = await _body(conn, row, ctx.settings.prompt_store)
        await record(
            conn, actor=who, action="prompt.download",
            experiment_id=row["experiment_id"], variant_id=row["variant_id"],
            version_id=row["variant_version_id"],
            after={"usage_id": str(usage_id), "request_body_sha256": row["request_body_sha256"],
                   "truncated": body.truncated, "bytes": len(body.content)},
        )
    if body.truncated:
        filename, content_type = f"{usage_id}.json.part", "text/plain"
    else:
        filename, content_type = f"{usage_id}.json", "application/json"
    response = web.Response(body=body.content, content_type=content_type,
                            charset="utf-8" if body.truncated else None)
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["Cache-Control"] = "no-store"
    return response


def register_routes(app: web.Application) -> None:
    app.router.add_get("/api/requests", list_requests)
    app.router.add_get("/api/requests/{usage_id}/prompt", download_prompt)


# -- OpenAPI (merged by admin/openapi.py) ----------------------------------------------

_HASH = {"type": "string", "pattern": "^([0-9a-f]{64}|__absent__|__failed__|__deleted__)$"}
OPENAPI_SCHEMAS: dict[str, Any] = {
    "RequestRow": obj({
        "usage_id": {"type": "string", "format": "uuid"},
        "created_at": {"type": "string", "format": "date-time"},
        "experiment_id": {"type": "string", "format": "uuid"},
        "variant_id": {"type": "integer"},
        "label": {"type": "string"},
        "variant_version_id": {"type": "integer"},
        "subject_kind": {"type": "string", "enum": ["user", "machine", "ip"]},
        "client_request_id": nullable({"type": "string"}),
        "request_kind": {"type": "string", "enum": list(REQUEST_KINDS)},
        "status_code": {"type": "integer"},
        "outcome": {"type": "string", "enum": list(OUTCOMES)},
        "cancelled": {"type": "boolean"},
        "streamed": {"type": "boolean"},
        "latency_ms": {"type": "integer"},
        "ttft_ms": nullable({"type": "integer"}),
        "input_tokens": {"type": "integer"},
        "output_tokens": {"type": "integer"},
        "cache_read_tokens": {"type": "integer"},
        "cache_write_tokens": {"type": "integer"},
        "market_cost_microdollars": {"type": "integer"},
        "system_prompt_sha256": _HASH,
        "request_body_sha256": _HASH,
        "was_truncated": {"type": "boolean"},
        "body_state": {"type": "string", "enum": list(BODY_STATES)},
    }),
    "RequestPage": obj({
        "requests": {"type": "array", "items": ref("RequestRow")},
        "next_cursor": nullable({"type": "string"}),
    }),
}
OPENAPI_PATHS: dict[str, Any] = {
    "/api/requests": {"get": op(
        "Request rows, newest first (never a subject value, user id or key)",
        {"200": ok("A page of request rows", ref("RequestPage")),
         "400": error("Invalid filter, limit or cursor")},
        params=[
            query("experiment_id", {"type": "string", "format": "uuid"}),
            query("variant_id", {"type": "integer", "minimum": 1}),
            query("variant_version_id", {"type": "integer", "minimum": 1}),
            query("client_request_id", {"type": "string", "maxLength": 500}),
            query("request_kind", {"type": "string", "enum": list(REQUEST_KINDS)}),
            query("outcome", {"type": "string", "enum": list(OUTCOMES)}),
            query("body_state", {"type": "string", "enum": list(BODY_STATES)}),
            query("limit", {"type": "integer", "minimum": LIMIT_MIN, "maximum": LIMIT_MAX,
                            "default": LIMIT_DEFAULT}),
            query("cursor", {"type": "string"}, "next_cursor of the previous page"),
        ],
    )},
    "/api/requests/{usage_id}/prompt": {"get": op(
        "Download the exact request body sent upstream (audited)",
        {"200": {"description": "The body (application/json), or the stored first 4 MiB of "
                                "a truncated one (text/plain, a .part file)",
                 "content": {"application/json": {"schema": {}},
                             "text/plain": {"schema": {"type": "string"}}}},
         "404": error("No such request, or its evidence was not captured"),
         "410": error("The evidence was deleted (wipe-user)"),
         "500": error("The stored evidence does not match its hash")},
        params=[{"name": "usage_id", "in": "path", "required": True,
                 "schema": {"type": "string", "format": "uuid"}}],
    )},
}
