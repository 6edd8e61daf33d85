"""The experiment path's refusals and failures: each one in the OpenAI error shape."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from typing import Any

import aiohttp
import jwt
import orjson
import pytest
from aiohttp import web

from abgate.config import Settings
from abgate.mock_upstream import MockConfig, MockServer, start_mock

PUBLIC_ID = "partner/preview-foo"
CHAT = "/v1/chat/completions"


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": PUBLIC_ID, "messages": [{"role": "user", "content": "hi"}], **extra}


async def _error(response: aiohttp.ClientResponse) -> dict[str, Any]:
    payload = orjson.loads(await response.read())
    assert set(payload) == {"error"}
    assert set(payload["error"]) == {"message", "type", "code"}
    error: dict[str, Any] = payload["error"]
    return error


async def test_a_paused_experiment_answers_404_and_never_reaches_any_upstream(
    start_proxy: Any, proxy_settings: Settings, seed_experiment: Any, client: Any, mock: Any
) -> None:
    await seed_experiment(status="paused")
    proxy = await start_proxy(proxy_settings)
    async with client.post(proxy.url + CHAT, json=chat()) as response:
        assert response.status == 404
        assert (await _error(response))["code"] == "model_not_found"
    assert mock.requests == []


async def test_an_endpoint_the_experiment_does_not_speak_is_400_unsupported_api(
    start_proxy: Any, proxy_settings: Settings, seed_experiment: Any, client: Any, mock: Any
) -> None:
    await seed_experiment(api_kind="chat_completions")
    proxy = await start_proxy(proxy_settings)
    body = {"model": PUBLIC_ID, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    async with client.post(proxy.url + "/v1/messages", json=body) as response:
        assert response.status == 400
        assert (await _error(response))["code"] == "unsupported_api"
    assert mock.requests == []


@pytest.mark.parametrize(
    "provider", [{"data_collection": "deny"}, {"zdr": True}], ids=["deny", "zdr"]
)
async def test_a_data_collection_opt_out_is_400(
    provider: dict[str, Any],
    start_proxy: Any,
    proxy_settings: Settings,
    seed_experiment: Any,
    client: Any,
    mock: Any,
) -> None:
    await seed_experiment()
    proxy = await start_proxy(proxy_settings)
    async with client.post(proxy.url + CHAT, json=chat(provider=provider)) as response:
        assert response.status == 400
        assert (await _error(response))["code"] == "data_collection_required"
    assert mock.requests == []


@pytest.mark.parametrize(
    "body",
    [b'{"model": "partner/preview-foo", ', b'["partner/preview-foo"]'],
    ids=["truncated", "not-an-object"],
)
async def test_a_body_naming_a_member_that_is_not_a_json_object_is_400(
    body: bytes,
    start_proxy: Any,
    proxy_settings: Settings,
    seed_experiment: Any,
    client: Any,
    mock: Any,
) -> None:
    await seed_experiment()
    proxy = await start_proxy(proxy_settings)
    async with client.post(proxy.url + CHAT, data=body) as response:
        assert response.status == 400
        assert (await _error(response))["type"] == "invalid_request_error"
    assert mock.requests == []


async def test_a_json_escaped_member_id_is_still_experimented(
    start_proxy: Any, proxy_settings: Settings, seed_experiment: Any, client: Any, mock: Any
) -> None:
    await seed_experiment()
    proxy = await start_proxy(proxy_settings)
    body = b'{"model": "partner\\/preview-\\u0066oo", "messages": []}'
    async with client.post(proxy.url + CHAT, data=body) as response:
        assert response.status == 200
    assert mock.requests[0].path == "/partner/v1/chat/completions"


async def test_an_invalid_bearer_jwt_is_401_and_a_valid_one_buckets_the_user(
    start_proxy: Any,
    proxy_settings: Settings,
    seed_experiment: Any,
    client: Any,
    mock: Any,
    wait_for_rows: Any,
) -> None:
    await seed_experiment()
    secret = "jwt-test-secret, 32 bytes or more"  # shorter HMAC keys draw PyJWT warnings
    proxy = await start_proxy(dataclasses.replace(proxy_settings, jwt_secret=secret))
    forged = jwt.encode({"sub": "user-1"}, "another secret, 32 bytes or more", algorithm="HS256")
    headers = {"Authorization": f"Bearer {forged}"}
    async with client.post(proxy.url + CHAT, json=chat(), headers=headers) as response:
        assert response.status == 401
        assert (await _error(response))["type"] == "authentication_error"
    assert mock.requests == []

    valid = jwt.encode({"sub": "user-1"}, secret, algorithm="HS256")
    headers = {"Authorization": f"Bearer {valid}"}
    async with client.post(proxy.url + CHAT, json=chat(), headers=headers) as response:
        assert response.status == 200
    (row,) = await wait_for_rows(1)
    assert (row["allocation_subject"], row["subject_value"], row["user_id"]) == (
        "user",
        "user-1",
        "user-1",
    )


async def test_an_upstream_error_keeps_its_status_and_is_blinded(
    start_proxy: Any,
    proxy_settings: Settings,
    seed_experiment: Any,
    partner: Any,
    client: Any,
    wait_for_rows: Any,
) -> None:
    async def overloaded(request: web.Request) -> web.Response:
        sent = await request.json()
        message = f"{sent['model']} at {request.host} is overloaded"
        return web.json_response(
            {"error": {"message": message, "type": "server_error", "model": sent["model"]}},
            status=429,
            headers={
                "x-request-id": "req_partner",
                "openai-organization": "partner-org",
                "retry-after": "7",
            },
        )

    base_url = await partner(overloaded)
    seeded = await seed_experiment(base_url=base_url)
    proxy = await start_proxy(proxy_settings)
    async with client.post(proxy.url + CHAT, json=chat()) as response:
        assert response.status == 429
        answer = await response.read()
        assert response.headers["retry-after"] == "7"
        assert "x-request-id" not in response.headers
        assert "openai-organization" not in response.headers
    error = orjson.loads(answer)["error"]
    assert error["model"] == PUBLIC_ID
    assert b"ckpt-" not in answer
    assert base_url.removeprefix("http://").removesuffix("/v1").encode() not in answer
    (row,) = await wait_for_rows(1)
    assert (row["status_code"], row["has_error"]) == (429, True)
    assert row["variant_version_id"] in {v.version_id for v in seeded.variants}


async def test_an_unreachable_upstream_is_502_and_recorded(
    start_proxy: Any,
    proxy_settings: Settings,
    seed_experiment: Any,
    client: Any,
    wait_for_rows: Any,
) -> None:
    await seed_experiment(base_url=f"http://127.0.0.1:{_closed_port()}/v1")
    proxy = await start_proxy(proxy_settings)
    async with client.post(proxy.url + CHAT, json=chat()) as response:
        assert response.status == 502
        error = await _error(response)
    assert error["code"] == "upstream_unreachable"
    assert "127.0.0.1" not in error["message"]
    (row,) = await wait_for_rows(1)
    assert (row["status_code"], row["has_error"]) == (502, True)


async def test_an_upstream_on_a_loopback_address_is_refused_without_insecure_mode(
    start_proxy: Any, proxy_settings: Settings, seed_experiment: Any, client: Any, mock: Any
) -> None:
    await seed_experiment()
    proxy = await start_proxy(dataclasses.replace(proxy_settings, allow_insecure_upstream=False))
    async with client.post(proxy.url + CHAT, json=chat()) as response:
        assert response.status == 502
    assert mock.requests == []


async def test_an_upstream_slower_than_its_timeout_is_504_and_recorded(
    start_proxy: Any,
    proxy_settings: Settings,
    seed_experiment: Any,
    client: Any,
    wait_for_rows: Any,
) -> None:
    slow = await start_mock(MockConfig(latency_ms=5000))
    try:
        await seed_experiment(base_url=slow.url + "/v1", upstream_extra={"timeout_s": 0.3})
        proxy = await start_proxy(proxy_settings)
        async with client.post(proxy.url + CHAT, json=chat()) as response:
            assert response.status == 504
            assert (await _error(response))["code"] == "upstream_timeout"
        (row,) = await wait_for_rows(1)
        assert (row["status_code"], row["has_error"]) == (504, True)
        assert len(slow.requests) == 1  # sent once, never retried
    finally:
        await slow.close()


async def test_an_answer_whose_body_stalls_past_the_timeout_is_504_and_recorded(
    start_proxy: Any,
    proxy_settings: Settings,
    seed_experiment: Any,
    partner: Any,
    client: Any,
    wait_for_rows: Any,
) -> None:
    async def stalls(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "application/json"})
        response.content_length = 100
        await response.prepare(request)
        await response.write(b'{"model": "ckpt-x", ')
        await asyncio.sleep(5)
        return response

    await seed_experiment(base_url=await partner(stalls), upstream_extra={"timeout_s": 0.3})
    proxy = await start_proxy(proxy_settings)
    async with client.post(proxy.url + CHAT, json=chat()) as response:
        assert response.status == 504
        assert (await _error(response))["code"] == "upstream_timeout"
    (row,) = await wait_for_rows(1)
    assert (row["status_code"], row["has_error"], row["streamed"]) == (504, True, False)


async def _breaks_off(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    await response.write(b'data: {"model": "ckpt-x", "choices": []}\n\ndata: {"par')
    assert request.transport is not None
    request.transport.close()
    return response


async def _stalls_mid_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    await response.write(b'data: {"model": "ckpt-x", "choices": []}\n\n')
    await asyncio.sleep(5)
    return response


@pytest.mark.parametrize(
    ("upstream", "code", "status"),
    [(_breaks_off, "upstream_unreachable", 502), (_stalls_mid_stream, "upstream_timeout", 504)],
    ids=["broken-off", "past-its-timeout"],
)
async def test_a_stream_the_upstream_does_not_finish_ends_with_an_error_event_and_is_recorded(
    start_proxy: Any,
    proxy_settings: Settings,
    seed_experiment: Any,
    partner: Any,
    client: Any,
    wait_for_rows: Any,
    upstream: Any,
    code: str,
    status: int,
) -> None:
    await seed_experiment(base_url=await partner(upstream), upstream_extra={"timeout_s": 0.5})
    proxy = await start_proxy(proxy_settings)
    async with client.post(proxy.url + CHAT, json=chat(stream=True)) as response:
        assert response.status == 200
        answer = await response.read()
    first, error, end = answer.split(b"\n\n")
    assert orjson.loads(first.removeprefix(b"data: "))["model"] == PUBLIC_ID
    assert orjson.loads(error.removeprefix(b"data: "))["error"]["code"] == code
    assert end == b""  # an incomplete event never reaches the client
    (row,) = await wait_for_rows(1)
    assert (row["status_code"], row["has_error"], row["streamed"]) == (status, True, True)


async def test_keep_alive_comments_flow_while_the_upstream_is_silent(
    start_proxy: Any,
    proxy_settings: Settings,
    seed_experiment: Any,
    client: Any,
) -> None:
    slow = await start_mock(MockConfig(chunks=2, chunk_interval_ms=600))
    try:
        await seed_experiment(base_url=slow.url + "/v1")
        proxy = await start_proxy(dataclasses.replace(proxy_settings, sse_keepalive_s=0.1))
        async with client.post(proxy.url + CHAT, json=chat(stream=True)) as response:
            answer = await response.read()
        assert b": keep-alive\n\n" in answer
        # Comments sit between whole events: every event still parses.
        data = [e for e in answer.split(b"\n\n") if e.startswith(b"data: {")]
        assert len(data) == 2
        for event in data:
            assert orjson.loads(event.removeprefix(b"data: "))["model"] == PUBLIC_ID
    finally:
        await slow.close()


async def test_a_client_leaving_mid_stream_cancels_the_upstream_and_is_recorded(
    start_proxy: Any,
    proxy_settings: Settings,
    seed_experiment: Any,
    eventually: Any,
    wait_for_rows: Any,
) -> None:
    slow = await start_mock(MockConfig(chunks=50, chunk_interval_ms=100))
    try:
        await seed_experiment(base_url=slow.url + "/v1")
        proxy = await start_proxy(proxy_settings)
        async with aiohttp.ClientSession() as session:
            response = await session.post(proxy.url + CHAT, json=chat(stream=True))
            await response.content.readuntil(b"\n\n")
            response.close()  # drop the connection mid-stream

        async def upstream_cancelled() -> bool:
            return bool(slow.requests) and slow.requests[0].cancelled

        await eventually(upstream_cancelled, timeout=5)
        (row,) = await wait_for_rows(1)
        assert (row["cancelled"], row["streamed"], row["status_code"]) == (True, True, 200)
    finally:
        await slow.close()


async def test_a_client_leaving_before_the_answer_cancels_the_upstream_and_is_recorded(
    start_proxy: Any,
    proxy_settings: Settings,
    seed_experiment: Any,
    eventually: Any,
    wait_for_rows: Any,
) -> None:
    slow = await start_mock(MockConfig(latency_ms=10_000))
    try:
        await seed_experiment(base_url=slow.url + "/v1")
        proxy = await start_proxy(proxy_settings)
        async with aiohttp.ClientSession() as session:
            with pytest.raises(asyncio.TimeoutError):
                await session.post(
                    proxy.url + CHAT, json=chat(), timeout=aiohttp.ClientTimeout(total=0.3)
                )

        async def upstream_cancelled() -> bool:
            return bool(slow.requests) and slow.requests[0].cancelled

        await eventually(upstream_cancelled, timeout=5)
        (row,) = await wait_for_rows(1)
        assert (row["cancelled"], row["status_code"]) == (True, 499)
    finally:
        await slow.close()


async def test_a_key_that_cannot_be_decrypted_is_503(
    start_proxy: Any,
    proxy_settings: Settings,
    seed_experiment: Any,
    experiments: Any,
    client: Any,
    mock: Any,
) -> None:
    seeded = await seed_experiment(weights=(1,))
    foreign = {"kid": "other", "iv": "AAAAAAAAAAAAAAAA", "data": "AAAA", "authTag": "A" * 22 + "=="}
    await experiments.hot_swap(
        seeded,
        seeded.variants[0],
        {"internal_id": "x", "base_url": mock.url, "api_kind": "chat_completions"},
        blob=foreign,
    )
    proxy = await start_proxy(proxy_settings)
    async with client.post(proxy.url + CHAT, json=chat()) as response:
        assert response.status == 503
        assert (await _error(response))["code"] == "temporarily_unavailable"
    assert mock.requests == []


async def test_without_encryption_keys_experiments_are_503_and_passthrough_works(
    start_proxy: Any, proxy_settings: Settings, seed_experiment: Any, client: Any, mock: Any
) -> None:
    await seed_experiment()
    proxy = await start_proxy(dataclasses.replace(proxy_settings, encryption_keys=[]))
    async with client.post(proxy.url + CHAT, json=chat()) as response:
        assert response.status == 503
    async with client.get(proxy.url + "/_echo/ok") as response:
        assert response.status == 200


async def test_an_unexpected_failure_is_a_generic_500_without_details(
    start_proxy: Any,
    proxy_settings: Settings,
    seed_experiment: Any,
    client: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import proxy.experiment

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("internal detail that must stay inside")

    monkeypatch.setattr(proxy.experiment, "prepare_upstream_body", broken)
    await seed_experiment()
    running = await start_proxy(proxy_settings)
    async with client.post(running.url + CHAT, json=chat()) as response:
        assert response.status == 500
        answer = await response.read()
    assert b"internal detail" not in answer
    assert b"Traceback" not in answer
    assert orjson.loads(answer)["error"]["type"] == "server_error"
    assert "internal detail that must stay inside" in caplog.text  # logged for operators


async def test_a_member_that_stops_being_live_falls_back_to_passthrough(
    start_proxy: Any,
    proxy_settings: Settings,
    seed_experiment: Any,
    experiments: Any,
    client: Any,
    mock: MockServer,
    eventually: Any,
) -> None:
    seeded = await seed_experiment()
    proxy = await start_proxy(proxy_settings)
    await experiments.set_status(seeded, "completed")

    async def gone() -> bool:
        return PUBLIC_ID not in proxy.state.store.members

    await eventually(gone, timeout=5)
    async with client.post(proxy.url + CHAT, json=chat()) as response:
        assert response.status == 200
    assert mock.requests[-1].path == CHAT  # the gateway, not the partner


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
