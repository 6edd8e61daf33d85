"""The proxy's aiohttp application: wiring, routing decision and error safety net.

Every request that is not ``/healthz``, ``/readyz`` or ``/metrics`` goes to
:meth:`ProxyHandler.handle`, which decides as cheaply as possible whether it
is an experimented call (DESIGN.md "Data plane", step 1):

1. not a POST to an LLM endpoint → passthrough, body streamed unread;
2. no live experiment anywhere → passthrough, body streamed unread;
3. body read (bounded); no member id in its bytes → passthrough of those bytes;
4. ``model`` is not a member → passthrough of the original bytes;
5. otherwise the experiment path (:mod:`proxy.experiment`).

Request bodies are read from ``request.content`` here, never with
``request.read()``: aiohttp's ``client_max_size`` would buffer passthrough
uploads and refuse large ones.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.typedefs import Handler

from abgate.config import Settings
from abgate.crypto import KeyRing
from abgate.db import close_pool, create_pool
from abgate.evidence_sink import batch_evidence
from proxy import feedback, health, passthrough
from proxy.config_store import ConfigStore
from proxy.errors import PayloadTooLarge, ProxyError, Unavailable
from proxy.experiment import CLIENT_CLOSED, ExperimentHandler, count_request, error_response
from proxy.heap import HeapTrimmer
from proxy.identity import IdentityResolver
from proxy.metrics import FLUSH_INTERVAL_S, PER_REQUEST
from proxy.recorder import Recorder
from proxy.routing import MemberIndex, candidate_api_kind
from proxy.spool import Spool
from proxy.transform import pseudonym_secret
from proxy.upstream_client import UpstreamClients, UpstreamTimer

__all__ = [
    "PROXY",
    "ProxyHandler",
    "ProxyRuntime",
    "ProxyState",
    "create_app",
    "create_runner",
    "error_response",
    "read_body",
]

log = logging.getLogger("abgate.proxy")

_PASSTHROUGH = "passthrough"
_READ_CHUNK = 256 * 1024


async def read_body(request: web.BaseRequest, limit: int) -> bytes:
    """The whole request body, refusing (413) more than ``limit`` bytes.

    The announced Content-Length is checked before reading anything; a chunked
    body is counted while it arrives.
    """
    announced = request.content_length
    if announced is not None and announced > limit:
        raise PayloadTooLarge()
    if not request.body_exists:
        return b""
    content = request.content
    body = await content.read(_READ_CHUNK)
    if len(body) == announced:
        return body  # the usual case: all of it in one read, nothing to join
    parts = [body]
    size = len(body)
    while body:
        if size > limit:
            raise PayloadTooLarge()
        body = await content.read(_READ_CHUNK)
        size += len(body)
        parts.append(body)
    return b"".join(parts)


@dataclass
class ProxyHandler:
    """Routes one request to passthrough or the experiment path."""

    settings: Settings
    store: ConfigStore
    clients: UpstreamClients
    experiment: ExperimentHandler

    def __post_init__(self) -> None:
        self._index = MemberIndex()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        api_kind = candidate_api_kind(request.method, request.path)
        timer = UpstreamTimer()
        PER_REQUEST.in_flight += 1
        try:
            if api_kind is None:
                return await self._passthrough(request, None, timer)
            try:
                return await self._candidate(request, api_kind, timer)
            except ProxyError as exc:
                count_request(api_kind, "", "", exc.status, timer)
                return error_response(exc)
        finally:
            PER_REQUEST.in_flight -= 1

    async def _candidate(
        self, request: web.Request, api_kind: str, timer: UpstreamTimer
    ) -> web.StreamResponse:
        limit = self.settings.max_body_bytes
        announced = request.content_length
        if announced is not None and announced > limit:
            raise PayloadTooLarge()
        members = self.store.members
        if not members:
            return await self._passthrough(request, None, timer)
        body = await read_body(request, limit)
        self._index.refresh(members)
        candidate = self._index.match(body)
        if candidate is None:
            return await self._passthrough(request, body, timer)
        response = await self.experiment.handle(
            request, api_kind, candidate.public_model_id, candidate.payload, timer
        )
        if response is None:  # no live experiment after all (it just ended)
            return await self._passthrough(request, body, timer)
        return response

    async def _passthrough(
        self, request: web.Request, body: bytes | None, timer: UpstreamTimer
    ) -> web.StreamResponse:
        status = 500  # an unexpected error, answered by the safety net
        try:
            response = await passthrough.forward(
                request,
                session=self.clients.gateway,
                gateway_url=self.settings.gateway_url,
                body=body,
                timer=timer,
            )
            status = response.status
            return response
        except ProxyError as exc:
            status = exc.status
            return error_response(exc)
        except (asyncio.CancelledError, ConnectionError):
            status = CLIENT_CLOSED
            raise
        finally:
            count_request(_PASSTHROUGH, "", "", status, timer)


# -- application -----------------------------------------------------------------


# Readiness fails when the spool is this full while Postgres is refusing writes:
# rows are about to be dropped. A Postgres outage alone does not make the proxy
# unready (every replica would leave the load balancer at once, taking the
# passthrough traffic down with it); the spool exists to ride it out.
_SPOOL_NEARLY_FULL = 0.9


@dataclass
class ProxyState:
    """Everything the running proxy holds; built on startup, closed on cleanup."""

    settings: Settings
    store: ConfigStore
    recorder: Recorder
    spool: Spool
    handler: ProxyHandler

    def not_ready_reasons(self) -> list[str]:
        reasons = []
        if not self.store.ready:
            reasons.append("routing config not loaded yet")
        spool_full = self.spool.size_bytes >= self.settings.spool_max_bytes * _SPOOL_NEARLY_FULL
        if not self.recorder.healthy and spool_full:
            reasons.append("request records cannot be kept: database writes fail, spool full")
        return reasons


class ProxyRuntime:
    """Holds the state while the app runs (None before startup and after cleanup)."""

    state: ProxyState | None = None


PROXY = web.AppKey("abgate_proxy", ProxyRuntime)


def _guarded(handler: Handler) -> Handler:
    """``handler``, answering a generic 500 for an unexpected error: no stack trace
    ever reaches a client.

    A wrapper around each route's handler, not a middleware: aiohttp calls a
    middleware through a cached partial and one more coroutine per request.
    """

    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ProxyError as exc:
            return error_response(exc)
        except web.HTTPException:
            raise
        except ConnectionError:
            raise  # the client went away; nothing to answer
        except Exception:
            # Method and path only: headers, query and body can carry credentials.
            log.exception("unhandled error serving %s %s", request.method, request.path)
            return error_response(ProxyError())

    return guarded


def create_app(settings: Settings) -> web.Application:
    """The proxy application; resources are created on startup and closed on cleanup."""
    runtime = ProxyRuntime()
    app = web.Application()
    app[PROXY] = runtime
    app.cleanup_ctx.append(_resources(settings, runtime))
    app.cleanup_ctx.append(_heap_trimming)
    app.cleanup_ctx.append(_metrics_flushing)

    async def dispatch(request: web.Request) -> web.StreamResponse:
        state = runtime.state
        if state is None:  # only reachable while shutting down
            return error_response(Unavailable())
        return await state.handler.handle(request)

    def not_ready() -> list[str]:
        state = runtime.state
        return ["not started"] if state is None else state.not_ready_reasons()

    app.router.add_get("/healthz", _guarded(health.healthz))
    app.router.add_get("/readyz", _guarded(health.readyz_handler(not_ready)))
    app.router.add_get("/metrics", _guarded(health.metrics))
    feedback.add_routes(app, settings, guard=_guarded)
    app.router.add_route("*", "/{tail:.*}", _guarded(dispatch))
    return app


def create_runner(settings: Settings) -> web.AppRunner:
    """An AppRunner for the proxy with the server settings it relies on."""
    return web.AppRunner(
        create_app(settings),
        handle_signals=False,
        access_log=None,
        # A client that goes away cancels its handler, which cancels the upstream call.
        handler_cancellation=True,
        # Request bodies are relayed as received (a gzip upload stays gzip).
        auto_decompress=False,
        # In-flight requests get this long on shutdown; 0 would mean "forever" to aiohttp.
        shutdown_timeout=max(settings.drain_s, 0.001),
    )


async def _heap_trimming(app: web.Application) -> AsyncIterator[None]:
    """Freed memory goes back to the system every few seconds (see proxy.heap)."""
    task = asyncio.create_task(HeapTrimmer().run(), name="abgate-heap-trim")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _metrics_flushing(app: web.Application) -> AsyncIterator[None]:
    """Per-request metrics reach prometheus_client every second and at shutdown."""

    async def flush_now_and_then() -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            PER_REQUEST.flush()

    task = asyncio.create_task(flush_now_and_then(), name="abgate-metrics-flush")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        PER_REQUEST.flush()


def _resources(
    settings: Settings, runtime: ProxyRuntime
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def resources(app: web.Application) -> AsyncIterator[None]:
        if settings.database_url is None:
            raise RuntimeError("the proxy needs ABGATE_DATABASE_URL")
        # min_size=0: the proxy starts (and passes traffic through) while
        # Postgres is down; /readyz reports it until the store has loaded.
        pool = await create_pool(settings.database_url, min_size=0, max_size=10)
        redis = aioredis.Redis.from_url(settings.redis_url) if settings.redis_url else None
        store = ConfigStore(pool, redis, settings.redis_namespace)
        spool = Spool(settings.spool_dir, settings.spool_max_bytes)
        recorder = Recorder(pool, spool)
        recorder.evidence = batch_evidence(settings.prompt_store)
        clients = UpstreamClients.create(allow_insecure_upstream=settings.allow_insecure_upstream)
        experiment = ExperimentHandler(
            settings=settings,
            store=store,
            recorder=recorder,
            session=clients.partner,
            identity=IdentityResolver(settings),
            keyring=KeyRing(settings.encryption_keys),
            pseudonym_secret=(
                pseudonym_secret(settings.encryption_keys) if settings.encryption_keys else None
            ),
        )
        handler = ProxyHandler(settings, store, clients, experiment)
        try:
            await store.start()
            await recorder.start()
            runtime.state = ProxyState(settings, store, recorder, spool, handler)
            yield
        finally:
            runtime.state = None
            # Reverse order: no new config, flush every row, then close connections.
            await store.close()
            await recorder.close(timeout=max(settings.drain_s, 1.0))
            spool.close()
            await clients.close()
            if redis is not None:
                await redis.aclose()
            await close_pool(pool)

    return resources
