"""The experiment path: one request whose ``model`` is a live preview id.

:meth:`ExperimentHandler.handle` moves bytes between the sans-I/O pieces, in
DESIGN.md "Data plane" order: snapshot → status rules → identity → bucket →
decrypt the chosen key → transform → one upstream call (never retried, so the
version recorded is the version that served) → blinded answer → one record.

Every request that reached the upstream call is recorded exactly once, in a
``finally`` block, whatever ended it: success, upstream error status,
unreachable, timeout, or the client going away (``cancelled``). Recording is
synchronous, so it also happens when the handler task is being cancelled.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDictProxy
from prometheus_client import Counter, Histogram
from yarl import URL

from abgate.config import Settings
from abgate.crypto import CryptoError, KeyRing
from abgate.upstream import Upstream
from proxy.blinding import Blinder
from proxy.bucketing import choose_variant
from proxy.config_store import ConfigStore, ConfigUnavailable
from proxy.digests import PrefixDigests
from proxy.errors import (
    DataCollectionRequired,
    ModelNotFound,
    ProxyError,
    Unauthorized,
    Unavailable,
    UnsupportedApi,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from proxy.evidence import capped, hash_request, system_prompt
from proxy.headers import experiment_response_headers
from proxy.identity import IdentityResolver, InvalidToken, Subject
from proxy.metrics import (
    OVERHEAD,
    PER_REQUEST,
    REQUEST_DURATION,
    REQUESTS,
    TOKENS,
    UPSTREAM_TTFT,
)
from proxy.recorder import Recorder
from proxy.records import RequestRecord
from proxy.snapshot import VariantRoute
from proxy.stream_transform import StreamTransformer
from proxy.transform import (
    PreparedRequest,
    data_collection_denied,
    prepare_upstream_body,
    pseudonym,
)
from proxy.upstream_client import UpstreamTimer
from proxy.usage import Usage, usage_from_body

__all__ = [
    "ANTHROPIC_VERSION",
    "CLIENT_CLOSED",
    "ExperimentHandler",
    "count_request",
    "error_response",
    "stream_error_event",
    "upstream_headers",
]

log = logging.getLogger("abgate.proxy.experiment")

ANTHROPIC_VERSION = "2023-06-01"
KEEPALIVE_COMMENT = b": keep-alive\n\n"
# Status recorded for a client that left before the upstream answered (nginx's convention).
CLIENT_CLOSED = 499
_MAX_CLIENT_REQUEST_ID = 500
# Decrypted API keys are kept this long, per variant version, in this process
# only (never logged): one AES-GCM decryption per version and minute instead of
# one per request. A snapshot reload (rekey, new version) brings a new blob and
# is decrypted again at once.
_KEY_CACHE_TTL_S = 60.0
_KEY_CACHE_SIZE = 1024


def error_response(exc: ProxyError) -> web.Response:
    """The OpenAI-shaped answer for an error the proxy raises itself."""
    return web.Response(status=exc.status, body=exc.body(), content_type="application/json")


def count_request(
    route: str, public_model_id: str, variant: str, status: int, timer: UpstreamTimer
) -> None:
    """Per-request metrics shared by every route."""
    elapsed = timer.elapsed()
    PER_REQUEST.inc(_requests(route, public_model_id, variant, status))
    PER_REQUEST.observe(_duration(route), elapsed)
    PER_REQUEST.observe(_overhead(route), timer.overhead(elapsed))


# labels() takes a lock and builds a tuple on every call; the children it
# returns live as long as the metric, so caching them changes nothing else
# (and they are the keys PER_REQUEST gathers under).
@functools.lru_cache(maxsize=4096)
def _requests(route: str, public_model_id: str, variant: str, status: int) -> Counter:
    return REQUESTS.labels(route, public_model_id, variant, str(status))


@functools.lru_cache(maxsize=64)
def _duration(route: str) -> Histogram:
    return REQUEST_DURATION.labels(route)


@functools.lru_cache(maxsize=64)
def _overhead(route: str) -> Histogram:
    return OVERHEAD.labels(route)


@functools.lru_cache(maxsize=1024)
def _ttft(public_model_id: str, variant: str) -> Histogram:
    return UPSTREAM_TTFT.labels(public_model_id, variant)


@functools.lru_cache(maxsize=4096)
def _tokens(public_model_id: str, variant: str, kind: str) -> Counter:
    return TOKENS.labels(public_model_id, variant, kind)


def upstream_headers(
    api_kind: str, api_key: str, client_headers: CIMultiDictProxy[str], *, stream: bool
) -> dict[str, str]:
    """The only headers a partner receives: ours. Never the client's auth, cookies or IPs."""
    headers = {
        "content-type": "application/json",
        "accept": "text/event-stream" if stream else "application/json",
    }
    if api_kind == "messages":
        headers["x-api-key"] = api_key
        # The API version and beta features shape the answer the client expects.
        headers["anthropic-version"] = client_headers.get("anthropic-version") or ANTHROPIC_VERSION
        beta = client_headers.get("anthropic-beta")
        if beta:
            headers["anthropic-beta"] = beta
    else:
        headers["authorization"] = f"Bearer {api_key}"
    return headers


