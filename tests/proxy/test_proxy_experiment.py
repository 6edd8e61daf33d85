"""The experiment path end to end: real Postgres and Redis, the mock as the partner upstream."""

from __future__ import annotations

import hashlib
from typing import Any

import aiohttp
import orjson
import pytest

from abgate.config import Settings
from abgate.mock_upstream import MockServer, mock_usage

PUBLIC_ID = "partner/preview-foo"
PARTNER_KEY = "sk-partner-SECRET-0123456789abcdef"
PATHS = {
    "chat_completions": "/v1/chat/completions",
    "responses": "/v1/responses",
    "messages": "/v1/messages",
}
CLIENT_HEADERS = {
    "Authorization": "Bearer client-gateway-token",
    "Cookie": "session=client-cookie",
    "X-Forwarded-For": "198.51.100.9",
    "x-machine-id": "machine-1",
    "x-client-request-id": "req-1",
}
# What a partner may receive: our headers, plus what any HTTP client sends.
ALLOWED_UPSTREAM_HEADERS = {
    "host",
    "content-type",
    "content-length",
    "accept",
    "accept-encoding",
    "authorization",
    "x-api-key",
    "anthropic-version",
}


def request_body(api_kind: str, *, stream: bool, **extra: Any) -> dict[str, Any]:
    if api_kind == "chat_completions":
        body: dict[str, Any] = {
            "messages": [
                {"role": "system", "content": "be nice"},
                {"role": "user", "content": "hi"},
            ],
            "user": "real-user-42",
        }
    elif api_kind == "responses":
        body = {"input": "hi", "instructions": "be nice", "user": "real-user-42"}
    else:
        body = {
            "max_tokens": 16,
            "system": "be nice",
            "messages": [{"role": "user", "content": "hi"}],
            "metadata": {"user_id": "real-user-42"},
        }
    return {"model": PUBLIC_ID, "stream": stream, **body, **extra}


def sent_user(api_kind: str, sent: dict[str, Any]) -> str:
    if api_kind == "messages":
        value: str = sent["metadata"]["user_id"]
    else:
        value = sent["user"]
    return value


def expected_tokens(api_kind: str, sent_len: int, chunks: int) -> tuple[int, int, int, int]:
    """(input, output, cache_read, cache_write) as usage.py reads the mock's usage."""
    usage = mock_usage(sent_len, chunks)
    if api_kind == "messages":
        return (
            usage.anthropic_input_tokens,
            chunks,
            usage.cached_tokens,
            usage.cache_write_tokens,
        )
    return usage.prompt_tokens - usage.cached_tokens, chunks, usage.cached_tokens, 0


async def _setup(
    start_proxy: Any, settings: Settings, seed_experiment: Any, api_kind: str, **seed: Any
) -> tuple[Any, Any]:
    seeded = await seed_experiment(api_kind=api_kind, **seed)
    proxy = await start_proxy(settings)
    return proxy, seeded


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("api_kind", ["chat_completions", "responses", "messages"])
async def test_experimented_call_is_transformed_blinded_and_recorded(
    api_kind: str,
    stream: bool,
    start_proxy: Any,
    proxy_settings: Settings,
    seed_experiment: Any,
    client: aiohttp.ClientSession,
    mock: MockServer,
    wait_for_rows: Any,
) -> None:
    proxy, seeded = await _setup(start_proxy, proxy_settings, seed_experiment, api_kind)
    body = request_body(api_kind, stream=stream)

    async with client.post(
        proxy.url + PATHS[api_kind], json=body, headers=CLIENT_HEADERS
    ) as response:
        answer = await response.read()
        answer_headers = response.headers

    # The partner got the transformed body and our headers only.
    (upstream_request,) = mock.requests
    assert upstream_request.path == "/partner/v1" + PATHS[api_kind].removeprefix("/v1")
    sent = upstream_request.json()
    variant = seeded.by_internal_id(sent["model"])
    pseudonym = sent_user(api_kind, sent)
    assert pseudonym.startswith("abg-")
    assert "real-user-42" not in upstream_request.body.decode()
    assert set(upstream_request.headers) <= ALLOWED_UPSTREAM_HEADERS
    if api_kind == "messages":
        assert upstream_request.headers["x-api-key"] == PARTNER_KEY
        assert upstream_request.headers["anthropic-version"] == "2023-06-01"
    else:
        assert upstream_request.headers["authorization"] == f"Bearer {PARTNER_KEY}"

    # The client got the public id everywhere and nothing naming the upstream.
    assert response.status == 200
    assert PUBLIC_ID.encode() in answer
    for secret in (variant.internal_id, "ckpt-", "/partner/v1", f"127.0.0.1:{mock.port}"):
        assert secret.encode() not in answer
    lowered = {name.lower() for name in answer_headers}
    assert lowered <= {
        "content-type",
        "cache-control",
        "content-length",
        "date",
        "server",
        "transfer-encoding",
    }
    assert answer_headers.get("server", "") != "mock-upstream"
    if stream:
        assert answer_headers["content-type"].startswith("text/event-stream")
    else:
        assert orjson.loads(answer)["model"] == PUBLIC_ID

    # One row, attributed and counted.
    (row,) = await wait_for_rows(1)
    assert row["request_kind"] == api_kind == row["r_kind"]
    assert row["upstream_model"] == variant.internal_id
    assert row["variant_version_id"] == variant.version_id
    assert row["status_code"] == 200
    assert (row["streamed"], row["has_error"], row["cancelled"]) == (stream, False, False)
    assert (row["allocation_subject"], row["subject_value"]) == ("machine", "machine-1")
    assert row["user_id"] is None
    assert row["client_request_id"] == "req-1"
    tokens = (
        row["input_tokens"],
        row["output_tokens"],
        row["cache_read_tokens"],
        row["cache_write_tokens"],
    )
    assert tokens == expected_tokens(api_kind, len(upstream_request.body), 4)
    assert row["request_body_sha256"] == hashlib.sha256(upstream_request.body).hexdigest()
    assert len(row["system_prompt_sha256"]) == 64
    assert row["ttft_ms"] is not None and row["latency_ms"] >= row["ttft_ms"]


