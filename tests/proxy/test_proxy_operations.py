"""Operating the proxy: health, metrics, secrets hygiene, hot-swaps, bucketing, draining."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
from typing import Any

import aiohttp
import orjson
import pytest

from abgate.config import Settings
from abgate.mock_upstream import MockConfig, MockServer, start_mock
from proxy.cli import serve

PUBLIC_ID = "partner/preview-foo"
PARTNER_KEY = "sk-partner-SECRET-0123456789abcdef"
CHAT = "/v1/chat/completions"


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": PUBLIC_ID, "messages": [{"role": "user", "content": "hi"}], **extra}


async def test_healthz_and_readyz_answer_200_once_config_is_loaded(
    start_proxy: Any, proxy_settings: Settings, client: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(proxy_settings)
    async with client.get(proxy.url + "/healthz") as response:
        assert response.status == 200
    async with client.get(proxy.url + "/readyz") as response:
        assert response.status == 200
        assert orjson.loads(await response.read()) == {"status": "ready"}


async def test_readyz_is_503_with_reasons_while_postgres_is_unreachable(
    start_proxy: Any, proxy_settings: Settings, client: aiohttp.ClientSession, mock: MockServer
) -> None:
    down = dataclasses.replace(
        proxy_settings, database_url=f"postgresql://postgres@127.0.0.1:{_closed_port()}/none"
    )
    proxy = await start_proxy(down)
    async with client.get(proxy.url + "/readyz") as response:
        assert response.status == 503
        payload = orjson.loads(await response.read())
    assert payload["status"] == "not_ready"
    assert payload["reasons"] == ["routing config not loaded yet"]
    async with client.get(proxy.url + "/healthz") as response:
        assert response.status == 200
    # Traffic still passes through to the gateway.
    async with client.get(proxy.url + "/_echo/still-serving") as response:
        assert response.status == 200


async def _metric(client: aiohttp.ClientSession, url: str, series: str) -> float:
    """The value of one exposition line (0 when absent): metrics are process-wide."""
    async with client.get(url + "/metrics") as response:
        assert response.status == 200
        text = (await response.read()).decode()
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_count_requests_by_route_model_variant_and_code(
    start_proxy: Any,
    proxy_settings: Settings,
    seed_experiment: Any,
    client: aiohttp.ClientSession,
    mock: MockServer,
) -> None:
    await seed_experiment(weights=(1,))
    proxy = await start_proxy(proxy_settings)
    experiment = (
        'abgate_requests_total{code="200",public_model_id="partner/preview-foo",'
        'route="chat_completions",variant="variant-a"}'
    )
    passthrough = (
        'abgate_requests_total{code="200",public_model_id="",route="passthrough",variant=""}'
    )
    output_tokens = (
        'abgate_tokens_total{kind="output",public_model_id="partner/preview-foo",'
        'variant="variant-a"}'
    )
    ttft = (
        'abgate_upstream_ttft_seconds_count{public_model_id="partner/preview-foo",'
        'variant="variant-a"}'
    )
    before = {
        s: await _metric(client, proxy.url, s)
        for s in (experiment, passthrough, output_tokens, ttft)
    }

    async with client.post(proxy.url + CHAT, json=chat()) as response:
        assert response.status == 200
    async with client.get(proxy.url + "/_echo/x") as response:
        assert response.status == 200

    after = {s: await _metric(client, proxy.url, s) for s in before}
    assert after[experiment] - before[experiment] == 1
    assert after[ttft] - before[ttft] == 1
    assert after[output_tokens] - before[output_tokens] == 4  # the mock's 4 chunks
    assert after[passthrough] - before[passthrough] == 1


async def test_the_partner_key_never_appears_in_answers_logs_metrics_or_rows(
    start_proxy: Any,
    proxy_settings: Settings,
    seed_experiment: Any,
    client: aiohttp.ClientSession,
    db: Any,
    wait_for_rows: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    await seed_experiment()
    proxy = await start_proxy(proxy_settings)
    answers = []
    for body in (chat(), chat(stream=True), chat(provider={"zdr": True})):
        async with client.post(proxy.url + CHAT, json=body) as response:
            answers.append(await response.read() + str(response.headers).encode())
    unreachable = await start_proxy(
        dataclasses.replace(proxy_settings, allow_insecure_upstream=False)
    )
    async with client.post(unreachable.url + CHAT, json=chat()) as response:
        answers.append(await response.read())
    async with client.get(proxy.url + "/metrics") as response:
        answers.append(await response.read())
    await wait_for_rows(3)
    rows = await db.fetch(
        "SELECT u.*, r.* FROM usage u JOIN model_experiment_request r ON r.usage_id = u.id"
    )
    secret = PARTNER_KEY.encode()
    for answer in answers:
        assert secret not in answer
    assert PARTNER_KEY not in caplog.text
    assert PARTNER_KEY not in repr([dict(row) for row in rows])
    assert "SECRET" not in caplog.text


async def test_a_hot_swap_is_served_by_the_next_request_within_a_second(
    start_proxy: Any,
    proxy_settings: Settings,
    seed_experiment: Any,
    experiments: Any,
    client: aiohttp.ClientSession,
    mock: MockServer,
    eventually: Any,
) -> None:
    seeded = await seed_experiment(weights=(1,))
    proxy = await start_proxy(proxy_settings)
    async with client.post(proxy.url + CHAT, json=chat()) as response:
        assert response.status == 200
    assert mock.requests[-1].json()["model"] == seeded.variants[0].internal_id

    upstream = {
        "internal_id": "ckpt-hot-swapped",
        "base_url": f"{mock.url}/partner/v1",
        "api_kind": "chat_completions",
    }
    await experiments.hot_swap(seeded, seeded.variants[0], upstream)

    async def swapped() -> bool:
        async with client.post(proxy.url + CHAT, json=chat()) as response:
            assert response.status == 200
        return bool(mock.requests[-1].json()["model"] == "ckpt-hot-swapped")

    await eventually(swapped, timeout=1.0)


async def test_without_redis_routing_continues_and_a_pause_lands_within_5_s(
    start_proxy: Any,
    proxy_settings: Settings,
    seed_experiment: Any,
    experiments: Any,
    client: aiohttp.ClientSession,
    eventually: Any,
) -> None:
    seeded = await seed_experiment()
    no_redis = dataclasses.replace(
        proxy_settings, redis_url=f"redis://127.0.0.1:{_closed_port()}/0"
    )
    proxy = await start_proxy(no_redis)
    async with client.post(proxy.url + CHAT, json=chat()) as response:
        assert response.status == 200
    await experiments.set_status(seeded, "paused")  # the push never reaches this proxy

    async def paused() -> bool:
        async with client.post(proxy.url + CHAT, json=chat()) as response:
            return response.status == 404

    await eventually(paused, timeout=5.0, interval=0.2)


async def test_users_keep_their_variant_across_proxy_instances_and_hot_swaps(
    start_proxy: Any,
    proxy_settings: Settings,
    seed_experiment: Any,
    experiments: Any,
    client: aiohttp.ClientSession,
    mock: MockServer,
) -> None:
    seeded = await seed_experiment(weights=(1, 3))
    first = await start_proxy(proxy_settings)
    second = await start_proxy(proxy_settings)
    machines = [f"machine-{i}" for i in range(24)]

    async def variants_seen(proxy: Any) -> list[str]:
        seen = []
        for machine in machines:
            headers = {"x-machine-id": machine}
            async with client.post(proxy.url + CHAT, json=chat(), headers=headers) as response:
                assert response.status == 200
            seen.append(mock.requests[-1].json()["model"])
        return seen

    on_first = await variants_seen(first)
    assert set(on_first) == {v.internal_id for v in seeded.variants}  # both variants in use
    assert await variants_seen(second) == on_first


async def test_sigterm_drain_lets_an_in_flight_stream_finish(
    proxy_settings: Settings,
    seed_experiment: Any,
    eventually: Any,
    wait_for_rows: Any,
) -> None:
    slow = await start_mock(MockConfig(chunks=5, chunk_interval_ms=100))
    stop = asyncio.Event()
    port = _closed_port()
    # A drain budget a loaded machine cannot overrun: a write still pending when
    # it ends is spooled, not lost, but then it is not in Postgres yet.
    settings = dataclasses.replace(proxy_settings, drain_s=15.0)
    server = asyncio.create_task(
        serve(settings, "127.0.0.1", port, stop=stop, handle_signals=False)
    )
    try:
        await seed_experiment(base_url=slow.url + "/v1")
        async with aiohttp.ClientSession() as session:

            async def listening() -> bool:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                        return response.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            await eventually(listening, timeout=5)
            response = await session.post(f"http://127.0.0.1:{port}{CHAT}", json=chat(stream=True))
            first = await response.content.readuntil(b"\n\n")
            stop.set()  # what SIGTERM does
            rest = await response.read()
        await asyncio.wait_for(server, timeout=20)
        assert (first + rest).endswith(b"data: [DONE]\n\n")
        (row,) = await wait_for_rows(1)  # flushed by the recorder on the way out
        assert (row["cancelled"], row["status_code"]) == (False, 200)
    finally:
        stop.set()
        await asyncio.gather(server, return_exceptions=True)
        await slow.close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_heap_is_trimmed_while_the_proxy_runs_and_not_after(
    start_proxy: Any, proxy_settings: Settings
) -> None:
    def trimming() -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() if t.get_name() == "abgate-heap-trim"]

    proxy = await start_proxy(proxy_settings)
    assert len(trimming()) == 1
    await proxy.close()
    assert trimming() == []
