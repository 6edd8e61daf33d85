"""The admin API's error shape and the middleware that puts every error in it.

Every error answer, including the ones aiohttp raises itself (unknown route,
wrong method, body too large), is
``{"error": {"code": "...", "message": "..."}}``. Messages are written for the
operator and never contain a key, a token or a stack trace.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

__all__ = [
    "ApiError",
    "BadRequest",
    "Conflict",
    "Forbidden",
    "InternalError",
    "NotFound",
    "Unauthorized",
    "error_middleware",
    "error_response",
]

log = logging.getLogger("abgate.admin")

_CODES: dict[int, str] = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    409: "CONFLICT",
    500: "INTERNAL_SERVER_ERROR",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An error answered to the client with ``status`` and ``message``."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class InternalError(ApiError):
    status = 500


def _code(status: int) -> str:
    """The contract's code for a status; other 4xx (405, 413, ...) are BAD_REQUEST."""
    if status in _CODES:
        return _CODES[status]
    return "INTERNAL_SERVER_ERROR" if status >= 500 else "BAD_REQUEST"


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = orjson.dumps({"error": {"code": _code(status), "message": message}})
    return web.Response(
        status=status, body=body, content_type="application/json", headers=headers
    )


_HTTP_MESSAGES: dict[int, str] = {
    404: "no such route",
    405: "method not allowed on this route",
    413: "request body is too large",
}


def _from_http_exception(exc: web.HTTPException) -> web.Response:
    message = _HTTP_MESSAGES.get(exc.status, exc.reason)
    headers = {}
    if isinstance(exc, web.HTTPMethodNotAllowed):
        headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
    if exc.status == 401 and "WWW-Authenticate" in exc.headers:
        headers["WWW-Authenticate"] = exc.headers["WWW-Authenticate"]
    return error_response(exc.status, message, headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        if exc.status >= 500:
            log.error("admin %s %s failed: %s", request.method, _route(request), exc.message)
        return error_response(exc.status, exc.message, headers)
    except web.HTTPException as exc:
        if exc.status < 400:  # redirects and other non-errors pass through
            raise
        return _from_http_exception(exc)
    except Exception as exc:
        # Plaintext keys only live in the version handlers, which hand them straight
        # to KeyRing.encrypt (whose errors never quote them), so a traceback is safe.
        log.exception("admin %s %s: unexpected %s", request.method, _route(request),
                      type(exc).__name__)
        return error_response(500, "internal error")


def _route(request: web.Request) -> str:
    """The matched route template (never the raw path, which may carry ids)."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"
