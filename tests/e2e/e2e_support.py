"""Helpers for the end-to-end tests: an admin API client, running apps, traffic and polling.

Everything here talks HTTP to in-process servers (admin app, proxies, mock
upstreams) exactly as operators and clients would; nothing writes routing state
behind the admin app's back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from abgate.config import Settings
from abgate.mock_upstream import MockServer, RecordedRequest

PUBLIC_ID = "partner/preview-e2e"
CHAT = "/v1/chat/completions"
ADMIN_TOKEN = "abg_e2e-bootstrap-admin-token-5c1e"
PARTNER_KEY = "sk-partner-E2E-Qz7TmWx9Kp2Lr5VnHs4J"
MACHINE_HEADER = "x-machine-id"
CLIENT_REQUEST_HEADER = "x-client-request-id"
# The prompt names its sender, so a request the partner mock received can be
# traced back to the synthetic user who sent it (no client header reaches a partner).
_SENDER_PREFIX = "sent-by:"


def chat(sender: str = "someone", *, model: str = PUBLIC_ID, **extra: Any) -> dict[str, Any]:
    """A chat completion request body whose prompt names ``sender``."""
    return {
        "model": model,
        "messages": [{"role": "user", "content": f"{_SENDER_PREFIX}{sender}"}],
        **extra,
    }


def sender_of(request: RecordedRequest) -> str:
    """The ``sender`` a partner mock's recorded chat request was sent by."""
    content: str = request.json()["messages"][-1]["content"]
    assert content.startswith(_SENDER_PREFIX), content
    return content.removeprefix(_SENDER_PREFIX)


def upstream(
    mock: MockServer, internal_id: str, api_kind: str = "chat_completions"
) -> dict[str, Any]:
    """A variant version's ``upstream`` pointing at ``mock``."""
    return {"internal_id": internal_id, "base_url": f"{mock.url}/partner/v1", "api_kind": api_kind}


async def eventually(
    check: Callable[[], Awaitable[Any]], *, timeout: float, interval: float = 0.02
) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


# -- admin API ---------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    body: Any
    text: str


@dataclass(frozen=True)
class Variant:
    id: int
    label: str
    weight: int


@dataclass
class LiveExperiment:
    id: str
    public_model_id: str
    variants: list[Variant]


@dataclass
class AdminClient:
    """The admin HTTP API as an operator uses it; keeps every answer in ``transcript``."""

    session: aiohttp.ClientSession
    url: str
    token: str = ADMIN_TOKEN
    #: Status line, headers and body of every answer, for the secrets test.
    transcript: list[str] = field(default_factory=list)

    async def call(
        self, method: str, path: str, json: Any = None, *, data: bytes | None = None
    ) -> Reply:
        """One API call with a JSON body (or raw ``data``), answered as a :class:`Reply`."""
        headers = {"Authorization": f"Bearer {self.token}"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        async with self.session.request(
            method, self.url + path, json=json, data=data, headers=headers
        ) as response:
            text = await response.text()
            self.transcript.append(f"{response.status} {dict(response.headers)!r}\n{text}")
            body = await response.json() if response.content_type == "application/json" else None
            return Reply(response.status, body, text)

    async def ok(self, method: str, path: str, json: Any = None, *, status: int = 200) -> Any:
        reply = await self.call(method, path, json)
        assert reply.status == status, f"{method} {path}: {reply.status} {reply.text}"
        return reply.body

    async def create_experiment(self, public_model_id: str = PUBLIC_ID) -> str:
        body = await self.ok(
            "POST",
            "/api/experiments",
            {"public_model_id": public_model_id, "name": "e2e experiment"},
            status=201,
        )
        return str(body["id"])

    async def add_variant(self, experiment_id: str, label: str, weight: int) -> Variant:
        body = await self.ok(
            "POST",
            f"/api/experiments/{experiment_id}/variants",
            {"label": label, "weight": weight},
            status=201,
        )
        return Variant(int(body["id"]), label, weight)

    async def add_version(
        self, variant_id: int, upstream: dict[str, Any], api_key: str | None = None
    ) -> int:
        """A new version (the first one, or a hot-swap); returns its id."""
        payload: dict[str, Any] = {"upstream": upstream}
        if api_key is not None:
            payload["api_key"] = api_key
        body = await self.ok("POST", f"/api/variants/{variant_id}/versions", payload, status=201)
        return int(body["id"])

    async def transition(self, experiment_id: str, action: str) -> None:
        """``activate``, ``pause`` or ``complete``."""
        await self.ok("POST", f"/api/experiments/{experiment_id}/{action}")

    async def live_experiment(
        self,
        arms: Iterable[tuple[str, int, dict[str, Any]]],
        *,
        public_model_id: str = PUBLIC_ID,
        api_key: str = PARTNER_KEY,
    ) -> LiveExperiment:
        """An active experiment with one variant per ``(label, weight, upstream)``."""
        experiment_id = await self.create_experiment(public_model_id)
        variants = []
        for label, weight, arm_upstream in arms:
            variant = await self.add_variant(experiment_id, label, weight)
            await self.add_version(variant.id, arm_upstream, api_key)
            variants.append(variant)
        await self.transition(experiment_id, "activate")
        return LiveExperiment(experiment_id, public_model_id, variants)


# -- running apps ------------------------------------------------------------------------


@dataclass
class RunningApp:
    """An aiohttp app served on 127.0.0.1 at a free port."""

    url: str
    runner: web.AppRunner
    closed: bool = False

    async def close(self) -> None:
        """Stop serving (graceful, like SIGTERM); safe to call again at teardown."""
        if not self.closed:
            self.closed = True
            await self.runner.cleanup()


StartApp = Callable[[Settings], Awaitable[RunningApp]]


async def serve(runner: web.AppRunner) -> RunningApp:
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return RunningApp(f"http://127.0.0.1:{runner.addresses[0][1]}", runner)


# -- traffic -----------------------------------------------------------------------------


async def send_chat(
    client: aiohttp.ClientSession,
    proxy_url: str,
    machine: str,
    *,
    client_request_id: str | None = None,
) -> int:
    """One chat request from ``machine``; returns the status after reading the answer.

    The prompt names the client request id when there is one (else the machine),
    so the partner's copy of the request can be traced back (:func:`sender_of`).
    """
    headers = {MACHINE_HEADER: machine}
    if client_request_id is not None:
        headers[CLIENT_REQUEST_HEADER] = client_request_id
    body = chat(client_request_id or machine)
    async with client.post(proxy_url + CHAT, json=body, headers=headers) as response:
        await response.read()
        return response.status


async def gather_limited(coroutines: Iterable[Awaitable[Any]], limit: int = 16) -> list[Any]:
    """Await all ``coroutines`` with at most ``limit`` running at once, results in order."""
    semaphore = asyncio.Semaphore(limit)

    async def one(coroutine: Awaitable[Any]) -> Any:
        async with semaphore:
            return await coroutine

    return await asyncio.gather(*(one(c) for c in coroutines))
