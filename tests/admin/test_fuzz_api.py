"""Property-based run over /openapi.json: no 5xx, every answer as documented.

For every operation of the document, hypothesis generates path ids, query values
and bodies from the operation's schemas (boundary values, wrong types, missing and
unknown fields, garbage JSON and bytes). Each answer must be a documented status;
errors must be in the contract's shape and successes must match the response
schema. The only 5xx allowed is the documented "no encryption keys" 500.
The server runs in its own thread so hypothesis can drive it synchronously.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from admin_api import ADMIN_TOKEN, API_KEY, upstream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schema_tools import JSON_GARBAGE, errors, resolve, values

from abgate.config import Settings
from admin.app import create_app
from admin.context import NO_KEYS_MESSAGE
from admin.openapi import document

DOC = document()
OPERATIONS = [
    (method.upper(), path)
    for path, item in DOC["paths"].items()
    for method in item
    if path.startswith("/api/")
]


class LiveAdmin:
    """The admin app on a real port in a background thread, plus a sync client."""

    def __init__(self, app_settings: Settings) -> None:
        self._settings = app_settings
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0
        self.experiment_id = ""
        self.variant_id = 0

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        from aiohttp import web

        runner = web.AppRunner(create_app(self._settings))
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = runner.addresses[0][1]
        self._runner = runner
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(30), "admin app did not start"

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)

    def request(self, method: str, path: str, body: bytes | None = None
                ) -> tuple[int, bytes, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            if body is not None:
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read(), response.getheader("Content-Type") or ""
        finally:
            conn.close()

    def seed(self) -> None:
        """A draft with two ready variants; re-created when a fuzzed DELETE removed it."""
        if self.experiment_id:
            status, _, _ = self.request("GET", f"/api/experiments/{self.experiment_id}")
            if status == 200:
                status, _, _ = self.request("GET", "/api/audit?limit=1")
                return
        def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            status, raw, _ = self.request("POST", path, json.dumps(body).encode())
            assert status == 201, raw
            return json.loads(raw)  # type: ignore[no-any-return]
        experiment = post("/api/experiments", {"public_model_id": "fuzz/model", "name": "fuzz"})
        self.experiment_id = experiment["id"]
        for label in ("a", "b"):
            variant = post(f"/api/experiments/{self.experiment_id}/variants",
                           {"label": label, "weight": 1})
            post(f"/api/variants/{variant['id']}/versions",
                 {"upstream": upstream(), "api_key": API_KEY})
        self.variant_id = variant["id"]


@pytest.fixture
def live(admin_settings: Settings) -> Iterator[LiveAdmin]:
    server = LiveAdmin(admin_settings)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _id_values(live: LiveAdmin, schema: dict[str, Any]) -> st.SearchStrategy[str]:
    garbage = st.text(max_size=30) | st.integers().map(str)
    if schema.get("format") == "uuid":
        return st.just("@experiment") | st.uuids().map(str) | garbage
    return st.just("@variant") | st.integers(-5, 2**64).map(str) | garbage


def _request(live: LiveAdmin, method: str, template: str) -> st.SearchStrategy[Any]:
    op = DOC["paths"][template][method.lower()]
    path_strategies: dict[str, st.SearchStrategy[str]] = {}
    query_strategies: dict[str, st.SearchStrategy[Any]] = {}
    for param in op.get("parameters", []):
        if param["in"] == "path":
            path_strategies[param["name"]] = _id_values(live, param["schema"])
        else:
            query_strategies[param["name"]] = values(param["schema"], DOC).map(
                lambda v: v if isinstance(v, str) else json.dumps(v))
    body_strategy: st.SearchStrategy[Any] = st.none()
    if "requestBody" in op:
        schema = op["requestBody"]["content"]["application/json"]["schema"]
        encoded = values(schema, DOC).map(lambda v: json.dumps(v).encode())
        body_strategy = (encoded | JSON_GARBAGE.map(lambda v: json.dumps(v).encode())
                         | st.binary(max_size=64))
    return st.tuples(
        st.fixed_dictionaries(path_strategies),
        st.fixed_dictionaries({}, optional=query_strategies),
        body_strategy,
    )


def _check_answer(method: str, template: str, status: int, raw: bytes, content_type: str
                  ) -> None:
    op = DOC["paths"][template][method.lower()]
    assert str(status) in op["responses"], f"{method} {template}: undocumented {status}"
    response = op["responses"][str(status)]
    if "content" not in response:
        assert raw == b""
        return
    assert content_type.startswith("application/json")
    body = json.loads(raw)
    schema = response["content"]["application/json"]["schema"]
    problems = errors(body, schema, DOC)
    assert not problems, (method, template, status, problems)
    if status >= 500:
        assert body["error"]["message"] == NO_KEYS_MESSAGE, body
    assert API_KEY.encode() not in raw
    assert b"encrypted_api_key" not in raw


@pytest.mark.parametrize(("method", "template"), OPERATIONS)
def test_operation_answers_as_documented(live: LiveAdmin, method: str, template: str) -> None:
    live.seed()

    @settings(max_examples=60, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow])
    @given(request=_request(live, method, template))
    def run(request: tuple[dict[str, str], dict[str, str], bytes | None]) -> None:
        live.seed()
        path_values, query, body = request
        path = template
        for name, value in path_values.items():
            value = {"@experiment": live.experiment_id,
                     "@variant": str(live.variant_id)}.get(value, value)
            path = path.replace("{" + name + "}", quote(value, safe="") or "%20")
        if query:
            path += "?" + urlencode(query)
        status, raw, content_type = live.request(method, path, body)
        if status == 404 and "{" in template:
            # A garbage id may not even reach the handler; still the error shape.
            assert errors(json.loads(raw), {"$ref": "#/components/schemas/Error"}, DOC) == []
            return
        _check_answer(method, template, status, raw, content_type)

    run()


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(["GET", "POST", "PATCH", "DELETE", "PUT"]),
    path=st.lists(st.text(alphabet=st.characters(codec="ascii", exclude_characters="?#"),
                          max_size=12), min_size=1, max_size=4).map(
        lambda parts: "/api/" + "/".join(quote(p, safe="") for p in parts)),
    body=st.none() | st.binary(max_size=32),
)
def test_arbitrary_api_paths_never_fail_with_5xx(
    live: LiveAdmin, method: str, path: str, body: bytes | None
) -> None:
    status, raw, _ = live.request(method, path, body)
    assert status < 500
    if status >= 400:
        error_schema = resolve({"$ref": "#/components/schemas/Error"}, DOC)
        assert errors(json.loads(raw), error_schema, DOC) == []
