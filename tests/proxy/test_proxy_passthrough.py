"""Passthrough: everything that is not an experimented call reaches the gateway unchanged."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from abgate.config import Settings
from abgate.mock_upstream import MockServer

PUBLIC_ID = "partner/preview-foo"


@pytest.fixture
async def proxy(start_proxy: Callable[[Settings], Awaitable[Any]], proxy_settings: Settings) -> Any:
    return await start_proxy(proxy_settings)


async def _echo(response: aiohttp.ClientResponse) -> dict[str, Any]:
    assert response.status == 200
    result: dict[str, Any] = orjson.loads(await response.read())
    return result


async def test_method_path_and_raw_query_reach_the_gateway_unchanged(
    proxy: Any, client: aiohttp.ClientSession
) -> None:
    url = proxy.url + "/_echo/v1/models/a%2Fb?x=1&y=%20z&x=2"
    async with client.request("PATCH", url, data=b"payload") as response:
        echo = await _echo(response)
    assert echo["method"] == "PATCH"
    assert echo["raw_path"] == "/_echo/v1/models/a%2Fb?x=1&y=%20z&x=2"
    assert echo["body_sha256"] == hashlib.sha256(b"payload").hexdigest()


async def test_end_to_end_headers_are_forwarded_and_hop_by_hop_ones_are_not(
    proxy: Any, client: aiohttp.ClientSession, mock: MockServer
) -> None:
    headers = {
        "Authorization": "Bearer client-token",
        "Cookie": "session=abc",
        "X-Custom": "one",
        "Connection": "keep-alive, X-Hop",
        "X-Hop": "must-not-pass",
        "Keep-Alive": "timeout=5",
        "Proxy-Authorization": "Basic Zm9vOmJhcg==",
        "TE": "trailers",
    }
    async with client.get(proxy.url + "/_echo/v1/models", headers=headers) as response:
        echo = await _echo(response)
    received = echo["headers"]
    assert received["authorization"] == "Bearer client-token"
    assert received["cookie"] == "session=abc"
    assert received["x-custom"] == "one"
    for hop in ("x-hop", "keep-alive", "proxy-authorization", "te"):
        assert hop not in received
    assert received["host"] == mock.url.removeprefix("http://")


async def test_x_forwarded_for_gets_the_peer_appended(
    proxy: Any, client: aiohttp.ClientSession
) -> None:
    headers = {"X-Forwarded-For": "203.0.113.7"}
    async with client.get(proxy.url + "/_echo/x", headers=headers) as response:
        echo = await _echo(response)
    assert echo["headers"]["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"


async def test_a_10_mb_upload_arrives_byte_identical(
    proxy: Any, client: aiohttp.ClientSession
) -> None:
    body = os.urandom(10 * 1024 * 1024)
    async with client.post(proxy.url + "/_echo/v1/files", data=body) as response:
        echo = await _echo(response)
    assert echo["body_len"] == len(body)
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()


async def test_a_10_mb_llm_call_read_for_routing_arrives_byte_identical(
    start_proxy: Any,
    proxy_settings: Settings,
    seed_experiment: Any,
    client: aiohttp.ClientSession,
) -> None:
    await seed_experiment()  # members exist, so the body is read and scanned
    proxy = await start_proxy(proxy_settings)
    body = b'{"model": "gpt-prod", "pad": "' + os.urandom(5 * 1024 * 1024).hex().encode() + b'"}'
    async with client.post(proxy.url + "/_echo/v1/chat/completions", data=body) as response:
        echo = await _echo(response)
    assert echo["body_len"] == len(body)
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()


async def test_a_chunked_upload_is_streamed_through_both_ways(
    proxy: Any, client: aiohttp.ClientSession
) -> None:
    parts = [os.urandom(64 * 1024) for _ in range(32)]

    async def upload() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    async with client.post(proxy.url + "/_echo_stream", data=upload()) as response:
        assert response.status == 200
        received = await response.read()
    assert received == b"".join(parts)


async def test_an_sse_stream_from_the_gateway_arrives_byte_identical_event_by_event(
    proxy: Any, client: aiohttp.ClientSession
) -> None:
    async with client.get(proxy.url + "/_sse?n=3&interval_ms=300") as response:
        assert response.headers["content-type"] == "text/event-stream"
        # The first event arrives while the gateway is still producing the rest.
        first = await response.content.readuntil(b"\n\n")
        assert first == b'id: 0\nevent: tick\ndata: {"i":0}\n\n'
        rest = await response.read()
    assert first + rest == b"".join(
        b'id: %d\nevent: tick\ndata: {"i":%d}\n\n' % (i, i) for i in range(3)
    )


async def test_an_llm_call_with_a_production_model_passes_through_unparsed(
    proxy: Any, client: aiohttp.ClientSession, mock: MockServer
) -> None:
    body = b'{"model": "gpt-prod", "messages": []}'
    async with client.post(proxy.url + "/v1/chat/completions", data=body) as response:
        assert response.status == 200
        answer = orjson.loads(await response.read())
    assert answer["model"] == "gpt-prod"
    assert mock.requests[-1].body == body


async def test_an_llm_call_naming_another_model_passes_through_while_experiments_run(
    start_proxy: Any,
    proxy_settings: Settings,
    seed_experiment: Any,
    client: aiohttp.ClientSession,
    mock: MockServer,
) -> None:
    await seed_experiment()
    proxy = await start_proxy(proxy_settings)
    # The member id appears in the body, but not as the model.
    body = orjson.dumps(
        {"model": "gpt-prod", "messages": [{"role": "user", "content": f"is {PUBLIC_ID} good?"}]}
    )
    async with client.post(proxy.url + "/v1/chat/completions", data=body) as response:
        assert response.status == 200
        answer = orjson.loads(await response.read())
    assert answer["model"] == "gpt-prod"
    assert mock.requests[-1].path == "/v1/chat/completions"
    assert mock.requests[-1].body == body


async def test_gzip_responses_are_relayed_compressed_with_their_length(
    start_proxy: Any, settings: Settings, tmp_path: Any, client: aiohttp.ClientSession
) -> None:
    payload = gzip.compress(b'{"data": "' + b"x" * 5000 + b'"}')

    async def handler(request: web.Request) -> web.Response:
        return web.Response(
            body=payload,
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    gateway = await _gateway(handler)
    try:
        proxy = await start_proxy(_with_gateway(settings, tmp_path, gateway))
        async with client.get(proxy.url + "/v1/models") as response:
            assert response.headers["content-encoding"] == "gzip"
            assert response.headers["content-length"] == str(len(payload))
            assert await response.read() == payload
    finally:
        await gateway.cleanup()


async def test_status_and_repeated_headers_are_relayed(
    start_proxy: Any, settings: Settings, tmp_path: Any, client: aiohttp.ClientSession
) -> None:
    async def handler(request: web.Request) -> web.Response:
        response = web.Response(status=418, reason="I'm a teapot", text="short and stout")
        response.headers.add("Set-Cookie", "a=1")
        response.headers.add("Set-Cookie", "b=2")
        return response

    gateway = await _gateway(handler)
    try:
        proxy = await start_proxy(_with_gateway(settings, tmp_path, gateway))
        async with client.delete(proxy.url + "/anything") as response:
            assert response.status == 418
            assert response.reason == "I'm a teapot"
            assert response.headers.getall("Set-Cookie") == ["a=1", "b=2"]
            assert await response.read() == b"short and stout"
    finally:
        await gateway.cleanup()


async def test_redirects_are_relayed_not_followed(
    start_proxy: Any, settings: Settings, tmp_path: Any, client: aiohttp.ClientSession
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "/elsewhere"})

    gateway = await _gateway(handler)
    try:
        proxy = await start_proxy(_with_gateway(settings, tmp_path, gateway))
        async with client.get(proxy.url + "/login", allow_redirects=False) as response:
            assert response.status == 302
            assert response.headers["location"] == "/elsewhere"
    finally:
        await gateway.cleanup()


async def test_a_gateway_failing_mid_body_truncates_the_client_response(
    start_proxy: Any, settings: Settings, tmp_path: Any, client: aiohttp.ClientSession
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = 1000
        await response.prepare(request)
        await response.write(b"x" * 100)
        assert request.transport is not None
        request.transport.close()
        return response

    gateway = await _gateway(handler)
    try:
        proxy = await start_proxy(_with_gateway(settings, tmp_path, gateway))
        async with client.get(proxy.url + "/download") as response:
            assert response.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
    finally:
        await gateway.cleanup()


async def test_head_requests_keep_the_announced_length_without_a_body(
    start_proxy: Any, settings: Settings, tmp_path: Any, client: aiohttp.ClientSession
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 1234)

    gateway = await _gateway(handler)
    try:
        proxy = await start_proxy(_with_gateway(settings, tmp_path, gateway))
        async with client.head(proxy.url + "/file") as response:
            assert response.status == 200
            assert response.headers["content-length"] == "1234"
            assert await response.read() == b""
    finally:
        await gateway.cleanup()


async def test_gateway_unreachable_is_a_502_in_the_openai_shape(
    start_proxy: Any, settings: Settings, tmp_path: Any, client: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(
        dataclasses.replace(
            settings, gateway_url=f"http://127.0.0.1:{_closed_port()}", spool_dir=str(tmp_path)
        )
    )
    async with client.get(proxy.url + "/v1/models") as response:
        assert response.status == 502
        error = orjson.loads(await response.read())["error"]
    assert set(error) == {"message", "type", "code"}
    assert error["code"] == "upstream_unreachable"


async def test_no_gateway_configured_is_a_502_saying_so(
    start_proxy: Any, settings: Settings, tmp_path: Any, client: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(
        dataclasses.replace(settings, gateway_url=None, spool_dir=str(tmp_path))
    )
    async with client.get(proxy.url + "/v1/models") as response:
        assert response.status == 502
        error = orjson.loads(await response.read())["error"]
    assert "ABGATE_GATEWAY_URL" in error["message"]


async def test_an_oversized_llm_call_is_refused_with_413_before_reading_it(
    start_proxy: Any, proxy_settings: Settings, client: aiohttp.ClientSession, mock: MockServer
) -> None:
    proxy = await start_proxy(dataclasses.replace(proxy_settings, max_body_bytes=4096))
    body = b'{"model": "gpt-prod", "pad": "' + b"x" * 5000 + b'"}'
    async with client.post(proxy.url + "/v1/chat/completions", data=body) as response:
        assert response.status == 413
        assert orjson.loads(await response.read())["error"]["code"] == "request_too_large"
    assert mock.requests == []


async def test_an_oversized_chunked_llm_call_is_refused_with_413_while_experiments_run(
    start_proxy: Any,
    proxy_settings: Settings,
    seed_experiment: Any,
    client: aiohttp.ClientSession,
    mock: MockServer,
) -> None:
    await seed_experiment()
    proxy = await start_proxy(dataclasses.replace(proxy_settings, max_body_bytes=4096))

    async def body() -> AsyncIterator[bytes]:
        yield b'{"model": "gpt-prod", "pad": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    async with client.post(proxy.url + "/v1/chat/completions", data=body()) as response:
        assert response.status == 413
    assert mock.requests == []


async def test_uploads_to_other_paths_are_not_bounded_by_the_llm_body_limit(
    start_proxy: Any, proxy_settings: Settings, client: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(dataclasses.replace(proxy_settings, max_body_bytes=4096))
    body = os.urandom(100_000)
    async with client.post(proxy.url + "/_echo/v1/files", data=body) as response:
        echo = await _echo(response)
    assert echo["body_len"] == len(body)


async def test_malformed_json_naming_no_member_passes_through(
    start_proxy: Any,
    proxy_settings: Settings,
    seed_experiment: Any,
    client: aiohttp.ClientSession,
    mock: MockServer,
) -> None:
    await seed_experiment()
    proxy = await start_proxy(proxy_settings)
    async with client.post(proxy.url + "/_echo/v1/chat/completions", data=b"{not json") as r:
        assert r.status == 200  # the echo endpoint is not a chat endpoint, but the path is
    assert mock.requests[-1].body == b"{not json"


# -- helpers ---------------------------------------------------------------------


async def _gateway(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> web.AppRunner:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


def _with_gateway(settings: Settings, tmp_path: Any, gateway: web.AppRunner) -> Settings:
    port = gateway.addresses[0][1]
    return dataclasses.replace(
        settings, gateway_url=f"http://127.0.0.1:{port}", spool_dir=str(tmp_path / "spool")
    )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