def stream_error_event(api_kind: str, exc: ProxyError) -> bytes:
    """An error event in ``api_kind``'s stream format, for a stream the upstream broke."""
    payload: dict[str, Any]
    if api_kind == "messages":
        payload = {"type": "error", "error": {"type": "api_error", "message": exc.message}}
        return b"event: error\ndata: " + orjson.dumps(payload) + b"\n\n"
    if api_kind == "responses":
        payload = {"type": "error", "code": exc.code, "message": exc.message, "param": None}
        return b"event: error\ndata: " + orjson.dumps(payload) + b"\n\n"
    return b"data: " + exc.body() + b"\n\n"


@dataclass(slots=True)
class _Plan:
    """Everything decided before the upstream call."""

    api_kind: str
    public_model_id: str
    variant: VariantRoute
    upstream: Upstream
    version_id: int
    api_key: str = field(repr=False)
    subject: Subject
    payload: dict[str, Any]
    prepared: PreparedRequest


@dataclass(slots=True)
class _Outcome:
    """What happened, filled in as the response progresses; becomes the record."""

    status: int = CLIENT_CLOSED
    has_error: bool = False
    cancelled: bool = False
    streamed: bool = False
    usage: Usage = field(default_factory=Usage)
    ttft_s: float | None = None


class _KeepAliveTimeout(Exception):
    """The upstream stayed silent for ``sse_keepalive_s``."""


