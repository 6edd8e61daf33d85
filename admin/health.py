"""Unauthenticated operational endpoints: probes, Prometheus metrics, the API description."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from admin.context import context
from admin.errors import error_response
from admin.http import json_response
from admin.openapi import document

__all__ = ["register_routes"]

log = logging.getLogger("abgate.admin")

_READY_TIMEOUT_S = 2.0


async def healthz(_: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when the database answers; Redis is optional (proxies poll without it)."""
    try:
        async with asyncio.timeout(_READY_TIMEOUT_S):
            await context(request).pool.fetchval("SELECT 1")
    except Exception as exc:  # any failure to answer means "not ready"
        log.warning("readiness check failed: database unreachable (%s)", type(exc).__name__)
        # 503 is what orchestrators expect from a readiness probe.
        response = error_response(500, "database unreachable")
        response.set_status(503)
        return response
    return json_response({"status": "ready"})


async def metrics(_: web.Request) -> web.Response:
    response = web.Response(body=generate_latest(REGISTRY))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


async def openapi(_: web.Request) -> web.Response:
    return json_response(document())


def register_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
