"""Variants: draft-only structure, labels until completed, validation."""

from __future__ import annotations

from admin_api import Api


async def test_add_variant_returns_201_with_share(api: Api) -> None:
    experiment = await api.experiment()
    await api.variant(experiment["id"], "a", 1)
    reply = await api.post(f"/api/experiments/{experiment['id']}/variants",
                           {"label": "b", "weight": 3})
    assert reply.status == 201
    assert reply.body["label"] == "b" and reply.body["weight"] == 3
    assert reply.body["share"] == 0.75
    assert reply.body["current_version"] is None and reply.body["versions"] == []


async def test_add_variant_rejected_after_activation(api: Api) -> None:
    experiment = await api.active_experiment()
    reply = await api.post(f"/api/experiments/{experiment['id']}/variants",
                           {"label": "c", "weight": 1})
    assert reply.status == 400
    assert "draft" in reply.body["error"]["message"]


async def test_remove_variant_on_draft(api: Api) -> None:
    experiment = await api.ready_experiment()
    variant = experiment["variants"][0]
    assert (await api.delete(f"/api/variants/{variant['id']}")).status == 204
    detail = await api.detail(experiment["id"])
    assert [v["id"] for v in detail["variants"]] == [experiment["variants"][1]["id"]]


async def test_remove_variant_rejected_after_activation(api: Api) -> None:
    experiment = await api.active_experiment()
    reply = await api.delete(f"/api/variants/{experiment['variants'][0]['id']}")
    assert reply.status == 400


async def test_duplicate_label_is_409(api: Api) -> None:
    experiment = await api.experiment()
    await api.variant(experiment["id"], "a")
    reply = await api.post(f"/api/experiments/{experiment['id']}/variants",
                           {"label": "a", "weight": 2})
    assert reply.status == 409
    assert reply.body["error"]["code"] == "CONFLICT"


async def test_label_update_allowed_while_active_and_paused(api: Api) -> None:
    experiment = await api.active_experiment()
    variant_id = experiment["variants"][0]["id"]
    reply = await api.patch(f"/api/variants/{variant_id}", {"label": "renamed"})
    assert reply.status == 200 and reply.body["label"] == "renamed"
    await api.post(f"/api/experiments/{experiment['id']}/pause")
    reply = await api.patch(f"/api/variants/{variant_id}", {"label": "again"})
    assert reply.status == 200 and reply.body["label"] == "again"


async def test_label_update_rejected_when_completed(api: Api) -> None:
    experiment = await api.active_experiment()
    await api.post(f"/api/experiments/{experiment['id']}/complete")
    reply = await api.patch(f"/api/variants/{experiment['variants'][0]['id']}", {"label": "x"})
    assert reply.status == 400
    assert "completed" in reply.body["error"]["message"]


async def test_label_update_to_a_taken_label_is_409(api: Api) -> None:
    experiment = await api.ready_experiment()
    a, _ = experiment["variants"]
    reply = await api.patch(f"/api/variants/{a['id']}", {"label": "b"})
    assert reply.status == 409


async def test_unknown_and_malformed_variant_ids_are_404(api: Api) -> None:
    for path in ("/api/variants/999999", "/api/variants/abc", "/api/variants/-1",
                 "/api/variants/99999999999999999999999"):
        reply = await api.patch(path, {"label": "x"})
        assert reply.status == 404, path
        assert reply.body["error"]["code"] == "NOT_FOUND"


async def test_variant_input_limits(api: Api) -> None:
    experiment = await api.experiment()
    path = f"/api/experiments/{experiment['id']}/variants"
    bad_bodies = [
        {"label": "", "weight": 1},
        {"label": "x" * 65, "weight": 1},
        {"label": "a", "weight": 0},
        {"label": "a", "weight": 10_001},
        {"label": "a", "weight": True},
        {"label": "a", "weight": 1.5},
        {"label": "a", "weight": "1"},
        {"label": 5, "weight": 1},
        {"label": "a"},
        {"weight": 1},
        {"label": "a", "weight": 1, "extra": True},
        {"label": "a\u0000b", "weight": 1},
        ["label", "a"],
    ]
    for body in bad_bodies:
        reply = await api.post(path, body)
        assert reply.status == 400, body
        assert reply.body["error"]["code"] == "BAD_REQUEST"
    assert (await api.post(path, {"label": "x" * 64, "weight": 10_000})).status == 201
