"""A fake OpenAI/Anthropic-compatible upstream LLM for tests, demos and benchmarks.

It answers POST ``.../chat/completions`` (OpenAI chat completions),
``.../responses`` (OpenAI Responses API) and ``.../messages`` (Anthropic
Messages) under any path prefix, as JSON or, with ``"stream": true``, as SSE.
The ``model`` of every answer echoes the request's ``model``.

Deterministic token counts (see :func:`mock_usage`), from the request body
length ``L`` and the number of content chunks ``N``:

* prompt tokens ``P = L // 4``; cached (cache-read) tokens ``C = P // 4``;
  cache-write tokens ``W = P // 8``; output tokens ``N``.
* OpenAI kinds report ``prompt_tokens``/``input_tokens = P`` with
  ``cached_tokens = C`` (no cache writes).
* Anthropic reports ``input_tokens = P - C - W``,
  ``cache_read_input_tokens = C``, ``cache_creation_input_tokens = W``.

Per-request overrides (request headers):

* ``x-mock-latency-ms: N`` wait before the first byte;
* ``x-mock-chunks: N`` content chunks (= output tokens);
* ``x-mock-chunk-interval-ms: N`` pause between streamed chunks;
* ``x-mock-status: S`` (S >= 400) answer S with an error body in the API kind's
  shape whose message names the model (e.g. ``model <model> overloaded``);
* ``x-mock-hang: 1`` accept the request, never answer (until the client leaves);
* ``x-mock-fail-midstream: K`` close the connection after K streamed content
  chunks (non-streaming: after half of the JSON body).

Invalid override values get a 400. Test helpers:
``GET|DELETE /_mock/requests``, ``GET /_mock/healthz``, ``ANY /_echo/{tail}``,
``POST /_echo_stream``, ``GET /_sse?n=&interval_ms=``.
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import base64
import contextlib
import functools
import hashlib
import secrets
import signal
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, NoReturn

import orjson
from aiohttp import web
from multidict import CIMultiDictProxy

__all__ = [
    "HDR_CHUNKS",
    "HDR_CHUNK_INTERVAL",
    "HDR_FAIL_MIDSTREAM",
    "HDR_HANG",
    "HDR_LATENCY",
    "HDR_STATUS",
    "MAX_RECORDED",
    "MOCK_STATE",
    "ApiKind",
    "MockConfig",
    "MockServer",
    "MockState",
    "MockUsage",
    "RecordedRequest",
    "create_app",
    "main",
    "mock_usage",
    "start_mock",
]

ApiKind = Literal["chat_completions", "responses", "messages"]

HDR_LATENCY: Final = "x-mock-latency-ms"
HDR_CHUNKS: Final = "x-mock-chunks"
HDR_CHUNK_INTERVAL: Final = "x-mock-chunk-interval-ms"
HDR_STATUS: Final = "x-mock-status"
HDR_HANG: Final = "x-mock-hang"
HDR_FAIL_MIDSTREAM: Final = "x-mock-fail-midstream"

MAX_RECORDED: Final = 1000
MAX_CHUNKS: Final = 100_000
_MAX_BODY: Final = 64 * 1024 * 1024
_HANG_POLL_S: Final = 0.05
_FRAME_CACHE_MAX: Final = 512
# Same length as secrets.token_hex(12); swapped for the request's id in cached frames.
_ID_PLACEHOLDER: Final = b"m0c4id000000000000000000"
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_SSE_DONE: Final = b"data: [DONE]\n\n"
_FINGERPRINT: Final = "fp_mock0000"


# --------------------------------------------------------------------------- public types


@dataclass
class MockConfig:
    """Server-wide behaviour; every field can be overridden per request by a header."""

    latency_ms: float = 0
    chunks: int = 20
    chunk_interval_ms: float = 0
    model_prefix: str = "mock"
    wording: str = "Hello from the mock upstream"


@dataclass
class RecordedRequest:
    """One request as the mock received it; ``cancelled`` flips if the client left early."""

    method: str
    path: str
    query_string: str
    headers: dict[str, str]
    body: bytes
    time: float
    cancelled: bool = False

    def json(self) -> Any:
        """The body parsed as JSON (raises on invalid JSON)."""
        return orjson.loads(self.body)

    def to_json(self) -> dict[str, Any]:
        """The shape served by ``GET /_mock/requests``."""
        body, encoding = _body_for_json(self.body)
        return {
            "method": self.method,
            "path": self.path,
            "query_string": self.query_string,
            "headers": self.headers,
            "body": body,
            "body_encoding": encoding,
            "time": self.time,
            "cancelled": self.cancelled,
        }


@dataclass(frozen=True)
class MockUsage:
    """Token counts of one answer (see the module docstring for the formulas)."""

    prompt_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    output_tokens: int

    @property
    def anthropic_input_tokens(self) -> int:
        """Anthropic's ``input_tokens`` exclude cache reads and writes."""
        return self.prompt_tokens - self.cached_tokens - self.cache_write_tokens