class ExperimentHandler:
    """Serves experimented requests; one instance per process."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: ConfigStore,
        recorder: Recorder,
        session: aiohttp.ClientSession,
        identity: IdentityResolver,
        keyring: KeyRing,
        pseudonym_secret: bytes | None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._recorder = recorder
        self._session = session
        self._identity = identity
        self._keyring = keyring
        self._secret = pseudonym_secret
        self._keepalive_s = settings.sse_keepalive_s
        # version id -> (the encrypted blob, its plaintext, monotonic expiry)
        self._keys: dict[int, tuple[dict[str, Any], str, float]] = {}
        self._digests = PrefixDigests()

    async def handle(
        self,
        request: web.Request,
        api_kind: str,
        public_model_id: str,
        payload: dict[str, Any],
        timer: UpstreamTimer,
    ) -> web.StreamResponse | None:
        """Answer an experimented request; None when the id turned out not to be live."""
        started_at = datetime.now(UTC)
        try:
            plan = await self._plan(request, api_kind, public_model_id, payload)
        except ProxyError as exc:
            count_request(api_kind, public_model_id, "", exc.status, timer)
            return error_response(exc)
        if plan is None:
            return None
        return await self._serve(request, plan, started_at, timer)

    # -- decisions -----------------------------------------------------------------

    async def _plan(
        self, request: web.Request, api_kind: str, public_model_id: str, payload: dict[str, Any]
    ) -> _Plan | None:
        try:
            snapshot = await self._store.get(public_model_id)
        except ConfigUnavailable:
            raise Unavailable() from None
        if snapshot is None:
            return None
        if snapshot.status == "paused":
            raise ModelNotFound()
        kinds = snapshot.api_kinds
        if kinds and api_kind not in kinds:
            raise UnsupportedApi()
        if data_collection_denied(payload):
            raise DataCollectionRequired()
        try:
            subject = self._identity.resolve(request.headers, request.remote)
        except InvalidToken:
            raise Unauthorized() from None
        variant = choose_variant(snapshot, subject.kind, subject.value)
        upstream = variant.upstream
        if variant.version_id is None or upstream is None or variant.encrypted_api_key is None:
            raise Unavailable()
        if upstream.api_kind != api_kind:
            raise UnsupportedApi()
        api_key = self._decrypt(variant)
        assert self._secret is not None  # a key decrypted, so the key ring is not empty
        prepared = prepare_upstream_body(
            api_kind,
            payload,
            upstream,
            pseudonym(self._secret, upstream, subject.kind, subject.value),
        )
        return _Plan(
            api_kind=api_kind,
            public_model_id=public_model_id,
            variant=variant,
            upstream=upstream,
            version_id=variant.version_id,
            api_key=api_key,
            subject=subject,
            payload=payload,
            prepared=prepared,
        )

    def _decrypt(self, variant: VariantRoute) -> str:
        blob, version_id = variant.encrypted_api_key, variant.version_id
        assert blob is not None and version_id is not None
        now = time.monotonic()
        cached = self._keys.get(version_id)
        # The same blob object: the snapshot that was decrypted is still the current one.
        if cached is not None and cached[0] is blob and now < cached[2]:
            return cached[1]
        try:
            api_key = self._keyring.decrypt(blob)
        except CryptoError as exc:  # includes NoEncryptionKeyError; messages hold no secret
            log.error("cannot decrypt the API key of variant version %s: %s", version_id, exc)
            raise Unavailable() from None
        if len(self._keys) >= _KEY_CACHE_SIZE:
            self._keys.clear()
        self._keys[version_id] = (blob, api_key, now + _KEY_CACHE_TTL_S)
        return api_key

    # -- the upstream call -----------------------------------------------------------

    async def _serve(
        self, request: web.Request, plan: _Plan, started_at: datetime, timer: UpstreamTimer
    ) -> web.StreamResponse:
        outcome = _Outcome()
        upstream_response: aiohttp.ClientResponse | None = None
        upstream_done = False
        try:
            try:
                sent = time.perf_counter()
                upstream_response = await self._send(request, plan, timer)
                outcome.status = upstream_response.status
                if _is_event_stream(plan, upstream_response):
                    response = await self._relay_stream(
                        request, plan, upstream_response, outcome, sent, timer
                    )
                else:
                    response = await self._relay_whole(
                        plan, upstream_response, outcome, sent, timer
                    )
            except ProxyError as exc:  # unreachable / timeout before the client got anything
                outcome.status, outcome.has_error = exc.status, True
                response = error_response(exc)
            upstream_done = True
            if not response.prepared:
                # Sent here, not by aiohttp after we return: the record below is
                # then off the client's critical path.
                await response.prepare(request)
                await response.write_eof()
            return response
        except (asyncio.CancelledError, ConnectionError):
            outcome.cancelled = True
            raise
        finally:
            if upstream_response is not None:
                if upstream_done:
                    upstream_response.release()
                else:  # the client left: drop the upstream connection so the partner stops
                    upstream_response.close()
            self._finish(request, plan, outcome, started_at, timer)

    async def _send(
        self, request: web.Request, plan: _Plan, timer: UpstreamTimer
    ) -> aiohttp.ClientResponse:
        headers = upstream_headers(
            plan.api_kind, plan.api_key, request.headers, stream=plan.prepared.stream
        )
        started = time.perf_counter()
        try:
            return await self._session.post(
                _endpoint(plan.upstream.endpoint_url),
                data=plan.prepared.body,
                headers=headers,
                timeout=_timeout(plan.upstream.timeout_s),
                allow_redirects=False,
            )
        except TimeoutError:
            log.warning("upstream of variant version %s timed out", plan.version_id)
            raise UpstreamTimeout() from None
        except aiohttp.ClientError as exc:
            log.warning(
                "upstream of variant version %s unreachable: %s",
                plan.version_id,
                type(exc).__name__,
            )
            raise UpstreamUnreachable() from None
        finally:
            timer.upstream_wait += time.perf_counter() - started

    async def _relay_whole(
        self,
        plan: _Plan,
        upstream: aiohttp.ClientResponse,
        outcome: _Outcome,
        sent: float,
        timer: UpstreamTimer,
    ) -> web.Response:
        """A JSON answer or an upstream error: read it all, blind it, answer once."""
        outcome.ttft_s = time.perf_counter() - sent
        started = time.perf_counter()
        try:
            raw = await upstream.read()
        except TimeoutError:
            raise UpstreamTimeout() from None
        except aiohttp.ClientError:
            raise UpstreamUnreachable() from None
        finally:
            timer.upstream_wait += time.perf_counter() - started
        ok = 200 <= upstream.status < 300
        outcome.has_error = not ok
        if ok:
            outcome.usage = _usage_of(plan.api_kind, raw)
        blinded = _blinder(plan).blind(raw)
        return web.Response(
            status=upstream.status,
            body=blinded,
            headers=experiment_response_headers(upstream.headers),
        )

    async def _relay_stream(
        self,
        request: web.Request,
        plan: _Plan,
        upstream: aiohttp.ClientResponse,
        outcome: _Outcome,
        sent: float,
        timer: UpstreamTimer,
    ) -> web.StreamResponse:
        """Forward each upstream chunk, blinded, as soon as it holds complete events."""
        transformer = StreamTransformer(
            plan.api_kind, _blinder(plan), drop_usage_chunk=plan.prepared.forced_usage
        )
        response = web.StreamResponse(
            status=upstream.status, headers=experiment_response_headers(upstream.headers)
        )
        outcome.streamed = True
        await response.prepare(request)
        try:
            while True:
                try:
                    chunk = await self._read_chunk(upstream, timer)
                except _KeepAliveTimeout:
                    await response.write(KEEPALIVE_COMMENT)
                    continue
                if not chunk:
                    break
                if outcome.ttft_s is None:
                    outcome.ttft_s = time.perf_counter() - sent
                out = transformer.feed(chunk)
                if out:
                    await response.write(out)
            tail = transformer.finish()
            if tail:
                await response.write(tail)
        except ProxyError as exc:  # the upstream broke off mid-stream
            log.warning(
                "upstream stream of variant version %s failed: %s", plan.version_id, exc.code
            )
            outcome.status, outcome.has_error = exc.status, True
            await response.write(stream_error_event(plan.api_kind, exc))
        finally:
            outcome.usage = transformer.usage
            outcome.has_error = outcome.has_error or transformer.saw_error_event
        await response.write_eof()
        return response

    async def _read_chunk(self, upstream: aiohttp.ClientResponse, timer: UpstreamTimer) -> bytes:
        """What the upstream sent so far (b"" at the end); _KeepAliveTimeout after a silence.

        Bytes already received are taken without waiting (no keep-alive timer is
        armed for them): a fast upstream costs no timer per chunk.
        """
        content = upstream.content
        started = time.perf_counter()
        deadline: asyncio.Timeout | None = None
        try:
            data = content.read_nowait()
            if data or content.at_eof():
                return data
            # Built only to wait: asyncio.timeout() asks for the running loop,
            # which on Python 3.11 is a getpid() system call.
            deadline = asyncio.timeout(self._keepalive_s)
            async with deadline:
                return await content.readany()
        except TimeoutError:
            if deadline is not None and deadline.expired():
                raise _KeepAliveTimeout() from None
            raise UpstreamTimeout() from None
        except aiohttp.ClientError:
            raise UpstreamUnreachable() from None
        finally:
            timer.upstream_wait += time.perf_counter() - started

    # -- the record ----------------------------------------------------------------

    def _finish(
        self,
        request: web.Request,
        plan: _Plan,
        outcome: _Outcome,
        started_at: datetime,
        timer: UpstreamTimer,
    ) -> None:
        label = plan.variant.label
        count_request(plan.api_kind, plan.public_model_id, label, outcome.status, timer)
        if outcome.ttft_s is not None:
            PER_REQUEST.observe(_ttft(plan.public_model_id, label), outcome.ttft_s)
        usage = outcome.usage
        for kind, tokens in (
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cache_read", usage.cache_read_tokens),
            ("cache_write", usage.cache_write_tokens),
        ):
            if tokens:
                PER_REQUEST.inc(_tokens(plan.public_model_id, label, kind), tokens)
        try:
            self._recorder.record(self._record(request, plan, outcome, started_at, timer))
        except Exception:  # a lost row must never turn into a failed response
            log.exception("could not enqueue the request record")

    def _record(
        self,
        request: web.Request,
        plan: _Plan,
        outcome: _Outcome,
        started_at: datetime,
        timer: UpstreamTimer,
    ) -> RequestRecord:
        sent = plan.prepared.body
        hashes = hash_request(
            sent, system_prompt(plan.api_kind, _sent_view(plan)), digest=self._digests.digest
        )
        usage = outcome.usage
        return RequestRecord(
            created_at=started_at,
            request_kind=plan.api_kind,
            upstream_model=plan.upstream.internal_id,
            status_code=outcome.status,
            user_id=plan.subject.user_id,
            has_error=outcome.has_error,
            cancelled=outcome.cancelled,
            streamed=outcome.streamed,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            latency_ms=round(timer.elapsed() * 1000),
            ttft_ms=None if outcome.ttft_s is None else round(outcome.ttft_s * 1000),
            variant_version_id=plan.version_id,
            allocation_subject=plan.subject.kind,
            subject_value=plan.subject.value,
            client_request_id=self._client_request_id(request),
            system_prompt_sha256=hashes.system_prompt_sha256,
            request_body_sha256=hashes.request_body_sha256,
            was_truncated=hashes.was_truncated,
            prompt_body=capped(sent)[0],
            prompt_system=hashes.system,
        )

    def _client_request_id(self, request: web.Request) -> str | None:
        name = self._settings.client_request_header
        value = request.headers.get(name, "").strip()[:_MAX_CLIENT_REQUEST_ID] if name else ""
        return value or None


def _is_event_stream(plan: _Plan, upstream: aiohttp.ClientResponse) -> bool:
    """Stream back only a successful SSE answer; errors and JSON are relayed whole."""
    return (
        plan.prepared.stream
        and 200 <= upstream.status < 300
        and upstream.content_type == "text/event-stream"
    )


def _blinder(plan: _Plan) -> Blinder:
    return _cached_blinder(plan.public_model_id, plan.upstream.internal_id, plan.upstream.base_url)


# Blinders are immutable; building one compiles its patterns, so reuse them.
@functools.lru_cache(maxsize=512)
def _cached_blinder(public_model_id: str, internal_id: str, base_url: str) -> Blinder:
    return Blinder(public_model_id, internal_id, base_url)


# Parsing a URL and building a timeout cost more than the lookup; both are immutable.
@functools.lru_cache(maxsize=512)
def _endpoint(endpoint_url: str) -> URL:
    return URL(endpoint_url, encoded=True)


@functools.lru_cache(maxsize=64)
def _timeout(total_s: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=total_s)


def _usage_of(api_kind: str, raw: bytes) -> Usage:
    try:
        return usage_from_body(api_kind, orjson.loads(raw))
    except orjson.JSONDecodeError:
        return Usage()


def _sent_view(plan: _Plan) -> dict[str, Any]:
    """The top-level fields sent upstream that can hold the system prompt.

    Mirrors prepare_upstream_body's removals and extra_body merge without
    re-parsing the bytes sent (messages and input can be neither removed nor set).
    """
    removed, extra = plan.upstream.remove_from_body, plan.upstream.extra_body
    if not removed and not extra:
        return plan.payload
    view = {k: v for k, v in plan.payload.items() if k not in removed}
    view.update(extra)
    return view
