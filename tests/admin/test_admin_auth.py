"""Authentication and roles: bootstrap admin, stored tokens, viewer, anonymous."""

from __future__ import annotations

import hashlib

import asyncpg
import pytest
from admin_api import Api

from admin.auth import Authenticator, bearer_token, generate_token, hash_token

MUTATIONS = [
    ("POST", "/api/experiments", {"public_model_id": "p/x", "name": "x"}),
    ("PATCH", "/api/experiments/{id}", {"name": "y"}),
    ("DELETE", "/api/experiments/{id}", None),
    ("POST", "/api/experiments/{id}/activate", None),
    ("POST", "/api/experiments/{id}/pause", None),
    ("POST", "/api/experiments/{id}/complete", None),
    ("POST", "/api/experiments/{id}/archive", {"archived": True}),
    ("POST", "/api/experiments/{id}/variants", {"label": "z", "weight": 1}),
    ("PATCH", "/api/variants/{vid}", {"label": "q"}),
    ("DELETE", "/api/variants/{vid}", None),
    ("POST", "/api/variants/{vid}/versions", {"upstream": {}}),
    ("POST", "/api/variants/{vid}/rotate-key", {"api_key": "sk"}),
]


async def test_viewer_gets_403_on_every_mutation(
    api: Api, viewer: Api, db: asyncpg.Connection
) -> None:
    experiment = await api.ready_experiment()
    audit_rows = await db.fetchval("SELECT count(*) FROM audit_log")
    for method, template, body in MUTATIONS:
        path = template.format(id=experiment["id"], vid=experiment["variants"][0]["id"])
        reply = await viewer.call(method, path, body)
        assert reply.status == 403, (method, template)
        assert reply.body["error"]["code"] == "FORBIDDEN"
    assert await api.detail(experiment["id"]) == experiment  # nothing changed
    assert await db.fetchval("SELECT count(*) FROM audit_log") == audit_rows


async def test_anonymous_gets_401_on_every_mutation(
    api: Api, anonymous: Api, db: asyncpg.Connection
) -> None:
    experiment = await api.ready_experiment()
    audit_rows = await db.fetchval("SELECT count(*) FROM audit_log")
    for method, template, body in MUTATIONS:
        path = template.format(id=experiment["id"], vid=experiment["variants"][0]["id"])
        reply = await anonymous.call(method, path, body)
        assert reply.status == 401, (method, template)
        assert reply.body["error"]["code"] == "UNAUTHORIZED"
        assert reply.headers["WWW-Authenticate"] == "Bearer"
    assert await api.detail(experiment["id"]) == experiment
    assert await db.fetchval("SELECT count(*) FROM audit_log") == audit_rows


async def test_viewer_can_read(api: Api, viewer: Api) -> None:
    experiment = await api.experiment()
    assert (await viewer.get("/api/experiments")).status == 200
    assert (await viewer.get(f"/api/experiments/{experiment['id']}")).status == 200
    assert (await viewer.get("/api/audit")).status == 200


@pytest.mark.parametrize("path", ["/api/experiments", "/api/audit", "/api/nothing-here"])
async def test_anonymous_reads_are_401(anonymous: Api, path: str) -> None:
    reply = await anonymous.get(path)
    assert reply.status == 401
    assert reply.body["error"]["code"] == "UNAUTHORIZED"


@pytest.mark.parametrize("header", [
    "Bearer wrong-token", "Basic dXNlcjpwYXNz", "Bearer", "bearer ", "Token abc",
    "Bearer " + "x" * 5000,
])
async def test_bad_authorization_headers_are_401(api: Api, header: str) -> None:
    reply = await api.as_(None).get("/api/experiments", headers={"Authorization": header})
    assert reply.status == 401
    assert reply.body["error"]["code"] == "UNAUTHORIZED"


async def test_stored_admin_token_can_mutate_and_is_the_audit_actor(
    api: Api, db: asyncpg.Connection
) -> None:
    token = generate_token()
    await db.execute(
        "INSERT INTO admin_token (name, role, token_sha256) VALUES ('ci-bot', 'admin', $1)",
        hash_token(token))
    reply = await api.as_(token).post("/api/experiments", {"public_model_id": "p/x",
                                                           "name": "x"})
    assert reply.status == 201
    assert await db.fetchval("SELECT actor FROM audit_log") == "ci-bot"


async def test_bootstrap_token_is_the_bootstrap_actor(api: Api, db: asyncpg.Connection) -> None:
    await api.experiment()
    assert await db.fetchval("SELECT actor FROM audit_log") == "bootstrap"


async def test_revoked_token_is_401(api: Api, db: asyncpg.Connection) -> None:
    token = generate_token()
    await db.execute(
        "INSERT INTO admin_token (name, role, token_sha256, revoked_at) "
        "VALUES ('old', 'admin', $1, now())", hash_token(token))
    assert (await api.as_(token).get("/api/experiments")).status == 401


async def test_token_lookup_records_last_use(api: Api, viewer: Api,
                                             db: asyncpg.Connection) -> None:
    await viewer.get("/api/experiments")
    assert await db.fetchval(
        "SELECT last_used_at IS NOT NULL FROM admin_token WHERE name = 'viewer-1'")


async def test_lookups_are_cached(database_url: str) -> None:
    from abgate.db import create_pool

    pool = await create_pool(database_url)
    try:
        token = generate_token()
        await pool.execute(
            "INSERT INTO admin_token (name, role, token_sha256) VALUES ('c', 'viewer', $1)",
            hash_token(token))
        auth = Authenticator(pool, None)
        first = await auth.authenticate(token)
        await pool.execute("DELETE FROM admin_token")
        assert await auth.authenticate(token) == first  # served from the cache
        assert await Authenticator(pool, None).authenticate(token) is None
    finally:
        await pool.close()


async def test_public_endpoints_need_no_token(anonymous: Api) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert (await anonymous.get(path)).status == 200, path


def test_tokens_are_stored_as_sha256_hex() -> None:
    token = generate_token()
    assert token.startswith("abg_") and len(token) > 40
    assert hash_token(token) == hashlib.sha256(token.encode()).hexdigest()
    assert generate_token() != token


@pytest.mark.parametrize(("header", "expected"), [
    ("Bearer abc", "abc"), ("bearer abc", "abc"), ("BEARER  abc ", "abc"),
    (None, None), ("", None), ("Bearer", None), ("Basic abc", None),
])
def test_bearer_token_parsing(header: str | None, expected: str | None) -> None:
    assert bearer_token(header) == expected


async def test_authenticator_repr_shows_no_token(database_url: str) -> None:
    from abgate.db import create_pool

    pool = await create_pool(database_url)
    try:
        auth = Authenticator(pool, "bootstrap-secret-value")
        assert await auth.authenticate("bootstrap-secret-value") is not None
        assert "bootstrap-secret-value" not in repr(auth)
    finally:
        await pool.close()
