"""``POST /v1/feedback``: a user's thumbs up or down on one of their requests.

Body: ``{"client_request_id": str, "rating": 1 | -1, "comment"?: str | null}``.
The subject is resolved with the same rules as an experimented request
(:class:`~proxy.identity.IdentityResolver`), so feedback joins the request
rows on (client request id, subject kind, subject value). The latest rating
per (client request id, subject) wins, comment included. A bad body is a 400 and
a bearer JWT that fails verification a 401, both in the OpenAI error shape.

The handler keeps a small pool of its own (created on startup) so that it is
wired into the app with one line and shares nothing with the request path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from abgate.config import Settings
from abgate.db import close_pool, create_pool
from proxy.errors import BadRequest, PayloadTooLarge, ProxyError, Unauthorized, Unavailable
from proxy.identity import IdentityResolver, InvalidToken, Subject
from proxy.metrics import REQUESTS

__all__ = ["MAX_BODY_BYTES", "Feedback", "add_routes", "parse_feedback"]

log = logging.getLogger("abgate.proxy.feedback")

MAX_BODY_BYTES = 16 * 1024
MAX_CLIENT_REQUEST_ID = 500
MAX_COMMENT = 4000
_FIELDS = ("client_request_id", "rating", "comment")
_WRITE_TIMEOUT_S = 5.0

_UPSERT_SQL = """
INSERT INTO feedback (client_request_id, allocation_subject, subject_value, rating, comment)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (client_request_id, allocation_subject, subject_value) DO UPDATE
SET rating = EXCLUDED.rating, comment = EXCLUDED.comment, updated_at = now()
"""


@dataclass(frozen=True)
class Feedback:
    client_request_id: str
    rating: int
    comment: str | None


def _text(value: Any, name: str, minimum: int, maximum: int) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string", code="invalid_feedback")
    if not minimum <= len(value) <= maximum:
        raise BadRequest(f"{name} must be {minimum}-{maximum} characters",
                         code="invalid_feedback")
    if "\x00" in value:
        raise BadRequest(f"{name} must not contain NUL characters", code="invalid_feedback")
    return value


def parse_feedback(raw: bytes) -> Feedback:
    """Validate a feedback body; raises :class:`BadRequest` naming the field."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("request body is not valid JSON", code="invalid_feedback") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object", code="invalid_feedback")
    unknown = sorted(k for k in body if k not in _FIELDS)
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r} (allowed: {', '.join(_FIELDS)})",
                         code="invalid_feedback")
    for name in ("client_request_id", "rating"):
        if name not in body:
            raise BadRequest(f"{name} is required", code="invalid_feedback")
    client_request_id = _text(body["client_request_id"], "client_request_id", 1,
                              MAX_CLIENT_REQUEST_ID)
    if not client_request_id.strip():
        raise BadRequest("client_request_id must not be blank", code="invalid_feedback")
    rating = body["rating"]
    # bool is an int subclass: true is not a rating.
    if isinstance(rating, bool) or rating not in (1, -1):
        raise BadRequest("rating must be 1 or -1", code="invalid_feedback")
    comment = body.get("comment")
    if comment is not None:
        comment = _text(comment, "comment", 0, MAX_COMMENT)
    return Feedback(client_request_id, int(rating), comment)


async def _read_limited(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise PayloadTooLarge()
    body = await request.content.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLarge()
    return body


@dataclass
class _Resources:
    pool: asyncpg.Pool | None = None
    identity: IdentityResolver | None = None


def _error(exc: ProxyError) -> web.Response:
    REQUESTS.labels("feedback", "", "", str(exc.status)).inc()
    return web.Response(status=exc.status, body=exc.body(), content_type="application/json")


def _handler(resources: _Resources) -> Handler:
    async def post_feedback(request: web.Request) -> web.Response:
        if resources.pool is None or resources.identity is None:
            return _error(Unavailable())
        try:
            feedback = parse_feedback(await _read_limited(request))
            subject = _subject(resources.identity, request.headers, request.remote)
            await _store(resources.pool, feedback, subject)
        except ProxyError as exc:
            return _error(exc)
        REQUESTS.labels("feedback", "", "", "200").inc()
        return web.Response(
            body=orjson.dumps({"client_request_id": feedback.client_request_id,
                               "rating": feedback.rating, "recorded": True}),
            content_type="application/json",
        )

    return post_feedback


def _subject(identity: IdentityResolver, headers: Mapping[str, str], peer: str | None) -> Subject:
    try:
        return identity.resolve(headers, peer)
    except InvalidToken as exc:
        raise Unauthorized(str(exc)) from None


async def _store(pool: asyncpg.Pool, feedback: Feedback, subject: Subject) -> None:
    try:
        async with asyncio.timeout(_WRITE_TIMEOUT_S):
            await pool.execute(
                _UPSERT_SQL, feedback.client_request_id, subject.kind, subject.value,
                feedback.rating, feedback.comment,
            )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.warning("feedback could not be stored (%s)", type(exc).__name__)
        raise Unavailable() from None


def add_routes(
    app: web.Application,
    settings: Settings,
    *,
    guard: Callable[[Handler], Handler] = lambda handler: handler,
) -> None:
    """Register ``POST /v1/feedback`` (before the proxy's catch-all route).

    ``guard`` wraps the handler, as the app wraps each of its routes.
    """
    resources = _Resources()

    async def lifecycle(_: web.Application) -> AsyncIterator[None]:
        if settings.database_url is None:
            raise RuntimeError("feedback needs ABGATE_DATABASE_URL")
        resources.identity = IdentityResolver(settings)
        resources.pool = await create_pool(settings.database_url, min_size=0, max_size=4)
        try:
            yield
        finally:
            pool, resources.pool = resources.pool, None
            await close_pool(pool)

    app.cleanup_ctx.append(lifecycle)
    app.router.add_post("/v1/feedback", guard(_handler(resources)))
