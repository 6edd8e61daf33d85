"""Lifecycle rules: transitions, idempotent repeats, activation guards, archive, races."""

from __future__ import annotations

import asyncio

import asyncpg
from admin_api import Api


def _path(experiment: dict, action: str) -> str:
    return f"/api/experiments/{experiment['id']}/{action}"


async def test_full_lifecycle_draft_active_paused_active_completed(api: Api) -> None:
    experiment = await api.ready_experiment()

    activated = await api.post(_path(experiment, "activate"))
    assert activated.status == 200 and activated.body["status"] == "active"
    started_at = activated.body["started_at"]
    assert started_at is not None

    paused = await api.post(_path(experiment, "pause"))
    assert paused.status == 200 and paused.body["status"] == "paused"

    resumed = await api.post(_path(experiment, "activate"))
    assert resumed.status == 200 and resumed.body["status"] == "active"
    assert resumed.body["started_at"] == started_at  # kept on resume

    completed = await api.post(_path(experiment, "complete"))
    assert completed.status == 200 and completed.body["status"] == "completed"
    assert completed.body["ended_at"] is not None
    assert completed.body["started_at"] == started_at


async def test_repeating_the_current_state_is_a_noop(api: Api) -> None:
    experiment = await api.active_experiment()
    before = await api.get(f"/api/experiments/{experiment['id']}")
    again = await api.post(_path(experiment, "activate"))
    assert again.status == 200
    assert again.body == {k: v for k, v in before.body.items() if k != "variants"}

    await api.post(_path(experiment, "pause"))
    paused = await api.get(f"/api/experiments/{experiment['id']}")
    assert (await api.post(_path(experiment, "pause"))).body["updated_at"] == \
        paused.body["updated_at"]

    await api.post(_path(experiment, "complete"))
    done = await api.get(f"/api/experiments/{experiment['id']}")
    repeat = await api.post(_path(experiment, "complete"))
    assert repeat.status == 200 and repeat.body["ended_at"] == done.body["ended_at"]


async def test_pause_only_from_active(api: Api) -> None:
    draft = await api.ready_experiment()
    reply = await api.post(_path(draft, "pause"))
    assert reply.status == 400
    assert reply.body["error"]["code"] == "BAD_REQUEST"


async def test_pause_rejected_on_completed(api: Api) -> None:
    experiment = await api.active_experiment()
    await api.post(_path(experiment, "complete"))
    assert (await api.post(_path(experiment, "pause"))).status == 400


async def test_completed_cannot_be_activated(api: Api) -> None:
    experiment = await api.active_experiment()
    await api.post(_path(experiment, "complete"))
    reply = await api.post(_path(experiment, "activate"))
    assert reply.status == 400
    assert "completed" in reply.body["error"]["message"]


async def test_draft_cannot_be_completed(api: Api) -> None:
    experiment = await api.ready_experiment()
    assert (await api.post(_path(experiment, "complete"))).status == 400


async def test_paused_can_be_completed(api: Api) -> None:
    experiment = await api.active_experiment()
    await api.post(_path(experiment, "pause"))
    reply = await api.post(_path(experiment, "complete"))
    assert reply.status == 200 and reply.body["status"] == "completed"


async def test_transition_on_unknown_experiment_is_404(api: Api) -> None:
    reply = await api.post("/api/experiments/00000000-0000-0000-0000-000000000000/activate")
    assert reply.status == 404


async def test_activation_needs_two_variants(api: Api) -> None:
    experiment = await api.experiment()
    variant = await api.variant(experiment["id"], "only")
    await api.version(variant["id"])
    reply = await api.post(_path(experiment, "activate"))
    assert reply.status == 400
    assert "at least 2 variants" in reply.body["error"]["message"]


async def test_activation_needs_a_version_for_every_variant(api: Api) -> None:
    experiment = await api.experiment()
    with_version = await api.variant(experiment["id"], "a")
    await api.version(with_version["id"])
    await api.variant(experiment["id"], "b")
    reply = await api.post(_path(experiment, "activate"))
    assert reply.status == 400
    assert "'b'" in reply.body["error"]["message"]


async def test_activation_ignores_versions_scheduled_in_the_future(api: Api) -> None:
    experiment = await api.experiment()
    a = await api.variant(experiment["id"], "a")
    await api.version(a["id"])
    b = await api.variant(experiment["id"], "b")
    reply = await api.post(f"/api/variants/{b['id']}/versions", {
        "upstream": {"internal_id": "x", "base_url": "http://127.0.0.1:9/v1",
                     "api_kind": "chat_completions"},
        "api_key": "sk-later", "effective_at": "2999-01-01T00:00:00Z"})
    assert reply.status == 201
    assert (await api.post(_path(experiment, "activate"))).status == 400


async def test_activation_needs_one_shared_api_kind(api: Api) -> None:
    experiment = await api.experiment()
    a = await api.variant(experiment["id"], "a")
    await api.version(a["id"], api_kind="chat_completions")
    b = await api.variant(experiment["id"], "b")
    await api.version(b["id"], api_kind="messages")
    reply = await api.post(_path(experiment, "activate"))
    assert reply.status == 400
    assert "api_kind" in reply.body["error"]["message"]