async def test_chat_stream_forces_usage_upstream_and_hides_the_usage_chunk(
    start_proxy: Any,
    proxy_settings: Settings,
    seed_experiment: Any,
    client: aiohttp.ClientSession,
    mock: MockServer,
    wait_for_rows: Any,
) -> None:
    proxy, _ = await _setup(start_proxy, proxy_settings, seed_experiment, "chat_completions")
    body = request_body("chat_completions", stream=True)
    async with client.post(proxy.url + PATHS["chat_completions"], json=body) as response:
        answer = await response.read()
    assert mock.requests[0].json()["stream_options"] == {"include_usage": True}
    assert b'"choices":[]' not in answer
    assert answer.endswith(b"data: [DONE]\n\n")
    (row,) = await wait_for_rows(1)
    assert row["output_tokens"] == 4


async def test_chat_stream_keeps_the_usage_chunk_the_client_asked_for(
    start_proxy: Any,
    proxy_settings: Settings,
    seed_experiment: Any,
    client: aiohttp.ClientSession,
) -> None:
    proxy, _ = await _setup(start_proxy, proxy_settings, seed_experiment, "chat_completions")
    body = request_body("chat_completions", stream=True, stream_options={"include_usage": True})
    async with client.post(proxy.url + PATHS["chat_completions"], json=body) as response:
        answer = await response.read()
    assert b'"choices":[]' in answer


async def test_messages_pass_the_clients_anthropic_version_and_beta(
    start_proxy: Any,
    proxy_settings: Settings,
    seed_experiment: Any,
    client: aiohttp.ClientSession,
    mock: MockServer,
) -> None:
    proxy, _ = await _setup(start_proxy, proxy_settings, seed_experiment, "messages")
    headers = {"anthropic-version": "2024-01-01", "anthropic-beta": "tools-2024"}
    async with client.post(
        proxy.url + PATHS["messages"], json=request_body("messages", stream=False), headers=headers
    ) as response:
        assert response.status == 200
    sent_headers = mock.requests[0].headers
    assert sent_headers["anthropic-version"] == "2024-01-01"
    assert sent_headers["anthropic-beta"] == "tools-2024"


async def test_a_body_arriving_in_pieces_with_a_content_length_is_read_whole(
    start_proxy: Any,
    proxy_settings: Settings,
    seed_experiment: Any,
    client: aiohttp.ClientSession,
    mock: MockServer,
) -> None:
    proxy, _ = await _setup(start_proxy, proxy_settings, seed_experiment, "chat_completions")
    raw = orjson.dumps(request_body("chat_completions", stream=False, pad="x" * 300_000))

    async def pieces() -> Any:
        for start in range(0, len(raw), 50_000):
            yield raw[start : start + 50_000]

    async with client.post(
        proxy.url + PATHS["chat_completions"],
        data=pieces(),
        headers={**CLIENT_HEADERS, "Content-Length": str(len(raw))},
    ) as response:
        assert response.status == 200
    (upstream_request,) = mock.requests
    assert upstream_request.json()["pad"] == "x" * 300_000
