"""Weighted bucketing through the running proxy (the 10,000-user check of the hash
itself is tests/proxy_unit/test_bucketing.py)."""

from __future__ import annotations

from collections import Counter

import aiohttp
from e2e_support import AdminClient, StartApp, gather_limited, send_chat, upstream

from abgate.config import Settings
from abgate.mock_upstream import MAX_RECORDED, MockServer

USERS = 2_000
_BATCH = min(500, MAX_RECORDED)  # the mock keeps only its latest MAX_RECORDED requests


async def test_two_thousand_users_at_weights_1_to_3_land_within_3_points_of_25_75(
    admin: AdminClient,
    start_proxy: StartApp,
    e2e_settings: Settings,
    client: aiohttp.ClientSession,
    mock_a: MockServer,
) -> None:
    await admin.live_experiment(
        [("light", 1, upstream(mock_a, "ckpt-light")), ("heavy", 3, upstream(mock_a, "ckpt-heavy"))]
    )
    proxy = await start_proxy(e2e_settings)
    served: Counter[str] = Counter()

    for start in range(0, USERS, _BATCH):
        mock_a.clear_requests()
        statuses = await gather_limited(
            send_chat(client, proxy.url, f"synthetic-user-{n}")
            for n in range(start, min(start + _BATCH, USERS))
        )
        assert set(statuses) == {200}
        served.update(request.json()["model"] for request in mock_a.requests)

    assert served.total() == USERS
    assert abs(served["ckpt-light"] / USERS - 0.25) <= 0.03
    assert abs(served["ckpt-heavy"] / USERS - 0.75) <= 0.03
