"""Versions: hot-swap, rotate-key, key encryption and secrecy, api kind rules."""

from __future__ import annotations

import dataclasses

import asyncpg
from admin_api import ADMIN_TOKEN, API_KEY, Api, start_api, upstream

from abgate.config import Settings
from abgate.crypto import KeyRing

VERSION_FIELDS = {"id", "variant_id", "upstream", "effective_at", "created_at",
                  "api_key_configured"}


async def _stored_ciphertexts(db: asyncpg.Connection) -> list[dict]:
    return [r[0] for r in await db.fetch(
        "SELECT encrypted_api_key FROM model_experiment_variant_version ORDER BY id")]


async def test_hot_swap_returns_201_with_the_version_shape(api: Api) -> None:
    experiment = await api.experiment()
    variant = await api.variant(experiment["id"], "a")
    reply = await api.post(f"/api/variants/{variant['id']}/versions",
                           {"upstream": upstream(), "api_key": API_KEY})
    assert reply.status == 201
    assert set(reply.body) == VERSION_FIELDS
    assert reply.body["variant_id"] == variant["id"]
    assert reply.body["api_key_configured"] is True
    assert reply.body["upstream"]["internal_id"] == "partner/ckpt-1"


async def test_hot_swap_encrypts_the_key_and_never_returns_it(
    api: Api, db: asyncpg.Connection, admin_settings: Settings
) -> None:
    experiment = await api.experiment()
    variant = await api.variant(experiment["id"], "a")
    reply = await api.post(f"/api/variants/{variant['id']}/versions",
                           {"upstream": upstream(), "api_key": API_KEY})
    [stored] = await _stored_ciphertexts(db)
    assert KeyRing(admin_settings.encryption_keys).decrypt(stored) == API_KEY
    assert stored["kid"] == admin_settings.encryption_keys[0].kid
    detail = await api.get(f"/api/experiments/{experiment['id']}")
    for text in (reply.text, detail.text):
        assert API_KEY not in text
        assert stored["data"] not in text and stored["authTag"] not in text
        assert "encrypted_api_key" not in text


async def test_hot_swap_inserts_a_new_row_and_keeps_the_old_ones(
    api: Api, db: asyncpg.Connection
) -> None:
    experiment = await api.ready_experiment()
    variant = experiment["variants"][0]
    old = variant["current_version"]
    new = await api.version(variant["id"], api_key=None, internal_id="partner/ckpt-2")
    detail = await api.detail(experiment["id"])
    swapped = detail["variants"][0]
    assert swapped["current_version"]["id"] == new["id"]
    assert [v["id"] for v in swapped["versions"]] == [new["id"], old["id"]]
    assert swapped["versions"][1]["upstream"]["internal_id"] == "partner/ckpt-1"
    assert await db.fetchval("SELECT count(*) FROM model_experiment_variant_version") == 3


async def test_hot_swap_without_api_key_keeps_the_prior_ciphertext(
    api: Api, db: asyncpg.Connection
) -> None:
    experiment = await api.experiment()
    variant = await api.variant(experiment["id"], "a")
    first = await api.version(variant["id"])
    second = await api.version(variant["id"], api_key=None, internal_id="partner/ckpt-2")
    rows = dict(await db.fetch(
        "SELECT id, encrypted_api_key FROM model_experiment_variant_version"))
    assert rows[second["id"]] == rows[first["id"]]


async def test_hot_swap_with_a_new_key_encrypts_it(
    api: Api, db: asyncpg.Connection, admin_settings: Settings
) -> None:
    experiment = await api.experiment()
    variant = await api.variant(experiment["id"], "a")
    await api.version(variant["id"])
    await api.version(variant["id"], api_key="sk-second")
    first, second = await _stored_ciphertexts(db)
    assert KeyRing(admin_settings.encryption_keys).decrypt(second) == "sk-second"
    assert first != second


async def test_first_version_requires_an_api_key(api: Api) -> None:
    experiment = await api.experiment()
    variant = await api.variant(experiment["id"], "a")
    reply = await api.post(f"/api/variants/{variant['id']}/versions", {"upstream": upstream()})
    assert reply.status == 400
    assert "api_key is required" in reply.body["error"]["message"]


async def test_hot_swap_allowed_on_active_and_paused(api: Api) -> None:
    experiment = await api.active_experiment()
    variant_id = experiment["variants"][0]["id"]
    assert (await api.post(f"/api/variants/{variant_id}/versions",
                           {"upstream": upstream(internal_id="v2")})).status == 201
    await api.post(f"/api/experiments/{experiment['id']}/pause")
    assert (await api.post(f"/api/variants/{variant_id}/versions",
                           {"upstream": upstream(internal_id="v3")})).status == 201


