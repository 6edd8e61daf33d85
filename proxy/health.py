"""Operational endpoints: liveness, readiness and Prometheus metrics.

``/healthz`` answers 200 for as long as the process serves HTTP. ``/readyz``
answers 200 only when routing config is loaded and the recorder can keep
rows, else 503 with the reasons. ``/metrics`` aggregates every worker's
metrics when ``PROMETHEUS_MULTIPROC_DIR`` is set (``abgate proxy --workers N``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from proxy.metrics import PER_REQUEST

__all__ = ["healthz", "metrics", "metrics_text", "readyz_handler"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(status: int, payload: object) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return _json(200, {"status": "ok"})


def readyz_handler(not_ready_reasons: Callable[[], list[str]]) -> Handler:
    """``GET /readyz``: 200 when ``not_ready_reasons()`` is empty, else 503 listing them."""

    async def readyz(request: web.Request) -> web.Response:
        reasons = not_ready_reasons()
        if reasons:
            return _json(503, {"status": "not_ready", "reasons": reasons})
        return _json(200, {"status": "ready"})

    return readyz


def metrics_text() -> bytes:
    """The Prometheus exposition of this process, or of all workers in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


async def metrics(request: web.Request) -> web.Response:
    PER_REQUEST.flush()  # on the loop, where requests add to it: this process is exact
    # Multiprocess collection reads one file per worker and metric: keep it off the loop.
    body = await asyncio.to_thread(metrics_text)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
