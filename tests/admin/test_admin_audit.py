"""Audit log: one row per mutation, in its transaction, never with key material."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from admin_api import API_KEY, Api, upstream

from admin.audit import record


async def _actions(db: asyncpg.Connection) -> list[str]:
    return [r[0] for r in await db.fetch("SELECT action FROM audit_log ORDER BY id")]


async def test_every_mutation_leaves_one_audit_row(api: Api, db: asyncpg.Connection) -> None:
    experiment = await api.experiment()
    eid = experiment["id"]
    a = await api.variant(eid, "a")
    b = await api.variant(eid, "b")
    extra = await api.variant(eid, "extra")
    steps = [
        ("PATCH", f"/api/experiments/{eid}", {"name": "renamed"}, "experiment.update"),
        ("DELETE", f"/api/variants/{extra['id']}", None, "variant.delete"),
        ("POST", f"/api/variants/{a['id']}/versions",
         {"upstream": upstream(), "api_key": API_KEY}, "version.create"),
        ("POST", f"/api/variants/{b['id']}/versions",
         {"upstream": upstream(), "api_key": API_KEY}, "version.create"),
        ("POST", f"/api/variants/{a['id']}/rotate-key", {"api_key": "sk-2"},
         "version.rotate_key"),
        ("PATCH", f"/api/variants/{a['id']}", {"label": "a2"}, "variant.update"),
        ("POST", f"/api/experiments/{eid}/activate", None, "experiment.activate"),
        ("POST", f"/api/experiments/{eid}/pause", None, "experiment.pause"),
        ("POST", f"/api/experiments/{eid}/archive", {"archived": True}, "experiment.archive"),
        ("POST", f"/api/experiments/{eid}/archive", {"archived": False},
         "experiment.unarchive"),
        ("POST", f"/api/experiments/{eid}/complete", None, "experiment.complete"),
    ]
    expected = ["experiment.create", "variant.create", "variant.create", "variant.create"]
    assert await _actions(db) == expected
    for method, path, body, action in steps:
        reply = await api.call(method, path, body)
        assert reply.status < 300, reply.text
        expected.append(action)
        assert await _actions(db) == expected

    draft = await api.experiment("p/to-delete")
    await api.delete(f"/api/experiments/{draft['id']}")
    assert (await _actions(db))[-2:] == ["experiment.create", "experiment.delete"]


async def test_audit_rows_name_actor_ids_and_before_after(
    api: Api, db: asyncpg.Connection
) -> None:
    experiment = await api.ready_experiment()
    variant_id = experiment["variants"][0]["id"]
    version = await api.version(variant_id, api_key=None, internal_id="v2")
    row = await db.fetchrow("SELECT * FROM audit_log ORDER BY id DESC LIMIT 1")
    assert row["actor"] == "bootstrap"
    assert row["action"] == "version.create"
    assert str(row["experiment_id"]) == experiment["id"]
    assert (row["variant_id"], row["version_id"]) == (variant_id, version["id"])
    assert row["before"]["upstream"]["internal_id"] == "partner/ckpt-1"
    assert row["after"]["upstream"]["internal_id"] == "v2"

    await api.patch(f"/api/experiments/{experiment['id']}", {"name": "New name"})
    row = await db.fetchrow("SELECT before, after FROM audit_log ORDER BY id DESC LIMIT 1")
    assert (row["before"]["name"], row["after"]["name"]) == ("Foo test", "New name")


async def test_no_key_material_anywhere_in_the_audit_log(
    api: Api, db: asyncpg.Connection
) -> None:
    experiment = await api.active_experiment()
    for variant in experiment["variants"]:
        await api.post(f"/api/variants/{variant['id']}/rotate-key", {"api_key": "sk-rotated-1"})
    everything = await db.fetchval("SELECT string_agg(audit_log::text, '\n') FROM audit_log")
    blobs = [r[0] for r in await db.fetch(
        "SELECT encrypted_api_key FROM model_experiment_variant_version")]
    assert API_KEY not in everything and "sk-rotated-1" not in everything
    assert "encrypted_api_key" not in everything and "api_key\"" not in everything
    for blob in blobs:
        for part in ("iv", "data", "authTag"):
            assert blob[part] not in everything


async def test_failed_mutations_leave_no_audit_row(api: Api, db: asyncpg.Connection) -> None:
    experiment = await api.experiment()
    count = await db.fetchval("SELECT count(*) FROM audit_log")
    assert (await api.post(f"/api/experiments/{experiment['id']}/activate")).status == 400
    assert (await api.post(f"/api/experiments/{experiment['id']}/variants",
                           {"label": "", "weight": 1})).status == 400
    assert await db.fetchval("SELECT count(*) FROM audit_log") == count


async def test_noops_leave_no_audit_row(api: Api, db: asyncpg.Connection) -> None:
    experiment = await api.active_experiment()
    count = await db.fetchval("SELECT count(*) FROM audit_log")
    await api.post(f"/api/experiments/{experiment['id']}/activate")
    await api.patch(f"/api/experiments/{experiment['id']}", {})
    assert await db.fetchval("SELECT count(*) FROM audit_log") == count


async def test_audit_refuses_key_fields(db: asyncpg.Connection) -> None:
    with pytest.raises(ValueError, match="api_key"):
        await record(db, actor="x", action="y", after={"nested": {"api_key": "sk"}})
    with pytest.raises(ValueError, match="encrypted_api_key"):
        await record(db, actor="x", action="y", before={"list": [{"encrypted_api_key": {}}]})
    assert await db.fetchval("SELECT count(*) FROM audit_log") == 0


async def test_get_audit_is_newest_first_and_paginates(api: Api) -> None:
    for i in range(5):
        await api.experiment(f"p/{i}")
    first = await api.get("/api/audit?limit=2")
    assert first.status == 200
    assert [e["after"]["public_model_id"] for e in first.body["entries"]] == ["p/4", "p/3"]
    second = await api.get(f"/api/audit?limit=2&cursor={first.body['next_cursor']}")
    third = await api.get(f"/api/audit?limit=2&cursor={second.body['next_cursor']}")
    assert [e["after"]["public_model_id"] for e in second.body["entries"]] == ["p/2", "p/1"]
    assert [e["after"]["public_model_id"] for e in third.body["entries"]] == ["p/0"]
    assert third.body["next_cursor"] is None


async def test_get_audit_defaults_to_50(api: Api, db: asyncpg.Connection) -> None:
    await db.execute("INSERT INTO audit_log (actor, action) "
                     "SELECT 'x', 'test.bulk' FROM generate_series(1, 60)")
    reply = await api.get("/api/audit")
    assert len(reply.body["entries"]) == 50 and reply.body["next_cursor"] is not None


async def test_get_audit_filters_by_experiment(api: Api) -> None:
    one = await api.experiment("p/one")
    await api.experiment("p/two")
    await api.variant(one["id"], "a")
    reply = await api.get(f"/api/audit?experiment_id={one['id']}")
    assert [e["action"] for e in reply.body["entries"]] == ["variant.create",
                                                            "experiment.create"]
    assert {e["experiment_id"] for e in reply.body["entries"]} == {one["id"]}
    empty = await api.get(f"/api/audit?experiment_id={uuid.uuid4()}")
    assert empty.body == {"entries": [], "next_cursor": None}


@pytest.mark.parametrize("query", [
    "limit=0", "limit=201", "limit=abc", "limit=-1", "experiment_id=nope", "cursor=abc",
    "cursor=-5", "cursor=99999999999999999999",
])
async def test_get_audit_rejects_bad_query_values(api: Api, query: str) -> None:
    reply = await api.get(f"/api/audit?{query}")
    assert reply.status == 400
    assert reply.body["error"]["code"] == "BAD_REQUEST"
