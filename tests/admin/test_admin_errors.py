"""Every error, including aiohttp's own, comes back in the contract's shape."""

from __future__ import annotations

import json

from admin_api import Api

from admin.app import MAX_BODY_BYTES

CODES = {"BAD_REQUEST", "NOT_FOUND", "CONFLICT", "UNAUTHORIZED", "FORBIDDEN",
         "INTERNAL_SERVER_ERROR"}


def assert_error_shape(body: object, code: str) -> None:
    assert isinstance(body, dict) and set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


async def test_malformed_json_is_400(api: Api) -> None:
    for raw in (b"{", b"not json", b"", b"   ", b"\xff\xfe", b'{"a": NaN}', b'"\\ud800"'):
        reply = await api.post("/api/experiments", data=raw,
                               headers={"Content-Type": "application/json"})
        assert reply.status == 400, raw
        assert_error_shape(reply.body, "BAD_REQUEST")


async def test_non_object_bodies_are_400(api: Api) -> None:
    for body in ([], "x", 1, None, True):
        reply = await api.post("/api/experiments", data=json.dumps(body).encode())
        assert reply.status == 400, body
        assert_error_shape(reply.body, "BAD_REQUEST")


async def test_wrong_types_are_400(api: Api) -> None:
    for body in ({"public_model_id": 1, "name": "x"}, {"public_model_id": "p", "name": None},
                 {"public_model_id": "p", "name": "x", "description": 5}):
        reply = await api.post("/api/experiments", body)
        assert reply.status == 400, body
        assert_error_shape(reply.body, "BAD_REQUEST")


async def test_experiment_input_limits(api: Api) -> None:
    bad = [
        {"public_model_id": "", "name": "x"},
        {"public_model_id": "p" * 201, "name": "x"},
        {"public_model_id": "has space", "name": "x"},
        {"public_model_id": 'quote"', "name": "x"},
        {"public_model_id": "p", "name": ""},
        {"public_model_id": "p", "name": "   "},
        {"public_model_id": "p", "name": "n" * 201},
        {"public_model_id": "p", "name": "x", "description": "d" * 2001},
        {"public_model_id": "p", "name": "nul\u0000"},
        {"public_model_id": "p", "name": "x", "status": "active"},
        {"name": "x"},
    ]
    for body in bad:
        reply = await api.post("/api/experiments", body)
        assert reply.status == 400, body
        assert_error_shape(reply.body, "BAD_REQUEST")
    ok = {"public_model_id": "a" * 200, "name": "n" * 200, "description": "d" * 2000}
    assert (await api.post("/api/experiments", ok)).status == 201


async def test_unknown_api_route_is_404_in_shape(api: Api) -> None:
    reply = await api.get("/api/does-not-exist")
    assert reply.status == 404
    assert_error_shape(reply.body, "NOT_FOUND")


async def test_unknown_route_outside_api_is_404_in_shape(api: Api) -> None:
    reply = await api.get("/nope")
    assert reply.status == 404
    assert_error_shape(reply.body, "NOT_FOUND")


async def test_wrong_method_is_405_in_shape_with_allow(api: Api) -> None:
    reply = await api.call("PUT", "/api/experiments")
    assert reply.status == 405
    assert_error_shape(reply.body, "BAD_REQUEST")
    assert "POST" in reply.headers["Allow"]


async def test_body_too_large_is_413_in_shape(api: Api) -> None:
    reply = await api.post("/api/experiments", data=b"{" + b" " * MAX_BODY_BYTES + b"}")
    assert reply.status == 413
    assert_error_shape(reply.body, "BAD_REQUEST")


async def test_deeply_nested_json_is_400(api: Api) -> None:
    reply = await api.post("/api/experiments", data=b"[" * 100_000 + b"]" * 100_000)
    assert reply.status == 400
    assert_error_shape(reply.body, "BAD_REQUEST")


async def test_conflict_shape(api: Api) -> None:
    experiment = await api.experiment()
    await api.variant(experiment["id"], "a")
    reply = await api.post(f"/api/experiments/{experiment['id']}/variants",
                           {"label": "a", "weight": 1})
    assert_error_shape(reply.body, "CONFLICT")



async def test_a_secret_sent_as_a_field_name_is_not_echoed_in_the_error(api: Api) -> None:
    secret = "sk-live-8f3a9c2e7b1d4f6a0e5c3b9d7a1f2e4c"
    reply = await api.post("/api/experiments", {"public_model_id": "p/x", "name": "n", secret: 1})
    assert reply.status == 400
    assert_error_shape(reply.body, "BAD_REQUEST")
    assert secret not in json.dumps(reply.body)