def mock_usage(body_len: int, chunks: int) -> MockUsage:
    """The usage the mock reports for a request body of ``body_len`` bytes."""
    prompt = body_len // 4
    return MockUsage(prompt, prompt // 4, prompt // 8, chunks)


class MockState:
    """Recorded requests (newest last, at most :data:`MAX_RECORDED`)."""

    def __init__(self) -> None:
        self.requests: deque[RecordedRequest] = deque(maxlen=MAX_RECORDED)

    def record(self, request: web.BaseRequest, body: bytes) -> RecordedRequest:
        entry = RecordedRequest(
            method=request.method,
            path=request.path,
            query_string=request.query_string,
            headers=_headers_dict(request.headers),
            body=body,
            time=time.time(),
        )
        self.requests.append(entry)
        return entry

    def clear(self) -> int:
        count = len(self.requests)
        self.requests.clear()
        return count


MOCK_STATE: Final = web.AppKey("abgate_mock_state", MockState)


# --------------------------------------------------------------------------- small helpers


class _BadRequest(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _headers_dict(headers: CIMultiDictProxy[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def _body_for_json(body: bytes) -> tuple[Any, str]:
    if body:
        with contextlib.suppress(orjson.JSONDecodeError):
            return orjson.loads(body), "json"
    return base64.b64encode(body).decode("ascii"), "base64"


def _parse_int(raw: str | None, name: str, default: int, high: int) -> int:
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _BadRequest(f"{name} must be an integer") from None
    if not 0 <= value <= high:
        raise _BadRequest(f"{name} must be between 0 and {high}")
    return value


def _int_header(headers: CIMultiDictProxy[str], name: str, default: int, high: int) -> int:
    return _parse_int(headers.get(name), name, default, high)


def _query_int(request: web.Request, name: str, default: int, high: int) -> int:
    return _parse_int(request.query.get(name), name, default, high)


@contextlib.contextmanager
def _track_cancel(entry: RecordedRequest) -> Iterator[None]:
    """Mark ``entry`` cancelled when the client disconnects mid-response."""
    try:
        yield
    except (asyncio.CancelledError, ConnectionResetError):
        entry.cancelled = True
        raise


async def _hang(request: web.BaseRequest) -> NoReturn:
    """Never answer; notice a vanished client even without handler cancellation."""
    while True:
        await asyncio.sleep(_HANG_POLL_S)
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("client went away while the mock hung")


def _sse(data: bytes, event: str | None = None) -> bytes:
    if event is None:
        return b"data: " + data + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value)


# --------------------------------------------------------------------------- one call


@dataclass(frozen=True)
class _Overrides:
    latency_s: float
    chunks: int
    interval_s: float
    status: int | None
    hang: bool
    fail_after: int | None

    @classmethod
    def parse(cls, headers: CIMultiDictProxy[str], config: MockConfig) -> _Overrides:
        status = _int_header(headers, HDR_STATUS, 0, 599)
        fail_after = _int_header(headers, HDR_FAIL_MIDSTREAM, -1, MAX_CHUNKS)
        default_latency = round(config.latency_ms)
        default_interval = round(config.chunk_interval_ms)
        return cls(
            latency_s=_int_header(headers, HDR_LATENCY, default_latency, 3_600_000) / 1000,
            chunks=_int_header(headers, HDR_CHUNKS, config.chunks, MAX_CHUNKS),
            interval_s=_int_header(headers, HDR_CHUNK_INTERVAL, default_interval, 3_600_000) / 1000,
            status=status if status >= 400 else None,
            hang=headers.get(HDR_HANG, "").strip().lower() in _TRUE,
            fail_after=None if fail_after < 0 else fail_after,
        )


@dataclass(frozen=True)
class _Call:
    """Everything needed to render one answer."""

    kind: ApiKind
    model: str
    stream: bool
    include_usage: bool
    chunks: int
    usage: MockUsage
    rid: str
    created: int

    @classmethod
    def parse(cls, kind: ApiKind, body: bytes, chunks: int) -> _Call:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise _BadRequest("request body is not valid JSON") from None
        if not isinstance(payload, dict):
            raise _BadRequest("request body must be a JSON object")
        model = payload.get("model")
        if not isinstance(model, str) or not model:
            raise _BadRequest("model is required")
        options = payload.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        return cls(
            kind=kind,
            model=model,
            stream=payload.get("stream") is True,
            include_usage=include_usage,
            chunks=chunks,
            usage=mock_usage(len(body), chunks),
            rid=secrets.token_hex(12),
            created=int(time.time()),
        )


# --------------------------------------------------------------------------- error bodies

_OPENAI_ERRORS: Final[Mapping[int, tuple[str, str]]] = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", "permission_denied"),
    404: ("invalid_request_error", "model_not_found"),
    408: ("timeout_error", "timeout"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    500: ("server_error", "internal_error"),
    502: ("server_error", "bad_gateway"),
    503: ("server_error", "overloaded"),
    504: ("server_error", "timeout"),
}
_ANTHROPIC_ERRORS: Final[Mapping[int, str]] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def _override_message(model: str, status: int) -> str:
    if status == 429 or status >= 500:
        return f"model {model} overloaded"
    return f"model {model}: mock error {status}"


def _openai_error(status: int, message: str) -> bytes:
    fallback = "server_error" if status >= 500 else "invalid_request_error"
    err_type, code = _OPENAI_ERRORS.get(status, (fallback, f"mock_{status}"))
    return _dumps({"error": {"message": message, "type": err_type, "param": None, "code": code}})


def _anthropic_error(status: int, message: str, rid: str) -> bytes:
    fallback = "api_error" if status >= 500 else "invalid_request_error"
    error = {"type": _ANTHROPIC_ERRORS.get(status, fallback), "message": message}
    return _dumps({"type": "error", "error": error, "request_id": f"req_{rid}"})


def _error_body(kind: ApiKind, status: int, message: str, rid: str) -> bytes:
    if kind == "messages":
        return _anthropic_error(status, message, rid)
    return _openai_error(status, message)


# --------------------------------------------------------------------------- wire formats


@functools.lru_cache(maxsize=256)
def _pieces(words: tuple[str, ...], n: int) -> tuple[str, ...]:
    """N text deltas cycling through the wording's words (one "token" each)."""
    return tuple((" " if i else "") + words[i % len(words)] for i in range(n))


class _Format(abc.ABC):
    """How one API kind renders an answer. ``content`` frames may hold the id placeholder."""

    sse_content_type = "text/event-stream; charset=utf-8"

    @abc.abstractmethod
    def content(
        self, model: str, created: int, pieces: tuple[str, ...], usage: bool
    ) -> list[bytes]:
        ...

    @abc.abstractmethod
    def head(self, call: _Call) -> list[bytes]:
        ...

    @abc.abstractmethod
    def tail(self, call: _Call, text: str) -> list[bytes]:
        ...

    @abc.abstractmethod
    def body(self, call: _Call, text: str) -> dict[str, Any]:
        ...


class _ChatFormat(_Format):
    @staticmethod
    def _chunk(rid: str, model: str, created: int, choices: list[Any]) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{rid}",
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": _FINGERPRINT,
            "choices": choices,
        }

    @staticmethod
    def _usage(usage: MockUsage) -> dict[str, Any]:
        return {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.output_tokens,
            "total_tokens": usage.prompt_tokens + usage.output_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }

    def content(
        self, model: str, created: int, pieces: tuple[str, ...], usage: bool
    ) -> list[bytes]:
        rid = _ID_PLACEHOLDER.decode()
        frames = []
        for i, piece in enumerate(pieces):
            delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
            finish = "stop" if i == len(pieces) - 1 else None
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            chunk = self._chunk(rid, model, created, [choice])
            if usage:
                chunk["usage"] = None
            frames.append(_sse(_dumps(chunk)))
        return frames

    def head(self, call: _Call) -> list[bytes]:
        return []

    def tail(self, call: _Call, text: str) -> list[bytes]:
        if not call.include_usage:
            return [_SSE_DONE]
        chunk = self._chunk(call.rid, call.model, call.created, [])
        chunk["usage"] = self._usage(call.usage)
        return [_sse(_dumps(chunk)), _SSE_DONE]

    def body(self, call: _Call, text: str) -> dict[str, Any]:
        message = {"role": "assistant", "content": text, "refusal": None}
        return {
            "id": f"chatcmpl-{call.rid}",
            "object": "chat.completion",
            "created": call.created,
            "model": call.model,
            "system_fingerprint": _FINGERPRINT,
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
            ],
            "usage": self._usage(call.usage),
        }


class _ResponsesFormat(_Format):
    _HEAD_EVENTS = 4  # created, in_progress, output_item.added, content_part.added

    @staticmethod
    def _usage(usage: MockUsage) -> dict[str, Any]:
        return {
            "input_tokens": usage.prompt_tokens,
            "input_tokens_details": {"cached_tokens": usage.cached_tokens},
            "output_tokens": usage.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage.prompt_tokens + usage.output_tokens,
        }

    @staticmethod
    def _message(rid: str, text: str | None) -> dict[str, Any]:
        content = [] if text is None else [{"type": "output_text", "text": text, "annotations": []}]
        status = "in_progress" if text is None else "completed"
        item = {"id": f"msg_{rid}", "type": "message", "status": status, "role": "assistant"}
        return {**item, "content": content}

    def _response(self, call: _Call, text: str | None) -> dict[str, Any]:
        done = text is not None
        return {
            "id": f"resp_{call.rid}",
            "object": "response",
            "created_at": call.created,
            "status": "completed" if done else "in_progress",
            "model": call.model,
            "output": [self._message(call.rid, text)] if done else [],
            "usage": self._usage(call.usage) if done else None,
            "error": None,
            "incomplete_details": None,
        }

    @staticmethod
    def _event(kind: str, seq: int, fields: dict[str, Any]) -> bytes:
        return _sse(_dumps({"type": kind, "sequence_number": seq, **fields}), kind)

    def content(
        self, model: str, created: int, pieces: tuple[str, ...], usage: bool
    ) -> list[bytes]:
        where = {
            "item_id": f"msg_{_ID_PLACEHOLDER.decode()}",
            "output_index": 0,
            "content_index": 0,
        }
        return [
            self._event("response.output_text.delta", self._HEAD_EVENTS + i, {**where, "delta": p})
            for i, p in enumerate(pieces)
        ]

    def head(self, call: _Call) -> list[bytes]:
        response = self._response(call, None)
        part = {"type": "output_text", "text": "", "annotations": []}
        where = {"item_id": f"msg_{call.rid}", "output_index": 0, "content_index": 0}
        return [
            self._event("response.created", 0, {"response": response}),
            self._event("response.in_progress", 1, {"response": response}),
            self._event(
                "response.output_item.added",
                2,
                {"output_index": 0, "item": self._message(call.rid, None)},
            ),
            self._event("response.content_part.added", 3, {**where, "part": part}),
        ]

    def tail(self, call: _Call, text: str) -> list[bytes]:
        seq = self._HEAD_EVENTS + call.chunks
        where = {"item_id": f"msg_{call.rid}", "output_index": 0, "content_index": 0}
        part = {"type": "output_text", "text": text, "annotations": []}
        item = self._message(call.rid, text)
        return [
            self._event("response.output_text.done", seq, {**where, "text": text}),
            self._event("response.content_part.done", seq + 1, {**where, "part": part}),
            self._event("response.output_item.done", seq + 2, {"output_index": 0, "item": item}),
            self._event("response.completed", seq + 3, {"response": self._response(call, text)}),
        ]

    def body(self, call: _Call, text: str) -> dict[str, Any]:
        return self._response(call, text)


class _MessagesFormat(_Format):
    sse_content_type = "text/event-stream"

    @staticmethod
    def _event(kind: str, fields: dict[str, Any]) -> bytes:
        return _sse(_dumps({"type": kind, **fields}), kind)

    @staticmethod
    def _usage(usage: MockUsage, output_tokens: int) -> dict[str, Any]:
        return {
            "input_tokens": usage.anthropic_input_tokens,
            "cache_creation_input_tokens": usage.cache_write_tokens,
            "cache_read_input_tokens": usage.cached_tokens,
            "output_tokens": output_tokens,
        }

    def _message(self, call: _Call, text: str | None) -> dict[str, Any]:
        done = text is not None
        return {
            "id": f"msg_{call.rid}",
            "type": "message",
            "role": "assistant",
            "model": call.model,
            "content": [{"type": "text", "text": text}] if done else [],
            "stop_reason": "end_turn" if done else None,
            "stop_sequence": None,
            "usage": self._usage(call.usage, call.usage.output_tokens if done else 1),
        }

    def content(
        self, model: str, created: int, pieces: tuple[str, ...], usage: bool
    ) -> list[bytes]:
        return [
            self._event(
                "content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": p}}
            )
            for p in pieces
        ]

    def head(self, call: _Call) -> list[bytes]:
        block = {"type": "text", "text": ""}
        return [
            self._event("message_start", {"message": self._message(call, None)}),
            self._event("content_block_start", {"index": 0, "content_block": block}),
        ]

    def tail(self, call: _Call, text: str) -> list[bytes]:
        delta = {"stop_reason": "end_turn", "stop_sequence": None}
        return [
            self._event("content_block_stop", {"index": 0}),
            self._event(
                "message_delta",
                {"delta": delta, "usage": {"output_tokens": call.usage.output_tokens}},
            ),
            self._event("message_stop", {}),
        ]

    def body(self, call: _Call, text: str) -> dict[str, Any]:
        return self._message(call, text)