async def test_second_live_experiment_on_the_same_id_is_409(api: Api) -> None:
    await api.active_experiment("partner/preview-foo")
    second = await api.ready_experiment("partner/preview-foo")
    reply = await api.post(_path(second, "activate"))
    assert reply.status == 409
    assert reply.body["error"]["code"] == "CONFLICT"


async def test_a_paused_experiment_also_blocks_the_id(api: Api) -> None:
    first = await api.active_experiment("partner/preview-foo")
    await api.post(_path(first, "pause"))
    second = await api.ready_experiment("partner/preview-foo")
    assert (await api.post(_path(second, "activate"))).status == 409


async def test_a_completed_experiment_frees_the_id(api: Api) -> None:
    first = await api.active_experiment("partner/preview-foo")
    await api.post(_path(first, "complete"))
    second = await api.ready_experiment("partner/preview-foo")
    assert (await api.post(_path(second, "activate"))).status == 200


async def test_a_draft_coexists_with_an_active_experiment_on_the_same_id(api: Api) -> None:
    await api.active_experiment("partner/preview-foo")
    draft = await api.ready_experiment("partner/preview-foo")
    assert draft["status"] == "draft"
    listed = await api.get("/api/experiments")
    assert sorted(e["status"] for e in listed.body["experiments"]) == ["active", "draft"]


async def test_racing_activations_on_one_id_give_one_200_and_one_409(
    api: Api, db: asyncpg.Connection
) -> None:
    first = await api.ready_experiment("partner/preview-race")
    second = await api.ready_experiment("partner/preview-race")
    replies = await asyncio.gather(
        api.post(_path(first, "activate")), api.post(_path(second, "activate"))
    )
    assert sorted(r.status for r in replies) == [200, 409]
    loser = next(r for r in replies if r.status == 409)
    assert loser.body["error"]["code"] == "CONFLICT"
    assert "partner/preview-race" in loser.body["error"]["message"]
    assert await db.fetchval(
        "SELECT count(*) FROM model_experiment WHERE status = 'active'") == 1


async def test_racing_activations_when_the_precheck_is_bypassed_still_give_409(
    api: Api, db: asyncpg.Connection
) -> None:
    # Hold a live row in an open transaction so the API's pre-check cannot see it:
    # only the unique index can stop the activation.
    first = await api.ready_experiment("partner/preview-race")
    second = await api.ready_experiment("partner/preview-race")
    tx = db.transaction()
    await tx.start()
    await db.execute("UPDATE model_experiment SET status = 'active' WHERE id = $1",
                     first["id"])
    pending = asyncio.ensure_future(api.post(_path(second, "activate")))
    await _wait_for_lock_waiter(db)  # the API is now blocked on the index entry
    await tx.commit()
    reply = await asyncio.wait_for(pending, timeout=10)
    assert reply.status == 409
    assert reply.body["error"]["code"] == "CONFLICT"


async def _wait_for_lock_waiter(db: asyncpg.Connection) -> None:
    async with asyncio.timeout(10):
        while not await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ):
            await asyncio.sleep(0.02)


async def test_archive_rejected_while_active(api: Api) -> None:
    experiment = await api.active_experiment()
    reply = await api.post(_path(experiment, "archive"), {"archived": True})
    assert reply.status == 400
    assert reply.body["error"]["code"] == "BAD_REQUEST"


async def test_archive_allowed_on_draft_paused_and_completed(api: Api) -> None:
    draft = await api.experiment("p/draft")
    paused = await api.active_experiment("p/paused")
    await api.post(_path(paused, "pause"))
    completed = await api.active_experiment("p/completed")
    await api.post(_path(completed, "complete"))
    for experiment in (draft, paused, completed):
        reply = await api.post(_path(experiment, "archive"), {"archived": True})
        assert reply.status == 200, reply.text
        assert reply.body["is_archived"] is True


async def test_unarchive(api: Api) -> None:
    experiment = await api.experiment()
    await api.post(_path(experiment, "archive"), {"archived": True})
    reply = await api.post(_path(experiment, "archive"), {"archived": False})
    assert reply.status == 200 and reply.body["is_archived"] is False


async def test_archived_paused_experiment_cannot_resume_until_unarchived(api: Api) -> None:
    experiment = await api.active_experiment()
    await api.post(_path(experiment, "pause"))
    await api.post(_path(experiment, "archive"), {"archived": True})
    reply = await api.post(_path(experiment, "activate"))
    assert reply.status == 400
    assert "unarchive" in reply.body["error"]["message"]


async def test_archive_requires_a_boolean(api: Api) -> None:
    experiment = await api.experiment()
    for body in ({"archived": "yes"}, {}, {"archived": 1}, {"archived": True, "x": 1}):
        reply = await api.post(_path(experiment, "archive"), body)
        assert reply.status == 400, body
