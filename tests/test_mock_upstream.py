"""The fake upstream LLM: wire formats, overrides, recording and passthrough targets."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer, make_mocked_request
from multidict import CIMultiDict

from abgate.mock_upstream import (
    MAX_RECORDED,
    MOCK_STATE,
    MockConfig,
    MockServer,
    MockState,
    create_app,
    main,
    mock_usage,
    start_mock,
)

CHAT = "/v1/chat/completions"
RESPONSES = "/v1/responses"
MESSAGES = "/v1/messages"
WORDING = "alpha beta gamma"


@pytest.fixture
async def mock() -> AsyncIterator[MockServer]:
    server = await start_mock(MockConfig(chunks=5, model_prefix="partner-a", wording=WORDING))
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def _body(model: str = "ckpt-7", **extra: Any) -> bytes:
    return orjson.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], **extra})


def _sse_events(raw: bytes) -> list[tuple[str | None, str]]:
    """(event name, data) per SSE event."""
    events = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        event, data = None, ""
        for line in block.split("\n"):
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: "):
                data = line[len("data: ") :]
        events.append((event, data))
    return events


async def _post(
    session: aiohttp.ClientSession,
    mock: MockServer,
    path: str,
    body: bytes,
    headers: dict[str, str] | None = None,
) -> tuple[int, CIMultiDict[str], bytes]:
    async with session.post(mock.url + path, data=body, headers=headers) as resp:
        return resp.status, CIMultiDict(resp.headers), await resp.read()


async def _wait_until_cancelled(mock: MockServer) -> bool:
    for _ in range(100):
        if mock.requests and mock.requests[-1].cancelled:
            return True
        await asyncio.sleep(0.02)
    return False


# --------------------------------------------------------------------------- chat completions


async def test_chat_json_echoes_model_text_and_usage(
    mock: MockServer, session: aiohttp.ClientSession
) -> None:
    body = _body()
    status, headers, raw = await _post(session, mock, CHAT, body)
    usage = mock_usage(len(body), 5)
    data = orjson.loads(raw)
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert data["object"] == "chat.completion"
    assert data["model"] == "ckpt-7"
    assert data["choices"][0]["message"]["content"] == "alpha beta gamma alpha beta"
    assert data["usage"] == {
        "prompt_tokens": len(body) // 4,
        "completion_tokens": 5,
        "total_tokens": len(body) // 4 + 5,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


async def test_chat_stream_sends_n_chunks_with_model_then_done(
    mock: MockServer, session: aiohttp.ClientSession
) -> None:
    status, headers, raw = await _post(session, mock, CHAT, _body(stream=True))
    events = _sse_events(raw)
    chunks = [orjson.loads(data) for _, data in events[:-1]]
    assert status == 200
    assert headers["Content-Type"].startswith("text/event-stream")
    assert events[-1] == (None, "[DONE]")
    assert len(chunks) == 5
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "ckpt-7" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks) == (
        "alpha beta gamma alpha beta"
    )
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_chat_stream_has_usage_chunk_when_include_usage(
    mock: MockServer, session: aiohttp.ClientSession
) -> None:
    body = _body(stream=True, stream_options={"include_usage": True})
    _, _, raw = await _post(session, mock, CHAT, body)
    events = _sse_events(raw)
    usage_chunk = orjson.loads(events[-2][1])
    assert len(events) == 5 + 2
    assert usage_chunk["choices"] == []
    assert usage_chunk["model"] == "ckpt-7"
    assert usage_chunk["usage"]["prompt_tokens"] == len(body) // 4
    assert usage_chunk["usage"]["completion_tokens"] == 5
    assert usage_chunk["usage"]["total_tokens"] == len(body) // 4 + 5
    assert usage_chunk["usage"]["prompt_tokens_details"]["cached_tokens"] == len(body) // 16


async def test_chat_stream_has_no_usage_chunk_unless_asked(
    mock: MockServer, session: aiohttp.ClientSession
) -> None:
    body = _body(stream=True, stream_options={"include_usage": False})
    _, _, raw = await _post(session, mock, CHAT, body)
    chunks = [orjson.loads(data) for _, data in _sse_events(raw)[:-1]]
    assert len(chunks) == 5
    assert all(c["choices"] and "usage" not in c for c in chunks)


@pytest.mark.parametrize(
    "path", ["/chat/completions", "/v1/chat/completions", "/api/openai/v1/chat/completions"]
)
async def test_chat_is_served_under_any_path_prefix(
    mock: MockServer, session: aiohttp.ClientSession, path: str
) -> None:
    status, _, raw = await _post(session, mock, path, _body())
    assert status == 200
    assert orjson.loads(raw)["object"] == "chat.completion"


# --------------------------------------------------------------------------- responses API


async def test_responses_json_echoes_model_and_usage(
    mock: MockServer, session: aiohttp.ClientSession
) -> None:
    body = _body("resp-model", input="hi")
    status, _, raw = await _post(session, mock, RESPONSES, body)
    data = orjson.loads(raw)
    assert status == 200
    assert data["object"] == "response"
    assert data["status"] == "completed"
    assert data["model"] == "resp-model"
    assert data["output"][0]["content"][0]["text"] == "alpha beta gamma alpha beta"
    assert data["usage"]["input_tokens"] == len(body) // 4
    assert data["usage"]["output_tokens"] == 5
    assert data["usage"]["input_tokens_details"]["cached_tokens"] == len(body) // 16


async def test_responses_stream_emits_event_sequence_with_model_and_usage(
    mock: MockServer, session: aiohttp.ClientSession
) -> None:
    body = _body("resp-model", stream=True)
    _, _, raw = await _post(session, mock, RESPONSES, body)
    events = _sse_events(raw)
    names = [name for name, _ in events]
    payloads = [orjson.loads(data) for _, data in events]
    assert names[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert names.count("response.output_text.delta") == 5
    assert "response.output_text.done" in names
    assert names[-1] == "response.completed"
    assert all(p["type"] == name for p, name in zip(payloads, names, strict=True))
    assert payloads[0]["response"]["model"] == payloads[1]["response"]["model"] == "resp-model"
    completed = payloads[-1]["response"]
    assert completed["model"] == "resp-model"
    assert completed["usage"]["input_tokens"] == len(body) // 4
    assert completed["usage"]["output_tokens"] == 5
    assert completed["usage"]["input_tokens_details"]["cached_tokens"] == len(body) // 16


# --------------------------------------------------------------------------- anthropic messages


async def test_messages_json_echoes_model_and_usage(
    mock: MockServer, session: aiohttp.ClientSession
) -> None:
    body = _body("claude-ckpt", max_tokens=64)
    status, _, raw = await _post(session, mock, MESSAGES, body)
    usage = mock_usage(len(body), 5)
    data = orjson.loads(raw)
    assert status == 200
    assert data["type"] == "message"
    assert data["model"] == "claude-ckpt"
    assert data["content"] == [{"type": "text", "text": "alpha beta gamma alpha beta"}]
    assert data["usage"] == {
        "input_tokens": usage.anthropic_input_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "output_tokens": 5,
    }


async def test_messages_stream_emits_named_events_with_model_and_usage(
    mock: MockServer, session: aiohttp.ClientSession
) -> None:
    body = _body("claude-ckpt", stream=True)
    _, headers, raw = await _post(session, mock, MESSAGES, body)
    usage = mock_usage(len(body), 5)
    events = _sse_events(raw)
    names = [name for name, _ in events]
    payloads = [orjson.loads(data) for _, data in events]
    assert headers["Content-Type"].startswith("text/event-stream")
    assert names == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * 5,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(p["type"] == name for p, name in zip(payloads, names, strict=True))
    start = payloads[0]["message"]
    assert start["model"] == "claude-ckpt"
    assert start["usage"]["input_tokens"] == usage.anthropic_input_tokens
    assert start["usage"]["cache_read_input_tokens"] == usage.cached_tokens
    assert start["usage"]["cache_creation_input_tokens"] == usage.cache_write_tokens
    assert payloads[-2]["usage"]["output_tokens"] == 5


# --------------------------------------------------------------------------- overrides


async def test_chunks_header_overrides_chunk_count(
    mock: MockServer, session: aiohttp.ClientSession
) -> None:
    body = _body(stream=True)
    _, _, raw = await _post(session, mock, MESSAGES, body, {"x-mock-chunks": "2"})
    names = [name for name, _ in _sse_events(raw)]
    assert names.count("content_block_delta") == 2


async def test_status_header_returns_openai_error_naming_model(
    mock: MockServer, session: aiohttp.ClientSession
) -> None:
    status, _, raw = await _post(session, mock, CHAT, _body(), {"x-mock-status": "503"})
    error = orjson.loads(raw)["error"]
    assert status == 503
    assert "ckpt-7" in error["message"]
    assert error["type"] == "server_error"
    assert error["code"]


async def test_status_header_on_stream_still_returns_json_error(
    mock: MockServer, session: aiohttp.ClientSession
) -> None:
    headers = {"x-mock-status": "429"}
    status, resp_headers, raw = await _post(session, mock, RESPONSES, _body(stream=True), headers)
    assert status == 429
    assert resp_headers["Content-Type"].startswith("application/json")
    assert orjson.loads(raw)["error"]["code"] == "rate_limit_exceeded"


async def test_status_header_returns_anthropic_error_shape(
    mock: MockServer, session: aiohttp.ClientSession
) -> None:
    status, _, raw = await _post(session, mock, MESSAGES, _body(), {"x-mock-status": "529"})
    data = orjson.loads(raw)
    assert status == 529
    assert data["type"] == "error"
    assert data["error"]["type"] == "overloaded_error"
    assert "ckpt-7" in data["error"]["message"]


async def test_invalid_override_header_is_rejected(
    mock: MockServer, session: aiohttp.ClientSession
) -> None:
    status, _, raw = await _post(session, mock, CHAT, _body(), {"x-mock-chunks": "many"})
    assert status == 400
    assert "x-mock-chunks" in orjson.loads(raw)["error"]["message"]


async def test_body_without_model_is_rejected(
    mock: MockServer, session: aiohttp.ClientSession
) -> None:
    status, _, raw = await _post(session, mock, CHAT, b'{"messages": []}')
    assert status == 400
    assert orjson.loads(raw)["error"]["type"] == "invalid_request_error"


async def test_latency_header_delays_the_answer(
    mock: MockServer, session: aiohttp.ClientSession
) -> None:
    started = time.monotonic()
    await _post(session, mock, CHAT, _body(), {"x-mock-latency-ms": "150"})
    assert time.monotonic() - started >= 0.14


async def test_chunk_interval_spaces_out_chunks(session: aiohttp.ClientSession) -> None:
    server = await start_mock(MockConfig(chunks=4, chunk_interval_ms=50))
    try:
        started = time.monotonic()
        _, _, raw = await _post(session, server, CHAT, _body(stream=True))
        assert time.monotonic() - started >= 0.14
        assert len(_sse_events(raw)) == 5
    finally:
        await server.close()


async def test_hang_then_client_cancel_is_recorded_as_cancelled(
    mock: MockServer, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(_post(session, mock, CHAT, _body(), {"x-mock-hang": "1"}), 0.2)
    assert await _wait_until_cancelled(mock)


async def test_hang_cancel_is_recorded_without_handler_cancellation(
    session: aiohttp.ClientSession,
) -> None:
    app = create_app(MockConfig())
    async with TestServer(app) as server:
        url = str(server.make_url(CHAT))
        post = session.post(url, data=_body(), headers={"x-mock-hang": "true"})
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(post, 0.2)
        state = app[MOCK_STATE]
        for _ in range(100):
            if state.requests[-1].cancelled:
                break
            await asyncio.sleep(0.02)
        assert state.requests[-1].cancelled


async def test_client_leaving_mid_stream_is_recorded_as_cancelled(
    mock: MockServer, session: aiohttp.ClientSession
) -> None:
    headers = {"x-mock-chunk-interval-ms": "100", "x-mock-chunks": "50"}
    async with session.post(mock.url + CHAT, data=_body(stream=True), headers=headers) as resp:
        await resp.content.readuntil(b"\n\n")
        resp.close()
    assert await _wait_until_cancelled(mock)


async def test_fail_midstream_closes_connection_after_k_chunks(
    mock: MockServer, session: aiohttp.ClientSession
) -> None:
    received = b""
    headers = {"x-mock-fail-midstream": "2"}
    with pytest.raises(aiohttp.ClientPayloadError):
        async with session.post(mock.url + CHAT, data=_body(stream=True), headers=headers) as resp:
            async for chunk in resp.content.iter_any():
                received += chunk
    events = _sse_events(received)
    assert len(events) == 2
    assert (None, "[DONE]") not in events
    assert not mock.requests[-1].cancelled


async def test_fail_midstream_truncates_json_body(
    mock: MockServer, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(aiohttp.ClientPayloadError):
        await _post(session, mock, CHAT, _body(), {"x-mock-fail-midstream": "0"})


async def test_answers_carry_upstream_identifying_headers(
    mock: MockServer, session: aiohttp.ClientSession
) -> None:
    _, headers, _ = await _post(session, mock, CHAT, _body())
    assert headers["server"] == "mock-upstream"
    assert headers["openai-organization"] == "mock-org"
    assert headers["x-mock-upstream"] == "partner-a"
    assert headers["x-mock-model"] == "ckpt-7"
    assert headers["x-request-id"].startswith("req_")
    assert "set-cookie" in headers


# --------------------------------------------------------------------------- recording


async def test_requests_endpoint_lists_recorded_requests(
    mock: MockServer, session: aiohttp.ClientSession
) -> None:
    await _post(session, mock, CHAT, _body(), {"x-custom": "yes"})
    async with session.get(mock.url + "/_mock/requests") as resp:
        recorded = await resp.json()
    assert len(recorded) == 1
    assert recorded[0]["path"] == CHAT
    assert recorded[0]["method"] == "POST"
    assert recorded[0]["headers"]["x-custom"] == "yes"
    assert recorded[0]["body"]["model"] == "ckpt-7"
    assert recorded[0]["cancelled"] is False


async def test_requests_endpoint_base64_encodes_non_json_bodies(
    mock: MockServer, session: aiohttp.ClientSession
) -> None:
    await _post(session, mock, "/_echo/raw", b"\xff\x00binary")
    async with session.get(mock.url + "/_mock/requests") as resp:
        recorded = (await resp.json())[0]
    assert recorded["body_encoding"] == "base64"
    assert recorded["body"] == "/wBiaW5hcnk="


async def test_delete_requests_clears_recording(
    mock: MockServer, session: aiohttp.ClientSession
) -> None:
    await _post(session, mock, CHAT, _body())
    async with session.delete(mock.url + "/_mock/requests") as resp:
        assert (await resp.json()) == {"cleared": 1}
    assert mock.requests == []


async def test_python_api_exposes_recorded_requests(
    mock: MockServer, session: aiohttp.ClientSession
) -> None:
    body = _body()
    await _post(session, mock, MESSAGES, body)
    assert mock.requests[0].body == body
    assert mock.requests[0].json()["model"] == "ckpt-7"


def test_recording_keeps_only_the_last_1000_requests() -> None:
    state = MockState()
    request = make_mocked_request("POST", "/v1/messages")
    for i in range(MAX_RECORDED + 5):
        state.record(request, str(i).encode())
    assert len(state.requests) == MAX_RECORDED
    assert state.requests[0].body == b"5"


async def test_healthz_answers_ok(mock: MockServer, session: aiohttp.ClientSession) -> None:
    async with session.get(mock.url + "/_mock/healthz") as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "ok"}


# --------------------------------------------------------------------------- passthrough targets


async def test_echo_reports_method_path_query_headers_and_body_hash(
    mock: MockServer, session: aiohttp.ClientSession
) -> None:
    url = mock.url + "/_echo/some/path?a=1&b=two"
    async with session.put(url, data=b"payload", headers={"x-thing": "1"}) as resp:
        echoed = await resp.json()
    assert echoed["method"] == "PUT"
    assert echoed["path"] == "/_echo/some/path"
    assert echoed["query_string"] == "a=1&b=two"
    assert echoed["headers"]["x-thing"] == "1"
    assert echoed["body_sha256"] == hashlib.sha256(b"payload").hexdigest()
    assert echoed["body_len"] == 7


async def test_echo_stream_returns_the_request_body(
    mock: MockServer, session: aiohttp.ClientSession
) -> None:
    payload = bytes(range(256)) * 1000
    async with session.post(mock.url + "/_echo_stream", data=payload) as resp:
        assert await resp.read() == payload
    assert mock.requests[-1].body == payload


async def test_sse_emits_n_events(mock: MockServer, session: aiohttp.ClientSession) -> None:
    async with session.get(mock.url + "/_sse?n=3&interval_ms=1") as resp:
        raw = await resp.read()
        assert resp.headers["Content-Type"].startswith("text/event-stream")
    events = _sse_events(raw)
    assert [orjson.loads(data)["i"] for _, data in events] == [0, 1, 2]
    assert all(name == "tick" for name, _ in events)


# --------------------------------------------------------------------------- CLI + usage


def test_mock_usage_is_derived_from_body_length_and_chunks() -> None:
    usage = mock_usage(400, 7)
    assert (usage.prompt_tokens, usage.cached_tokens, usage.cache_write_tokens) == (100, 25, 12)
    assert usage.output_tokens == 7
    assert usage.anthropic_input_tokens == 63


def test_cli_rejects_negative_chunks() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--chunks", "-1"])
    assert exc.value.code == 2
