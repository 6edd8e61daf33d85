"""Admin changes reach running proxies: within 1 s by push, within 5 s by poll without Redis."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Awaitable, Callable

import aiohttp
from e2e_support import (
    AdminClient,
    LiveExperiment,
    StartApp,
    eventually,
    send_chat,
    upstream,
)

from abgate.config import Settings
from abgate.mock_upstream import MockServer


def _closed_port() -> int:
    """A local port nothing listens on: connecting to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _machine_in_variant(
    client: aiohttp.ClientSession, proxy_url: str, mock: MockServer, internal_id: str
) -> str:
    """A machine id the proxy routes to ``internal_id`` (found by asking the proxy)."""
    for n in range(64):
        machine = f"machine-{n}"
        assert await send_chat(client, proxy_url, machine) == 200
        if mock.requests[-1].json()["model"] == internal_id:
            return machine
    raise AssertionError(f"no machine routed to {internal_id}")


async def test_a_hot_swap_through_the_admin_api_is_served_by_the_next_request_within_1_s(
    admin: AdminClient,
    start_proxy: StartApp,
    e2e_settings: Settings,
    client: aiohttp.ClientSession,
    mock_a: MockServer,
    mock_b: MockServer,
) -> None:
    experiment = await admin.live_experiment(
        [("a", 1, upstream(mock_a, "ckpt-a-1")), ("b", 1, upstream(mock_a, "ckpt-b-1"))]
    )
    proxy = await start_proxy(e2e_settings)
    # Served once before the swap, so the old snapshot is cached everywhere.
    machine = await _machine_in_variant(client, proxy.url, mock_a, "ckpt-a-1")

    await admin.add_version(experiment.variants[0].id, upstream(mock_b, "ckpt-a-2"))

    async def served_by_b() -> bool:
        assert await send_chat(client, proxy.url, machine) == 200
        return bool(mock_b.requests)

    await eventually(served_by_b, timeout=1.0)
    assert [r.json()["model"] for r in mock_b.requests] == ["ckpt-a-2"]


async def test_without_redis_routing_continues_and_a_pause_answers_404_within_5_s(
    start_admin: Callable[[Settings], Awaitable[AdminClient]],
    start_proxy: StartApp,
    e2e_settings: Settings,
    client: aiohttp.ClientSession,
    mock_a: MockServer,
) -> None:
    no_redis = dataclasses.replace(e2e_settings, redis_url=f"redis://127.0.0.1:{_closed_port()}/0")
    admin = await start_admin(no_redis)
    proxy = await start_proxy(no_redis)
    experiment: LiveExperiment = await admin.live_experiment(
        [("a", 1, upstream(mock_a, "ckpt-a-1")), ("b", 1, upstream(mock_a, "ckpt-b-1"))]
    )

    async def routed_to_the_partner() -> bool:
        # Until the proxy's poll sees the activation, the call passes through to the gateway.
        assert await send_chat(client, proxy.url, "machine-1") == 200
        return bool(mock_a.requests)

    await eventually(routed_to_the_partner, timeout=5.0, interval=0.1)

    await admin.transition(experiment.id, "pause")

    async def paused() -> bool:
        return await send_chat(client, proxy.url, "machine-1") == 404

    await eventually(paused, timeout=5.0, interval=0.1)
