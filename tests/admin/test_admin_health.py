"""Probes, metrics and the OpenAPI document."""

from __future__ import annotations

from pathlib import Path

import asyncpg
from admin_api import Api
from aiohttp.test_utils import TestClient, TestServer

from abgate.config import Settings
from abgate.embedded import EmbeddedServices
from admin.app import create_app
from admin.openapi import ERROR_CODES, document


async def test_healthz(anonymous: Api) -> None:
    reply = await anonymous.get("/healthz")
    assert (reply.status, reply.body) == (200, {"status": "ok"})


async def test_readyz_when_the_database_answers(anonymous: Api) -> None:
    reply = await anonymous.get("/readyz")
    assert (reply.status, reply.body) == (200, {"status": "ready"})


async def test_readyz_is_503_when_the_database_is_gone(
    anonymous: Api, database_url: str, services: EmbeddedServices
) -> None:
    name = database_url.rsplit("/", 1)[1].split("?")[0]
    admin = await asyncpg.connect(services.database_url)
    try:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()
    reply = await anonymous.get("/readyz")
    assert reply.status == 503
    assert reply.body["error"]["message"] == "database unreachable"


async def test_metrics_count_requests_by_route_template(api: Api, anonymous: Api) -> None:
    experiment = await api.experiment()
    await api.get(f"/api/experiments/{experiment['id']}")
    await api.get("/api/definitely-missing")
    reply = await anonymous.get("/metrics")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain")
    text = reply.text
    assert ('abgate_admin_requests_total{code="200",method="GET",'
            'route="/api/experiments/{id}"}') in text
    assert 'route="unmatched"' in text
    assert experiment["id"] not in text
    assert "abgate_admin_publish_failures_total" in text


async def test_openapi_is_served_and_is_3_1(anonymous: Api) -> None:
    reply = await anonymous.get("/openapi.json")
    assert reply.status == 200
    assert reply.body["openapi"] == "3.1.0"
    assert reply.body == document()


def test_openapi_describes_exactly_the_registered_routes(admin_settings: Settings) -> None:
    app = create_app(admin_settings)
    registered = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method not in ("HEAD", "*")
        and not route.resource.canonical.startswith("/ui") and route.resource.canonical != "/"
    }
    documented = {(method, path) for path, item in document()["paths"].items()
                  for method in item}
    assert registered == documented


def test_openapi_error_codes_are_the_contract_codes() -> None:
    assert set(ERROR_CODES) == {"BAD_REQUEST", "NOT_FOUND", "CONFLICT", "UNAUTHORIZED",
                                "FORBIDDEN", "INTERNAL_SERVER_ERROR"}
    schema = document()["components"]["schemas"]["Error"]
    assert schema["properties"]["error"]["properties"]["code"]["enum"] == list(ERROR_CODES)


def test_every_operation_documents_its_body_and_responses() -> None:
    for path, item in document()["paths"].items():
        for method, op in item.items():
            assert op["responses"], (method, path)
            if path.startswith("/api/"):
                assert "401" in op["responses"], (method, path)
            if method in ("post", "patch") and path.startswith("/api/") and not path.endswith(
                    ("/activate", "/pause", "/complete")):
                assert "requestBody" in op, (method, path)


async def test_ui_is_served_without_a_token_and_root_redirects(
    admin_settings: Settings, tmp_path: Path
) -> None:
    (tmp_path / "index.html").write_text("<!doctype html><title>abgate</title>")
    (tmp_path / "app.js").write_text("console.log('ui')")
    client = TestClient(TestServer(create_app(admin_settings, static_dir=tmp_path)))
    await client.start_server()
    try:
        root = await client.get("/", allow_redirects=False)
        assert (root.status, root.headers["Location"]) == (302, "/ui/")
        index = await client.get("/ui/")
        assert index.status == 200 and "abgate" in await index.text()
        script = await client.get("/ui/app.js")
        assert script.status == 200
        missing = await client.get("/ui/missing.js")
        assert missing.status == 404
        assert (await missing.json())["error"]["code"] == "NOT_FOUND"
    finally:
        await client.close()


async def test_without_a_ui_directory_root_is_404(
    admin_settings: Settings, tmp_path: Path
) -> None:
    client = TestClient(TestServer(create_app(admin_settings, static_dir=tmp_path / "none")))
    await client.start_server()
    try:
        reply = await client.get("/", allow_redirects=False)
        assert reply.status == 404
    finally:
        await client.close()


async def test_ui_paths_cannot_escape_the_static_directory(
    admin_settings: Settings, tmp_path: Path
) -> None:
    ui = tmp_path / "ui"
    ui.mkdir()
    (tmp_path / "secret.txt").write_text("outside")
    client = TestClient(TestServer(create_app(admin_settings, static_dir=ui)))
    await client.start_server()
    try:
        for path in ("/ui/../secret.txt", "/ui/%2e%2e/secret.txt", "/ui/..%2fsecret.txt"):
            reply = await client.get(path)
            # The client may normalise "/ui/../x" to "/x", which then needs a token.
            assert reply.status in (401, 404), path
            assert "outside" not in await reply.text()
    finally:
        await client.close()