async def test_hot_swap_rejected_on_completed(api: Api) -> None:
    experiment = await api.active_experiment()
    await api.post(f"/api/experiments/{experiment['id']}/complete")
    reply = await api.post(f"/api/variants/{experiment['variants'][0]['id']}/versions",
                           {"upstream": upstream(internal_id="v2")})
    assert reply.status == 400
    assert "completed" in reply.body["error"]["message"]


async def test_hot_swap_on_a_live_experiment_must_keep_the_api_kind(api: Api) -> None:
    experiment = await api.active_experiment()
    variant_id = experiment["variants"][0]["id"]
    reply = await api.post(f"/api/variants/{variant_id}/versions",
                           {"upstream": upstream(api_kind="messages")})
    assert reply.status == 400
    assert "api_kind" in reply.body["error"]["message"]
    await api.post(f"/api/experiments/{experiment['id']}/pause")
    reply = await api.post(f"/api/variants/{variant_id}/versions",
                           {"upstream": upstream(api_kind="responses")})
    assert reply.status == 400


async def test_hot_swap_on_a_draft_may_change_the_api_kind(api: Api) -> None:
    experiment = await api.ready_experiment()
    variant_id = experiment["variants"][0]["id"]
    reply = await api.post(f"/api/variants/{variant_id}/versions",
                           {"upstream": upstream(api_kind="messages")})
    assert reply.status == 201


async def test_strict_upstream_rejects_unknown_fields(api: Api) -> None:
    experiment = await api.experiment()
    variant = await api.variant(experiment["id"], "a")
    for extra in ({"api_key": "sk-inline"}, {"extra_headers": {"x": "y"}}):
        reply = await api.post(f"/api/variants/{variant['id']}/versions",
                               {"upstream": {**upstream(), **extra}, "api_key": API_KEY})
        assert reply.status == 400
        assert reply.body["error"]["code"] == "BAD_REQUEST"
        assert "sk-inline" not in reply.text


async def test_invalid_upstream_is_400_naming_the_field(api: Api) -> None:
    experiment = await api.experiment()
    variant = await api.variant(experiment["id"], "a")
    reply = await api.post(f"/api/variants/{variant['id']}/versions",
                           {"upstream": upstream(api_kind="completions"), "api_key": API_KEY})
    assert reply.status == 400
    assert "upstream.api_kind" in reply.body["error"]["message"]


async def test_version_body_limits(api: Api) -> None:
    experiment = await api.experiment()
    variant = await api.variant(experiment["id"], "a")
    path = f"/api/variants/{variant['id']}/versions"
    for body in (
        {"upstream": upstream(), "api_key": ""},
        {"upstream": upstream(), "api_key": "k" * 4097},
        {"upstream": upstream(), "api_key": 123},
        {"upstream": upstream(), "api_key": API_KEY, "effective_at": "tomorrow"},
        {"upstream": upstream(), "api_key": API_KEY, "effective_at": "2999-01-01T00:00:00"},
        {"upstream": upstream(), "api_key": API_KEY, "effective_at": "2000-01-01T00:00:00Z"},
        {"upstream": upstream(), "api_key": API_KEY, "other": 1},
        {"api_key": API_KEY},
    ):
        reply = await api.post(path, body)
        assert reply.status == 400, body
        assert API_KEY not in reply.text
    assert (await api.post(path, {"upstream": upstream(), "api_key": "k" * 4096})).status == 201


async def test_scheduled_version_becomes_current_only_at_effective_at(api: Api) -> None:
    experiment = await api.experiment()
    variant = await api.variant(experiment["id"], "a")
    now_version = await api.version(variant["id"])
    reply = await api.post(f"/api/variants/{variant['id']}/versions", {
        "upstream": upstream(internal_id="later"), "effective_at": "2999-01-01T00:00:00Z"})
    assert reply.status == 201
    detail = await api.detail(experiment["id"])
    [variant_json] = detail["variants"]
    assert variant_json["current_version"]["id"] == now_version["id"]
    assert variant_json["versions"][0]["id"] == reply.body["id"]


