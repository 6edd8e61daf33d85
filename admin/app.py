"""The admin application: wiring of resources, middlewares and routes.

Each module registers its own routes (``register_routes(app)``); evidence
endpoints (stats, request browser, prompt download) plug in the same way by
adding their module to :data:`admin.openapi.EXTENSION_MODULES`.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import redis.asyncio as aioredis
from aiohttp import web

from abgate.config import Settings
from abgate.crypto import KeyRing
from abgate.db import close_pool, create_pool
from admin.auth import Authenticator, auth_middleware
from admin.context import CONTEXT, AdminContext
from admin.errors import error_middleware
from admin.metrics import REQUEST_DURATION, REQUESTS, method_label
from admin.openapi import EXTENSION_MODULES
from admin.publish import Publisher

__all__ = ["MAX_BODY_BYTES", "ROUTE_MODULES", "STATIC_DIR", "create_app"]

log = logging.getLogger("abgate.admin")

# Largest request body: an upstream with a 64 KiB extra_body plus a key fits easily.
MAX_BODY_BYTES = 1024 * 1024
STATIC_DIR = Path(__file__).resolve().parent / "static"
# Modules with a ``register_routes(app)``. The optional ones
# (admin.openapi.EXTENSION_MODULES) are skipped when absent.
ROUTE_MODULES: tuple[str, ...] = (
    "admin.health",
    "admin.experiments",
    "admin.variants",
    "admin.audit",
)
_REDIS_TIMEOUT_S = 1.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    response = await handler(request)
    REQUESTS.labels(route, method_label(request.method), str(response.status)).inc()
    REQUEST_DURATION.labels(route).observe(time.perf_counter() - started)
    return response


def _register_routes(app: web.Application, static_dir: Path | None) -> None:
    for name in ROUTE_MODULES:
        importlib.import_module(name).register_routes(app)
    for name in EXTENSION_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register_routes(app)
    if static_dir is not None and static_dir.is_dir():
        _register_ui(app, static_dir)


def _register_ui(app: web.Application, static_dir: Path) -> None:
    """The UI's static files at /ui/ (index.html for /ui/), and / redirecting there."""
    root = static_dir.resolve()

    async def to_ui(_: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/ui/")

    async def serve(request: web.Request) -> web.StreamResponse:
        name = request.match_info["path"] or "index.html"
        target = (root / name).resolve()
        # A missing file or a path escaping the directory is a 404 in the error shape.
        if not target.is_relative_to(root) or not target.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(target)

    app.router.add_get("/", to_ui)
    app.router.add_get("/ui", to_ui)
    app.router.add_get("/ui/{path:.*}", serve)


def create_app(settings: Settings, *, static_dir: Path | None = STATIC_DIR) -> web.Application:
    """The admin app; its database pool and Redis client open on startup.

    ``static_dir`` holds the web UI (served at /ui/ when the directory exists).
    """
    if settings.database_url is None:
        raise ValueError("the admin app needs settings.database_url")
    app = web.Application(
        client_max_size=MAX_BODY_BYTES,
        middlewares=[
            _metrics_middleware,
            error_middleware,
            auth_middleware(lambda request: request.app[CONTEXT].authenticator),
        ],
    )
    app.cleanup_ctx.append(_resources(settings))
    _register_routes(app, static_dir)
    importlib.import_module("admin.maintenance").register(app)  # partitions, retention, SRM
    return app


def _resources(
    settings: Settings,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def resources(app: web.Application) -> AsyncIterator[None]:
        assert settings.database_url is not None
        pool = await create_pool(settings.database_url, min_size=1, max_size=10)
        redis = (
            aioredis.Redis.from_url(
                settings.redis_url,
                socket_connect_timeout=_REDIS_TIMEOUT_S,
                socket_timeout=_REDIS_TIMEOUT_S,
            )
            if settings.redis_url
            else None
        )
        app[CONTEXT] = AdminContext(
            settings=settings,
            pool=pool,
            redis=redis,
            keyring=KeyRing(settings.encryption_keys),
            publisher=Publisher(redis, settings.redis_namespace),
            authenticator=Authenticator(pool, settings.admin_token),
        )
        if not settings.encryption_keys:
            log.warning("ABGATE_ENCRYPTION_KEYS is not set: creating versions and "
                        "rotating keys will fail until it is")
        try:
            yield
        finally:
            if redis is not None:
                await redis.aclose()
            await close_pool(pool)

    return resources
