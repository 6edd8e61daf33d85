"""POST /v1/feedback: validation, identity rules, latest rating wins; the 0006 column check."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import asyncpg
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from abgate.config import Settings
from proxy import feedback
from proxy.errors import BadRequest

JWT_SECRET = "feedback-test-secret-0123456789abcdef"


@pytest.fixture
async def proxy(settings: Settings) -> AsyncIterator[TestClient]:
    app = web.Application()
    feedback.add_routes(app, dataclasses.replace(settings, jwt_secret=JWT_SECRET))
    client = TestClient(TestServer(app))
    await client.start_server()
    yield client
    await client.close()


def _token(sub: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + jwt.encode({"sub": sub}, JWT_SECRET, algorithm="HS256")}


@pytest.mark.parametrize(("raw", "problem"), [
    (b"not json", "not valid JSON"),
    (b"[]", "JSON object"),
    (b'{"rating": 1}', "client_request_id is required"),
    (b'{"client_request_id": "c"}', "rating is required"),
    (b'{"client_request_id": "c", "rating": 0}', "rating must be 1 or -1"),
    (b'{"client_request_id": "c", "rating": true}', "rating must be 1 or -1"),
    (b'{"client_request_id": "c", "rating": "1"}', "rating must be 1 or -1"),
    (b'{"client_request_id": "", "rating": 1}', "client_request_id must be"),
    (b'{"client_request_id": "   ", "rating": 1}', "blank"),
    (b'{"client_request_id": 5, "rating": 1}', "must be a string"),
    (b'{"client_request_id": "c", "rating": 1, "comment": 3}', "comment must be a string"),
    (b'{"client_request_id": "c", "rating": 1, "stars": 5}', "unknown field"),
])
def test_invalid_feedback_is_refused_naming_the_problem(raw: bytes, problem: str) -> None:
    with pytest.raises(BadRequest, match=problem):
        feedback.parse_feedback(raw)


def test_long_fields_are_refused() -> None:
    with pytest.raises(BadRequest):
        feedback.parse_feedback(b'{"client_request_id": "%s", "rating": 1}' % (b"c" * 501))
    with pytest.raises(BadRequest):
        feedback.parse_feedback(
            b'{"client_request_id": "c", "rating": 1, "comment": "%s"}' % (b"x" * 4001))


async def test_feedback_is_stored_with_the_subject_and_the_latest_rating_wins(
    proxy: TestClient, db: asyncpg.Connection
) -> None:
    first = await proxy.post("/v1/feedback", json={"client_request_id": "c1", "rating": 1,
                                                   "comment": "good"}, headers=_token("u1"))
    assert first.status == 200, await first.text()
    second = await proxy.post("/v1/feedback", json={"client_request_id": "c1", "rating": -1},
                              headers=_token("u1"))
    assert second.status == 200
    other = await proxy.post("/v1/feedback", json={"client_request_id": "c1", "rating": 1},
                             headers={"x-machine-id": "m-7"})
    assert other.status == 200
    rows = await db.fetch("SELECT allocation_subject, subject_value, rating, comment "
                          "FROM feedback ORDER BY id")
    assert [tuple(r) for r in rows] == [("user", "u1", -1, None), ("machine", "m-7", 1, None)]


async def test_bad_input_is_400_in_the_openai_shape(proxy: TestClient) -> None:
    response = await proxy.post("/v1/feedback", data=b'{"rating": 2}')
    assert response.status == 400
    error = (await response.json())["error"]
    assert set(error) == {"message", "type", "code"} and error["type"] == "invalid_request_error"


async def test_an_invalid_jwt_is_401_and_never_echoed(proxy: TestClient) -> None:
    forged = jwt.encode({"sub": "u1"}, "another-secret-of-enough-length!!", algorithm="HS256")
    response = await proxy.post("/v1/feedback", json={"client_request_id": "c", "rating": 1},
                                headers={"Authorization": f"Bearer {forged}"})
    assert response.status == 401
    assert forged not in await response.text()


async def test_an_oversized_body_is_413(proxy: TestClient) -> None:
    response = await proxy.post("/v1/feedback", data=b"x" * (feedback.MAX_BODY_BYTES + 1))
    assert response.status == 413


async def test_the_body_blob_column_accepts_only_sha256_hex(db: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.CheckViolationError) as caught:
        await db.execute("INSERT INTO model_experiment_request (usage_id, created_at, "
                         "variant_version_id, allocation_subject, request_kind, "
                         "system_prompt_sha256, request_body_sha256, body_blob_sha256) "
                         "VALUES (gen_random_uuid(), now(), 1, 'user', 'responses', "
                         "'__absent__', '__failed__', 'ABC')")
    assert caught.value.constraint_name == "model_experiment_request_body_blob_sha256_check"
