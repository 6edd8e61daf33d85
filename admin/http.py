"""Small request/response helpers shared by the admin handlers."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from admin.errors import BadRequest

__all__ = ["json_response", "read_json"]


async def read_json(request: web.Request) -> Any:
    """The request body as JSON; an empty or malformed body is a 400."""
    raw = await request.read()  # raises 413 past client_max_size
    if not raw.strip():
        raise BadRequest("request body must be a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("request body is not valid JSON") from None


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")
