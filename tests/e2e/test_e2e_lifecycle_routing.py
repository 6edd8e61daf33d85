"""What the proxy does with a preview id as its experiment is paused and completed.

CONTRACT.md, Proxy: only a preview id "under an active or paused experiment" is
intercepted and "everything else goes to ABGATE_GATEWAY_URL unchanged". A paused
experiment is still a member, so its id is answered by the proxy (404
``model_not_found``) and never reaches the gateway. A completed experiment is
no longer a member, so its id is ordinary traffic again: it passes through to
the gateway byte for byte, and no partner upstream is called.
"""

from __future__ import annotations

import aiohttp
import orjson
from e2e_support import (
    CHAT,
    MACHINE_HEADER,
    PUBLIC_ID,
    AdminClient,
    LiveExperiment,
    StartApp,
    chat,
    eventually,
    send_chat,
    upstream,
)

from abgate.config import Settings
from abgate.mock_upstream import MockServer


async def _live(admin: AdminClient, mock: MockServer) -> LiveExperiment:
    return await admin.live_experiment(
        [("a", 1, upstream(mock, "ckpt-a-1")), ("b", 1, upstream(mock, "ckpt-b-1"))]
    )


async def test_a_paused_experiment_answers_404_and_the_gateway_never_sees_the_request(
    admin: AdminClient,
    start_proxy: StartApp,
    e2e_settings: Settings,
    client: aiohttp.ClientSession,
    mock_a: MockServer,
    gateway: MockServer,
) -> None:
    experiment = await _live(admin, mock_a)
    proxy = await start_proxy(e2e_settings)
    assert await send_chat(client, proxy.url, "machine-1") == 200
    await admin.transition(experiment.id, "pause")

    async def paused() -> bool:
        return await send_chat(client, proxy.url, "machine-1") == 404

    await eventually(paused, timeout=1.0)
    mock_a.clear_requests()
    async with client.post(
        proxy.url + CHAT, json=chat(), headers={MACHINE_HEADER: "machine-2"}
    ) as response:
        status, answer = response.status, await response.json()

    assert status == 404
    assert answer["error"]["code"] == "model_not_found"
    assert gateway.requests == []
    assert mock_a.requests == []


async def test_a_completed_experiment_passes_its_preview_id_through_to_the_gateway(
    admin: AdminClient,
    start_proxy: StartApp,
    e2e_settings: Settings,
    client: aiohttp.ClientSession,
    mock_a: MockServer,
    gateway: MockServer,
) -> None:
    experiment = await _live(admin, mock_a)
    proxy = await start_proxy(e2e_settings)
    assert await send_chat(client, proxy.url, "machine-1") == 200
    await admin.transition(experiment.id, "complete")

    async def passed_through() -> bool:
        assert await send_chat(client, proxy.url, "machine-1") == 200
        return bool(gateway.requests)

    await eventually(passed_through, timeout=1.0)
    mock_a.clear_requests()
    gateway.clear_requests()
    sent = orjson.dumps(chat("machine-2"))
    async with client.post(
        proxy.url + CHAT,
        data=sent,
        headers={MACHINE_HEADER: "machine-2", "content-type": "application/json"},
    ) as response:
        status, answer = response.status, await response.json()

    assert status == 200
    assert answer["model"] == PUBLIC_ID  # the gateway's answer (the mock echoes the model)
    assert [(r.path, r.body) for r in gateway.requests] == [(CHAT, sent)]
    assert mock_a.requests == []
