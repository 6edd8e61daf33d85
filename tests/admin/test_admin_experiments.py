"""Experiment CRUD: create, read, list with the archive filter, patch, delete."""

from __future__ import annotations

import uuid

import asyncpg
from admin_api import Api

EXPERIMENT_FIELDS = {"id", "public_model_id", "name", "description", "status", "is_archived",
                     "created_at", "updated_at", "started_at", "ended_at"}


async def test_create_returns_201_with_a_draft(api: Api) -> None:
    reply = await api.post("/api/experiments", {"public_model_id": "partner/preview-foo",
                                                "name": "Foo", "description": "first"})
    assert reply.status == 201
    assert set(reply.body) == EXPERIMENT_FIELDS
    assert reply.body["status"] == "draft"
    assert reply.body["is_archived"] is False
    assert reply.body["description"] == "first"
    assert reply.body["started_at"] is None and reply.body["ended_at"] is None


async def test_description_defaults_to_empty(api: Api) -> None:
    experiment = await api.experiment()
    assert experiment["description"] == ""


async def test_get_returns_the_experiment_with_its_variants(api: Api) -> None:
    experiment = await api.experiment()
    await api.variant(experiment["id"], "a", 1)
    await api.variant(experiment["id"], "b", 3)
    detail = await api.detail(experiment["id"])
    assert set(detail) == EXPERIMENT_FIELDS | {"variants"}
    assert [v["label"] for v in detail["variants"]] == ["a", "b"]
    assert [v["share"] for v in detail["variants"]] == [0.25, 0.75]
    assert all(v["current_version"] is None and v["versions"] == [] for v in detail["variants"])


async def test_get_unknown_experiment_is_404(api: Api) -> None:
    reply = await api.get(f"/api/experiments/{uuid.uuid4()}")
    assert reply.status == 404
    assert reply.body["error"]["code"] == "NOT_FOUND"


async def test_get_malformed_experiment_id_is_404(api: Api) -> None:
    reply = await api.get("/api/experiments/not-a-uuid")
    assert reply.status == 404
    assert reply.body["error"]["code"] == "NOT_FOUND"


async def test_list_hides_archived_by_default(api: Api) -> None:
    kept = await api.experiment("p/kept")
    archived = await api.experiment("p/archived")
    assert (await api.post(f"/api/experiments/{archived['id']}/archive",
                           {"archived": True})).status == 200

    default = await api.get("/api/experiments")
    only_archived = await api.get("/api/experiments?archived=true")
    explicit = await api.get("/api/experiments?archived=false")
    everything = await api.get("/api/experiments?archived=all")

    assert [e["id"] for e in default.body["experiments"]] == [kept["id"]]
    assert [e["id"] for e in explicit.body["experiments"]] == [kept["id"]]
    assert [e["id"] for e in only_archived.body["experiments"]] == [archived["id"]]
    assert {e["id"] for e in everything.body["experiments"]} == {kept["id"], archived["id"]}


async def test_list_is_newest_first(api: Api) -> None:
    first = await api.experiment("p/one")
    second = await api.experiment("p/two")
    reply = await api.get("/api/experiments")
    assert [e["id"] for e in reply.body["experiments"]] == [second["id"], first["id"]]


async def test_list_rejects_an_unknown_archived_filter(api: Api) -> None:
    reply = await api.get("/api/experiments?archived=maybe")
    assert reply.status == 400
    assert reply.body["error"]["code"] == "BAD_REQUEST"


async def test_patch_changes_name_and_description(api: Api) -> None:
    experiment = await api.experiment()
    reply = await api.patch(f"/api/experiments/{experiment['id']}",
                            {"name": "Renamed", "description": "new"})
    assert reply.status == 200
    assert (reply.body["name"], reply.body["description"]) == ("Renamed", "new")
    assert reply.body["updated_at"] >= experiment["updated_at"]


async def test_patch_public_model_id_on_a_draft(api: Api) -> None:
    experiment = await api.experiment()
    reply = await api.patch(f"/api/experiments/{experiment['id']}",
                            {"public_model_id": "partner/preview-bar"})
    assert reply.status == 200
    assert reply.body["public_model_id"] == "partner/preview-bar"


async def test_patch_public_model_id_rejected_after_activation(api: Api) -> None:
    experiment = await api.active_experiment()
    reply = await api.patch(f"/api/experiments/{experiment['id']}",
                            {"public_model_id": "partner/other"})
    assert reply.status == 400
    assert "draft" in reply.body["error"]["message"]


async def test_patch_name_allowed_on_an_active_experiment(api: Api) -> None:
    experiment = await api.active_experiment()
    reply = await api.patch(f"/api/experiments/{experiment['id']}", {"name": "Still running"})
    assert reply.status == 200
    assert reply.body["name"] == "Still running"


async def test_patch_with_no_changes_returns_the_experiment_unchanged(api: Api) -> None:
    experiment = await api.experiment()
    reply = await api.patch(f"/api/experiments/{experiment['id']}", {})
    assert reply.status == 200
    assert reply.body == experiment


async def test_delete_draft_returns_204_and_cascades(api: Api, db: asyncpg.Connection) -> None:
    experiment = await api.ready_experiment()
    reply = await api.delete(f"/api/experiments/{experiment['id']}")
    assert reply.status == 204
    assert (await api.get(f"/api/experiments/{experiment['id']}")).status == 404
    assert await db.fetchval("SELECT count(*) FROM model_experiment_variant") == 0
    assert await db.fetchval("SELECT count(*) FROM model_experiment_variant_version") == 0


async def test_delete_rejected_unless_draft(api: Api) -> None:
    experiment = await api.active_experiment()
    reply = await api.delete(f"/api/experiments/{experiment['id']}")
    assert reply.status == 400
    assert (await api.get(f"/api/experiments/{experiment['id']}")).status == 200


async def test_delete_unknown_experiment_is_404(api: Api) -> None:
    assert (await api.delete(f"/api/experiments/{uuid.uuid4()}")).status == 404