_FORMATS: Final[Mapping[ApiKind, _Format]] = {
    "chat_completions": _ChatFormat(),
    "responses": _ResponsesFormat(),
    "messages": _MessagesFormat(),
}


# --------------------------------------------------------------------------- handlers


def _close_connection(request: web.BaseRequest) -> None:
    """Drop the connection after flushing what was written (a mid-stream failure)."""
    transport = request.transport
    if transport is not None:
        transport.close()


class _Handlers:
    """Request handlers bound to one config and one recording state."""

    def __init__(self, config: MockConfig, state: MockState) -> None:
        self._config = config
        self._state = state
        self._words = tuple(config.wording.split()) or ("mock",)
        self._frames: dict[tuple[Any, ...], tuple[tuple[bytes, ...], bytes]] = {}
        self._static_headers = {
            "server": "mock-upstream",
            "openai-organization": "mock-org",
            "openai-version": "2020-10-01",
            "anthropic-organization-id": "mock-org",
            "x-mock-upstream": config.model_prefix,
            "x-ratelimit-limit-requests": "10000",
            "x-ratelimit-remaining-requests": "9999",
            "cf-ray": "0000000000000000-MCK",
            "set-cookie": "__cf_bm=mock; path=/; HttpOnly",
        }

    # ---- LLM endpoints

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._llm(request, "chat_completions")

    async def responses(self, request: web.Request) -> web.StreamResponse:
        return await self._llm(request, "responses")

    async def messages(self, request: web.Request) -> web.StreamResponse:
        return await self._llm(request, "messages")

    async def _llm(self, request: web.Request, kind: ApiKind) -> web.StreamResponse:
        body = await request.read()
        entry = self._state.record(request, body)
        with _track_cancel(entry):
            return await self._answer(request, kind, body)

    async def _answer(self, request: web.Request, kind: ApiKind, body: bytes) -> web.StreamResponse:
        try:
            overrides = _Overrides.parse(request.headers, self._config)
            call = _Call.parse(kind, body, overrides.chunks)
        except _BadRequest as exc:
            return self._error(kind, 400, exc.message, secrets.token_hex(12), "")
        if overrides.hang:
            await _hang(request)
        if overrides.latency_s > 0:
            await asyncio.sleep(overrides.latency_s)
        if overrides.status is not None:
            message = _override_message(call.model, overrides.status)
            return self._error(kind, overrides.status, message, call.rid, call.model)
        if call.stream:
            return await self._stream(request, call, overrides)
        return await self._json(request, call, overrides)

    def _headers(self, rid: str, model: str, content_type: str) -> dict[str, str]:
        return {
            **self._static_headers,
            "content-type": content_type,
            "x-request-id": f"req_{rid}",
            "request-id": f"req_{rid}",
            "x-mock-model": model,
        }

    def _error(
        self, kind: ApiKind, status: int, message: str, rid: str, model: str
    ) -> web.Response:
        headers = self._headers(rid, model, "application/json")
        return web.Response(
            status=status, body=_error_body(kind, status, message, rid), headers=headers
        )

    async def _json(
        self, request: web.Request, call: _Call, overrides: _Overrides
    ) -> web.StreamResponse:
        text = "".join(_pieces(self._words, call.chunks))
        payload = _dumps(_FORMATS[call.kind].body(call, text))
        headers = self._headers(call.rid, call.model, "application/json")
        if overrides.fail_after is None:
            return web.Response(body=payload, headers=headers)
        resp = web.StreamResponse(headers=headers)
        resp.content_length = len(payload)
        await resp.prepare(request)
        await resp.write(payload[: len(payload) // 2])
        _close_connection(request)
        return resp

    def _content(self, call: _Call, pieces: tuple[str, ...]) -> tuple[tuple[bytes, ...], bytes]:
        """Cached content frames (with the id placeholder) and their concatenation."""
        key = (call.kind, call.model, call.chunks, call.include_usage, call.created)
        cached = self._frames.get(key)
        if cached is None:
            if len(self._frames) >= _FRAME_CACHE_MAX:
                self._frames.clear()
            fmt = _FORMATS[call.kind]
            frames = tuple(fmt.content(call.model, call.created, pieces, call.include_usage))
            cached = self._frames[key] = (frames, b"".join(frames))
        return cached

    async def _stream(
        self, request: web.Request, call: _Call, overrides: _Overrides
    ) -> web.StreamResponse:
        fmt = _FORMATS[call.kind]
        pieces = _pieces(self._words, call.chunks)
        frames, joined = self._content(call, pieces)
        rid = call.rid.encode()
        head, tail = fmt.head(call), fmt.tail(call, "".join(pieces))
        headers = self._headers(call.rid, call.model, fmt.sse_content_type)
        resp = web.StreamResponse(headers={**headers, "cache-control": "no-cache"})
        await resp.prepare(request)
        if overrides.interval_s <= 0 and overrides.fail_after is None:
            content = joined.replace(_ID_PLACEHOLDER, rid)
            await resp.write(b"".join([*head, content, *tail]))
        else:
            content_frames = [frame.replace(_ID_PLACEHOLDER, rid) for frame in frames]
            if not await _drip(resp, head, content_frames, tail, overrides):
                _close_connection(request)
                return resp
        await resp.write_eof()
        return resp

    # ---- passthrough targets

    async def echo(self, request: web.Request) -> web.Response:
        body = await request.read()
        self._state.record(request, body)
        payload = {
            "method": request.method,
            "path": request.path,
            "raw_path": request.raw_path,
            "query_string": request.query_string,
            "headers": _headers_dict(request.headers),
            "header_list": [[name, value] for name, value in request.headers.items()],
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "body_len": len(body),
        }
        return web.Response(body=_dumps(payload), content_type="application/json")

    async def echo_stream(self, request: web.Request) -> web.StreamResponse:
        entry = self._state.record(request, b"")
        resp = web.StreamResponse(headers={"content-type": request.content_type})
        received: list[bytes] = []
        with _track_cancel(entry):
            await resp.prepare(request)
            async for chunk in request.content.iter_any():
                received.append(chunk)
                await resp.write(chunk)
            entry.body = b"".join(received)
            await resp.write_eof()
        return resp

    async def sse(self, request: web.Request) -> web.StreamResponse:
        try:
            count = _query_int(request, "n", 5, MAX_CHUNKS)
            interval_s = _query_int(request, "interval_ms", 0, 3_600_000) / 1000
        except _BadRequest as exc:
            return web.Response(status=400, text=exc.message)
        entry = self._state.record(request, b"")
        resp = web.StreamResponse(
            headers={"content-type": "text/event-stream", "cache-control": "no-cache"}
        )
        with _track_cancel(entry):
            await resp.prepare(request)
            for i in range(count):
                if i and interval_s > 0:
                    await asyncio.sleep(interval_s)
                await resp.write(b'id: %d\nevent: tick\ndata: {"i":%d}\n\n' % (i, i))
            await resp.write_eof()
        return resp

    # ---- introspection

    async def list_requests(self, request: web.Request) -> web.Response:
        payload = [entry.to_json() for entry in self._state.requests]
        return web.Response(body=_dumps(payload), content_type="application/json")

    async def clear_requests(self, request: web.Request) -> web.Response:
        cleared = self._state.clear()
        return web.Response(body=_dumps({"cleared": cleared}), content_type="application/json")

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ok"}', content_type="application/json")


async def _drip(
    resp: web.StreamResponse,
    head: list[bytes],
    content: list[bytes],
    tail: list[bytes],
    overrides: _Overrides,
) -> bool:
    """Write frames one by one with pauses; False when told to fail mid-stream."""
    await resp.write(b"".join(head))
    for i, frame in enumerate(content):
        if i == overrides.fail_after:
            return False
        if i and overrides.interval_s > 0:
            await asyncio.sleep(overrides.interval_s)
        await resp.write(frame)
    if overrides.fail_after is not None:
        return False
    await resp.write(b"".join(tail))
    return True


# --------------------------------------------------------------------------- app + server


def create_app(config: MockConfig | None = None) -> web.Application:
    """The mock upstream as an aiohttp application (state under ``app[MOCK_STATE]``)."""
    state = MockState()
    handlers = _Handlers(config or MockConfig(), state)
    app = web.Application(client_max_size=_MAX_BODY)
    app[MOCK_STATE] = state
    router = app.router
    router.add_get("/_mock/healthz", handlers.healthz)
    router.add_get("/_mock/requests", handlers.list_requests)
    router.add_delete("/_mock/requests", handlers.clear_requests)
    router.add_route("*", "/_echo/{tail:.*}", handlers.echo)
    router.add_post("/_echo_stream", handlers.echo_stream)
    router.add_get("/_sse", handlers.sse)
    # "/chat/completions", "/v1/chat/completions", "/any/prefix/v1/chat/completions", ...
    router.add_post("/{prefix:(?:.*/)?}chat/completions", handlers.chat_completions)
    router.add_post("/{prefix:(?:.*/)?}responses", handlers.responses)
    router.add_post("/{prefix:(?:.*/)?}messages", handlers.messages)
    return app


class MockServer:
    """A running mock upstream (see :func:`start_mock`)."""

    def __init__(self, app: web.Application, runner: web.AppRunner, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._runner = runner

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        """Recorded requests, oldest first (entries keep updating, e.g. ``cancelled``)."""
        return list(self.app[MOCK_STATE].requests)

    def clear_requests(self) -> None:
        self.app[MOCK_STATE].clear()

    async def close(self) -> None:
        await self._runner.cleanup()

    async def __aenter__(self) -> MockServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def start_mock(
    config: MockConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> MockServer:
    """Serve the mock on ``host:port`` (0 = any free port); close it with ``close()``."""
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_port = int(runner.addresses[0][1])
    return MockServer(app, runner, host, bound_port)


# --------------------------------------------------------------------------- CLI


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = MockConfig()
    if argv and argv[0] == "--":  # tolerate `abgate mock-upstream -- --port N`
        argv = argv[1:]
    parser = argparse.ArgumentParser(
        prog="abgate mock-upstream", description="Fake OpenAI/Anthropic-compatible LLM."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--latency-ms", type=float, default=defaults.latency_ms)
    parser.add_argument("--chunks", type=int, default=defaults.chunks)
    parser.add_argument("--chunk-interval-ms", type=float, default=defaults.chunk_interval_ms)
    parser.add_argument("--model-prefix", default=defaults.model_prefix)
    parser.add_argument("--wording", default=defaults.wording)
    args = parser.parse_args(argv)
    if args.chunks < 0 or args.chunks > MAX_CHUNKS:
        parser.error(f"--chunks must be between 0 and {MAX_CHUNKS}")
    if args.latency_ms < 0 or args.chunk_interval_ms < 0:
        parser.error("--latency-ms and --chunk-interval-ms must be >= 0")
    return args


async def _serve(config: MockConfig, host: str, port: int) -> None:
    server = await start_mock(config, host, port)
    print(f"mock upstream listening on {server.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.close()


def _run(main_coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run with uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main_coro())
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main_coro())


def main(argv: list[str] | None = None) -> int:
    """``abgate mock-upstream``: serve until SIGINT/SIGTERM."""
    args = _parse_args(argv)
    config = MockConfig(
        latency_ms=args.latency_ms,
        chunks=args.chunks,
        chunk_interval_ms=args.chunk_interval_ms,
        model_prefix=args.model_prefix,
        wording=args.wording,
    )
    with contextlib.suppress(KeyboardInterrupt):
        _run(lambda: _serve(config, args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
