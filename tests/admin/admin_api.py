"""Helpers for the admin tests: a thin API client with builders, tokens and constants."""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from abgate.config import Settings
from admin.app import create_app

ADMIN_TOKEN = "abg_test-bootstrap-admin-token"
VIEWER_TOKEN = "abg_test-viewer-token"
API_KEY = "sk-test-secret-key-0123456789"


def upstream(api_kind: str = "chat_completions", internal_id: str = "partner/ckpt-1",
             **extra: Any) -> dict[str, Any]:
    return {"internal_id": internal_id, "base_url": "http://127.0.0.1:9/v1",
            "api_kind": api_kind, **extra}


@dataclasses.dataclass
class Reply:
    status: int
    body: Any
    text: str
    headers: Any


class Api:
    """A thin client: every call returns status, parsed body and raw text."""

    def __init__(self, client: TestClient, token: str | None) -> None:
        self.client = client
        self.token = token

    def as_(self, token: str | None) -> Api:
        return Api(self.client, token)

    async def call(self, method: str, path: str, json: Any = None, *,
                   data: bytes | None = None, headers: dict[str, str] | None = None) -> Reply:
        all_headers = dict(headers or {})
        if self.token is not None:
            all_headers.setdefault("Authorization", f"Bearer {self.token}")
        kwargs: dict[str, Any] = {"headers": all_headers}
        if data is not None:
            kwargs["data"] = data
        elif json is not None:
            kwargs["json"] = json
        async with self.client.request(method, path, **kwargs) as response:
            text = await response.text()
            body = None
            if response.content_type == "application/json" and text:
                body = await response.json()
            return Reply(response.status, body, text, response.headers)

    async def get(self, path: str, **kw: Any) -> Reply:
        return await self.call("GET", path, **kw)

    async def post(self, path: str, json: Any = None, **kw: Any) -> Reply:
        return await self.call("POST", path, json, **kw)

    async def patch(self, path: str, json: Any = None, **kw: Any) -> Reply:
        return await self.call("PATCH", path, json, **kw)

    async def delete(self, path: str, **kw: Any) -> Reply:
        return await self.call("DELETE", path, **kw)

    # -- builders ---------------------------------------------------------------

    async def experiment(self, public_model_id: str = "partner/preview-foo",
                         name: str = "Foo test") -> dict[str, Any]:
        reply = await self.post("/api/experiments",
                                {"public_model_id": public_model_id, "name": name})
        assert reply.status == 201, reply.text
        return reply.body  # type: ignore[no-any-return]

    async def variant(self, experiment_id: str, label: str, weight: int = 1) -> dict[str, Any]:
        reply = await self.post(f"/api/experiments/{experiment_id}/variants",
                                {"label": label, "weight": weight})
        assert reply.status == 201, reply.text
        return reply.body  # type: ignore[no-any-return]

    async def version(self, variant_id: int, api_key: str | None = API_KEY,
                      **upstream_kw: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"upstream": upstream(**upstream_kw)}
        if api_key is not None:
            body["api_key"] = api_key
        reply = await self.post(f"/api/variants/{variant_id}/versions", body)
        assert reply.status == 201, reply.text
        return reply.body  # type: ignore[no-any-return]

    async def ready_experiment(self, public_model_id: str = "partner/preview-foo",
                               api_kind: str = "chat_completions") -> dict[str, Any]:
        """A draft with two variants that each have a version: ready to activate."""
        experiment = await self.experiment(public_model_id)
        for label in ("a", "b"):
            variant = await self.variant(experiment["id"], label)
            await self.version(variant["id"], api_kind=api_kind)
        return await self.detail(experiment["id"])

    async def active_experiment(self, public_model_id: str = "partner/preview-foo"
                                ) -> dict[str, Any]:
        experiment = await self.ready_experiment(public_model_id)
        reply = await self.post(f"/api/experiments/{experiment['id']}/activate")
        assert reply.status == 200, reply.text
        return await self.detail(experiment["id"])

    async def detail(self, experiment_id: str) -> dict[str, Any]:
        reply = await self.get(f"/api/experiments/{experiment_id}")
        assert reply.status == 200, reply.text
        return reply.body  # type: ignore[no-any-return]


async def start_api(settings: Settings) -> TestClient:
    client = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    return client