async def test_rotate_key_copies_the_prior_upstream(
    api: Api, db: asyncpg.Connection, admin_settings: Settings
) -> None:
    experiment = await api.experiment()
    variant = await api.variant(experiment["id"], "a")
    prior = await api.version(variant["id"], internal_id="partner/ckpt-9",
                              extra_body={"temperature": 0.5})
    reply = await api.post(f"/api/variants/{variant['id']}/rotate-key", {"api_key": "sk-rotated"})
    assert reply.status == 201
    assert reply.body["upstream"] == prior["upstream"]
    assert reply.body["id"] != prior["id"]
    _, stored = await _stored_ciphertexts(db)
    assert KeyRing(admin_settings.encryption_keys).decrypt(stored) == "sk-rotated"
    assert "sk-rotated" not in reply.text


async def test_rotate_key_without_a_prior_version_is_400(api: Api) -> None:
    experiment = await api.experiment()
    variant = await api.variant(experiment["id"], "a")
    reply = await api.post(f"/api/variants/{variant['id']}/rotate-key", {"api_key": "sk-x"})
    assert reply.status == 400
    assert reply.body["error"]["code"] == "BAD_REQUEST"


async def test_rotate_key_rejected_on_completed(api: Api) -> None:
    experiment = await api.active_experiment()
    await api.post(f"/api/experiments/{experiment['id']}/complete")
    reply = await api.post(f"/api/variants/{experiment['variants'][0]['id']}/rotate-key",
                           {"api_key": "sk-x"})
    assert reply.status == 400


async def test_rotate_key_requires_api_key(api: Api) -> None:
    experiment = await api.ready_experiment()
    path = f"/api/variants/{experiment['variants'][0]['id']}/rotate-key"
    for body in ({}, {"api_key": ""}, {"api_key": None}, {"api_key": "k", "upstream": {}}):
        assert (await api.post(path, body)).status == 400, body


async def test_get_never_returns_encrypted_api_key_on_any_version(
    api: Api, db: asyncpg.Connection
) -> None:
    experiment = await api.active_experiment()
    for variant in experiment["variants"]:
        await api.version(variant["id"], api_key=None, internal_id="swap")
        await api.post(f"/api/variants/{variant['id']}/rotate-key", {"api_key": "sk-new"})
    detail = await api.get(f"/api/experiments/{experiment['id']}")
    listing = await api.get("/api/experiments?archived=all")
    versions = [v for variant in detail.body["variants"] for v in variant["versions"]]
    assert len(versions) == 6
    for version in versions:
        assert set(version) == VERSION_FIELDS
    ciphertexts = await _stored_ciphertexts(db)
    for text in (detail.text, listing.text):
        assert "encrypted_api_key" not in text
        assert API_KEY not in text and "sk-new" not in text
        for blob in ciphertexts:
            assert blob["data"] not in text and blob["iv"] not in text


async def test_without_encryption_keys_key_operations_are_500_and_the_rest_works(
    admin_settings: Settings,
) -> None:
    settings = dataclasses.replace(admin_settings, encryption_keys=[])
    client = await start_api(settings)
    try:
        api = Api(client, ADMIN_TOKEN)
        experiment = await api.experiment()
        variant = await api.variant(experiment["id"], "a")
        reply = await api.post(f"/api/variants/{variant['id']}/versions",
                               {"upstream": upstream(), "api_key": API_KEY})
        assert reply.status == 500
        assert reply.body == {"error": {
            "code": "INTERNAL_SERVER_ERROR",
            "message": "encryption keys are not configured (ABGATE_ENCRYPTION_KEYS)"}}
        reply = await api.post(f"/api/variants/{variant['id']}/rotate-key", {"api_key": "k"})
        assert reply.status == 400  # no prior version: refused before any encryption
        assert (await api.patch(f"/api/variants/{variant['id']}", {"label": "b"})).status == 200
        assert (await api.get(f"/api/experiments/{experiment['id']}")).status == 200
    finally:
        await client.close()


async def test_without_encryption_keys_a_hot_swap_keeping_the_key_works(
    api: Api, admin_settings: Settings
) -> None:
    experiment = await api.ready_experiment()
    settings = dataclasses.replace(admin_settings, encryption_keys=[])
    client = await start_api(settings)
    try:
        keyless = Api(client, ADMIN_TOKEN)
        variant_id = experiment["variants"][0]["id"]
        swap = await keyless.post(f"/api/variants/{variant_id}/versions",
                                  {"upstream": upstream(internal_id="v2")})
        assert swap.status == 201
        rotate = await keyless.post(f"/api/variants/{variant_id}/rotate-key", {"api_key": "k"})
        assert rotate.status == 500
        assert "ABGATE_ENCRYPTION_KEYS" in rotate.body["error"]["message"]
    finally:
        await client.close()

