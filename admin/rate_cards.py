"""Rate cards: insert-only price history (``GET/POST /api/rate-cards``).

A card prices ``(provider, model)`` per million tokens in microdollars from
``effective_from`` on. For experiment traffic ``provider`` is the upstream's
host name (``base_url`` host, stored lowercase) and ``model`` the version's
``internal_id`` (abgate/pricing.py). Cards are never changed or deleted (a
trigger refuses it): a correction is a new card with a later ``effective_from``.
A second card for the same (provider, model, effective_from) is a 409. Creating
one needs the admin role (the auth middleware) and is audited.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from aiohttp import web

from admin.audit import record
from admin.context import actor, context
from admin.errors import BadRequest, Conflict
from admin.evidence_openapi import error, obj, ok, op, query, ref
from admin.http import json_response, read_json
from admin.query_params import optional_text, parse_timestamp

__all__ = ["PRICE_MAX", "RateCardCreate", "parse_rate_card", "register_routes"]

TEXT_MAX = 200
# $1,000,000 per million tokens: far above any real price, far below bigint overflow.
PRICE_MAX = 10**12
_PRICES = (
    "input_per_1m_microdollars",
    "output_per_1m_microdollars",
    "cache_read_per_1m_microdollars",
    "cache_write_per_1m_microdollars",
)
_REQUIRED = ("provider", "model", "input_per_1m_microdollars", "output_per_1m_microdollars")
_FIELDS = ("provider", "model", "effective_from", *_PRICES)
_COLUMNS = ("id, provider, model, effective_from, " + ", ".join(_PRICES)
            + ", created_by, created_at")


@dataclass(frozen=True)
class RateCardCreate:
    provider: str
    model: str
    effective_from: datetime | None  # None: now
    prices: dict[str, int]


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{name} must be a non-blank string")
    if len(value) > TEXT_MAX or "\x00" in value:
        raise BadRequest(f"{name} must be at most {TEXT_MAX} characters, without NUL")
    return value.strip()


def _price(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{name} must be an integer (microdollars per million tokens)")
    if not 0 <= value <= PRICE_MAX:
        raise BadRequest(f"{name} must be between 0 and {PRICE_MAX}")
    return value


def parse_rate_card(body: Any) -> RateCardCreate:
    if not isinstance(body, Mapping):
        raise BadRequest("request body must be a JSON object")
    unknown = sorted(k for k in body if k not in _FIELDS)
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r} (allowed: {', '.join(_FIELDS)})")
    for name in _REQUIRED:
        if name not in body:
            raise BadRequest(f"{name} is required")
    effective_from = body.get("effective_from")
    if effective_from is not None and not isinstance(effective_from, str):
        raise BadRequest("effective_from must be an ISO 8601 timestamp string")
    return RateCardCreate(
        provider=_text(body["provider"], "provider").lower(),
        model=_text(body["model"], "model"),
        effective_from=(
            parse_timestamp(effective_from, "effective_from") if effective_from else None
        ),
        prices={name: _price(body.get(name, 0), name) for name in _PRICES},
    )


def card_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {name: row[name] for name in (
        "id", "provider", "model", "effective_from", *_PRICES, "created_by", "created_at"
    )}


async def list_rate_cards(request: web.Request) -> web.Response:
    allowed = {"provider", "model"}
    unknown = sorted(set(request.query) - allowed)
    if unknown:
        raise BadRequest(f"unknown parameter {unknown[0]!r} (allowed: model, provider)")
    provider = optional_text(request.query, "provider", TEXT_MAX)
    model = optional_text(request.query, "model", TEXT_MAX)
    rows = await context(request).pool.fetch(
        f"SELECT {_COLUMNS} FROM rate_card "  # noqa: S608 - constant column list
        "WHERE ($1::text IS NULL OR provider = lower($1)) AND ($2::text IS NULL OR model = $2) "
        "ORDER BY provider, model, effective_from DESC, id DESC",
        provider, model,
    )
    return json_response({"rate_cards": [card_json(r) for r in rows]})


async def create_rate_card(request: web.Request) -> web.Response:
    card = parse_rate_card(await read_json(request))
    who = actor(request).name
    async with context(request).pool.acquire() as conn:
        try:
            async with conn.transaction():
                row = await conn.fetchrow(
                    f"INSERT INTO rate_card (provider, model, effective_from, "  # noqa: S608
                    f"{', '.join(_PRICES)}, created_by) "
                    "VALUES ($1, $2, coalesce($3, now()), $4, $5, $6, $7, $8) "
                    f"RETURNING {_COLUMNS}",
                    card.provider, card.model, card.effective_from,
                    *(card.prices[name] for name in _PRICES), who,
                )
                assert row is not None
                created = card_json(row)
                await record(conn, actor=who, action="rate_card.create", after=created)
        except asyncpg.UniqueViolationError:
            raise Conflict(
                f"a rate card for {card.provider!r} / {card.model!r} already takes effect at "
                "that time; cards are insert-only, add one with a later effective_from"
            ) from None
    return json_response(created, status=201)


def register_routes(app: web.Application) -> None:
    app.router.add_get("/api/rate-cards", list_rate_cards)
    app.router.add_post("/api/rate-cards", create_rate_card)


# -- OpenAPI (merged by admin/openapi.py) ----------------------------------------------

_PRICE = {"type": "integer", "minimum": 0, "maximum": PRICE_MAX,
          "description": "microdollars per million tokens"}
_TEXT = {"type": "string", "minLength": 1, "maxLength": TEXT_MAX}
OPENAPI_SCHEMAS: dict[str, Any] = {
    "RateCard": obj({
        "id": {"type": "integer"},
        "provider": {"type": "string"},
        "model": {"type": "string"},
        "effective_from": {"type": "string", "format": "date-time"},
        **{name: {"type": "integer"} for name in _PRICES},
        "created_by": {"type": "string"},
        "created_at": {"type": "string", "format": "date-time"},
    }),
    "RateCardList": obj({"rate_cards": {"type": "array", "items": ref("RateCard")}}),
    "RateCardCreate": {
        **obj(
            {
                "provider": {**_TEXT, "description": "the upstream base_url's host name"},
                "model": {**_TEXT, "description": "the upstream internal_id"},
                "effective_from": {"type": "string", "format": "date-time",
                                   "description": "with a UTC offset; default now"},
                **{name: _PRICE for name in _PRICES},
            },
            _REQUIRED,
        ),
        "examples": [{"provider": "api.partner.example", "model": "partner/checkpoint-2025-01",
                      "effective_from": "2025-01-01T00:00:00Z",
                      "input_per_1m_microdollars": 3_000_000,
                      "output_per_1m_microdollars": 15_000_000,
                      "cache_read_per_1m_microdollars": 300_000}],
    },
}
OPENAPI_PATHS: dict[str, Any] = {
    "/api/rate-cards": {
        "get": op(
            "Rate cards (insert-only price history), newest first per model",
            {"200": ok("Rate cards", ref("RateCardList")),
             "400": error("Invalid query parameter")},
            params=[query("provider", _TEXT), query("model", _TEXT)],
        ),
        "post": op(
            "Add a rate card (admin)",
            {"201": ok("The new card", ref("RateCard")),
             "409": error("A card for this provider, model and effective_from exists")},
            body="RateCardCreate", write=True,
        ),
    },
}
