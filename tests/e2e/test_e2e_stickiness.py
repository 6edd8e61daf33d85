"""200 synthetic users keep their variant slot through everything but a weight change.

A user's route is observed twice: the partner mock that received the request
and the checkpoint it was asked for (what actually served), and the variant the
proxy recorded in the request row (what the stats will count).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
import asyncpg
import pytest
from e2e_support import (
    AdminClient,
    LiveExperiment,
    RunningApp,
    StartApp,
    eventually,
    gather_limited,
    send_chat,
    sender_of,
    upstream,
)

from abgate.config import Settings
from abgate.mock_upstream import MockServer

USERS = [f"user-machine-{n:03d}" for n in range(200)]

_RECORDED_SQL = """
SELECT r.client_request_id, x.variant_id
FROM model_experiment_request r
JOIN model_experiment_variant_version x ON x.id = r.variant_version_id
WHERE r.client_request_id LIKE $1
"""


@dataclass(frozen=True)
class Route:
    variant_id: int  # the slot recorded in the request row
    mock: str  # the partner upstream that received the request
    internal_id: str  # the checkpoint the partner was asked for


class Observer:
    """Sends one request per user and reports where each one went."""

    def __init__(
        self, client: aiohttp.ClientSession, db: asyncpg.Connection, mocks: Mapping[str, MockServer]
    ) -> None:
        self._client = client
        self._db = db
        self._mocks = mocks

    async def routes(self, proxy: RunningApp, phase: str) -> dict[str, Route]:
        return (await self.routes_on({phase: proxy}))[phase]

    async def routes_on(self, proxies: Mapping[str, RunningApp]) -> dict[str, dict[str, Route]]:
        """Every user through every proxy at once; ``{phase: {user: route}}``."""
        for mock in self._mocks.values():
            mock.clear_requests()
        sent = [(phase, proxy, user) for phase, proxy in proxies.items() for user in USERS]
        statuses = await gather_limited(
            send_chat(self._client, proxy.url, user, client_request_id=f"{phase}/{user}")
            for phase, proxy, user in sent
        )
        assert statuses == [200] * len(sent)
        served = {
            sender_of(request): (name, request.json()["model"])
            for name, mock in self._mocks.items()
            for request in mock.requests
        }
        assert len(served) == len(sent)
        recorded = {}
        for phase in proxies:
            recorded.update(await self._recorded(phase))
        return {
            phase: {
                user: Route(recorded[f"{phase}/{user}"], *served[f"{phase}/{user}"])
                for user in USERS
            }
            for phase in proxies
        }

    async def _recorded(self, phase: str) -> dict[str, int]:
        async def rows() -> list[asyncpg.Record] | None:
            found = await self._db.fetch(_RECORDED_SQL, f"{phase}/%")
            return found if len(found) >= len(USERS) else None

        found = await eventually(rows, timeout=5.0)
        assert len(found) == len(USERS)
        return {row["client_request_id"]: row["variant_id"] for row in found}


@dataclass
class Scenario:
    experiment: LiveExperiment
    proxy: RunningApp
    observer: Observer
    before: dict[str, Route]

    @property
    def variant_a(self) -> int:
        return self.experiment.variants[0].id

    def a_user_in(self, variant_id: int) -> str:
        return next(user for user, route in self.before.items() if route.variant_id == variant_id)


@pytest.fixture
async def scenario(
    admin: AdminClient,
    start_proxy: StartApp,
    e2e_settings: Settings,
    client: aiohttp.ClientSession,
    db: asyncpg.Connection,
    mock_a: MockServer,
    mock_b: MockServer,
) -> Scenario:
    """A live 1:1 experiment (both variants on mock A), a proxy and every user's route on it."""
    experiment = await admin.live_experiment(
        [("a", 1, upstream(mock_a, "ckpt-a-1")), ("b", 1, upstream(mock_a, "ckpt-b-1"))]
    )
    proxy = await start_proxy(e2e_settings)
    observer = Observer(client, db, {"mock_a": mock_a, "mock_b": mock_b})
    before = await observer.routes(proxy, "before")
    slots = {variant.id: f"ckpt-{variant.label}-1" for variant in experiment.variants}
    # Both slots are populated and each serves its own checkpoint: the checks can fail.
    assert {route.variant_id for route in before.values()} == set(slots)
    assert all(route.internal_id == slots[route.variant_id] for route in before.values())
    return Scenario(experiment, proxy, observer, before)


async def test_users_keep_their_slot_across_a_hot_swap_and_reach_the_new_checkpoint(
    scenario: Scenario, admin: AdminClient, client: aiohttp.ClientSession, mock_b: MockServer
) -> None:
    await admin.add_version(scenario.variant_a, upstream(mock_b, "ckpt-a-2"))
    user_a = scenario.a_user_in(scenario.variant_a)

    async def swapped() -> bool:
        assert await send_chat(client, scenario.proxy.url, user_a) == 200
        return bool(mock_b.requests)

    await eventually(swapped, timeout=1.0)

    after = await scenario.observer.routes(scenario.proxy, "after")

    expected = {
        user: Route(route.variant_id, "mock_b", "ckpt-a-2")
        if route.variant_id == scenario.variant_a
        else route
        for user, route in scenario.before.items()
    }
    assert after == expected


async def test_users_keep_their_slot_when_labels_change_order(
    scenario: Scenario,
    admin: AdminClient,
    start_proxy: StartApp,
    e2e_settings: Settings,
    client: aiohttp.ClientSession,
) -> None:
    first, second = scenario.experiment.variants
    # Renamed so that label order is the reverse of variant id order.
    await admin.ok("PATCH", f"/api/variants/{first.id}", {"label": "zz-first"})
    await admin.ok("PATCH", f"/api/variants/{second.id}", {"label": "aa-second"})
    # Labels do not affect routing, so nothing is invalidated: a proxy reading
    # straight from Postgres (no Redis) is the one guaranteed to see the new labels.
    fresh = await start_proxy(dataclasses.replace(e2e_settings, redis_url=None))

    after = await scenario.observer.routes(fresh, "after")

    assert after == scenario.before
    async with client.get(fresh.url + "/metrics") as response:
        assert 'variant="zz-first"' in await response.text()  # the new labels were loaded


async def test_users_keep_their_slot_across_pause_and_resume(
    scenario: Scenario, admin: AdminClient, client: aiohttp.ClientSession
) -> None:
    user = scenario.a_user_in(scenario.variant_a)
    await admin.transition(scenario.experiment.id, "pause")

    async def answers(status: int) -> bool:
        return await send_chat(client, scenario.proxy.url, user) == status

    await eventually(lambda: answers(404), timeout=1.0)
    await admin.transition(scenario.experiment.id, "activate")
    await eventually(lambda: answers(200), timeout=1.0)

    after = await scenario.observer.routes(scenario.proxy, "after")

    assert after == scenario.before


async def test_users_keep_their_slot_across_a_proxy_restart(
    scenario: Scenario, start_proxy: StartApp, e2e_settings: Settings
) -> None:
    await scenario.proxy.close()
    restarted = await start_proxy(e2e_settings)

    after = await scenario.observer.routes(restarted, "after")

    assert after == scenario.before


async def test_two_proxies_serving_at_once_route_every_user_alike(
    scenario: Scenario, start_proxy: StartApp, e2e_settings: Settings
) -> None:
    second = await start_proxy(e2e_settings)

    after = await scenario.observer.routes_on({"first": scenario.proxy, "second": second})

    assert after["first"] == scenario.before
    assert after["second"] == scenario.before
