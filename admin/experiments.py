"""Experiment endpoints: CRUD, lifecycle transitions and archiving.

Every mutation locks the experiment row first (SELECT ... FOR UPDATE) so that
concurrent changes to one experiment serialise; the partial unique index on live
public ids is the final authority on "one live experiment per public id".
"""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from abgate.routing_protocol import Invalidation
from admin import store
from admin.audit import record
from admin.context import actor, context
from admin.errors import Conflict
from admin.http import json_response, read_json
from admin.lifecycle import Action, check_activation, ensure_draft, plan_archive, plan_transition
from admin.publish import prepare
from admin.validation import (
    parse_archive,
    parse_archived_filter,
    parse_experiment_create,
    parse_experiment_id,
    parse_experiment_patch,
)

__all__ = ["register_routes"]

_LIVE_INDEX = "model_experiment_live_public_model_id"


def _live_conflict(public_model_id: str) -> Conflict:
    return Conflict(
        f"another experiment on {public_model_id!r} is already active or paused; "
        "complete it before activating this one"
    )


async def list_experiments(request: web.Request) -> web.Response:
    archived = parse_archived_filter(request.query.get("archived"))
    rows = await store.list_experiments(context(request).pool, archived)
    return json_response({"experiments": [store.experiment_json(r) for r in rows]})


async def create_experiment(request: web.Request) -> web.Response:
    body = parse_experiment_create(await read_json(request))
    who = actor(request).name
    async with context(request).pool.acquire() as conn, conn.transaction():
        row = await store.insert_experiment(
            conn, body.public_model_id, body.name, body.description, who
        )
        created = store.experiment_json(row)
        await record(conn, actor=who, action="experiment.create",
                     experiment_id=row["id"], after=created)
    return json_response(created, status=201)


async def get_experiment(request: web.Request) -> web.Response:
    experiment_id = parse_experiment_id(request.match_info["id"])
    detail = await store.experiment_detail(context(request).pool, experiment_id)
    return json_response(detail)


async def patch_experiment(request: web.Request) -> web.Response:
    experiment_id = parse_experiment_id(request.match_info["id"])
    changes = parse_experiment_patch(await read_json(request))
    who = actor(request).name
    async with context(request).pool.acquire() as conn, conn.transaction():
        row = await store.lock_experiment(conn, experiment_id)
        updates: dict[str, Any] = {}
        if changes.name is not None and changes.name != row["name"]:
            updates["name"] = changes.name
        if changes.description is not None and changes.description != row["description"]:
            updates["description"] = changes.description
        if (changes.public_model_id is not None
                and changes.public_model_id != row["public_model_id"]):
            ensure_draft(row["status"], "public_model_id can be changed")
            updates["public_model_id"] = changes.public_model_id
        if not updates:
            return json_response(store.experiment_json(row))
        updated = await store.update_experiment(conn, experiment_id, updates)
        after = store.experiment_json(updated)
        await record(conn, actor=who, action="experiment.update", experiment_id=experiment_id,
                     before=store.experiment_json(row), after=after)
    return json_response(after)


async def delete_experiment(request: web.Request) -> web.Response:
    experiment_id = parse_experiment_id(request.match_info["id"])
    who = actor(request).name
    async with context(request).pool.acquire() as conn, conn.transaction():
        row = await store.lock_experiment(conn, experiment_id)
        ensure_draft(row["status"], "an experiment can be deleted")
        before = await store.experiment_detail(conn, experiment_id)
        await store.delete_experiment(conn, experiment_id)
        await record(conn, actor=who, action="experiment.delete", experiment_id=experiment_id,
                     before=before)
    return web.Response(status=204)


async def _transition(request: web.Request, action: Action) -> web.Response:
    experiment_id = parse_experiment_id(request.match_info["id"])
    who = actor(request).name
    ctx = context(request)
    invalidation: Invalidation | None = None
    async with ctx.pool.acquire() as conn:
        try:
            async with conn.transaction():
                row = await store.lock_experiment(conn, experiment_id)
                plan = plan_transition(row["status"], action)
                if plan.noop:
                    return json_response(store.experiment_json(row))
                if action is Action.ACTIVATE:
                    await _check_can_activate(conn, row)
                updates: dict[str, Any] = {"status": plan.target}
                if plan.sets_started_at:
                    updates["started_at"] = await store.transaction_now(conn)
                if plan.sets_ended_at:
                    updates["ended_at"] = await store.transaction_now(conn)
                updated = await store.update_experiment(conn, experiment_id, updates)
                after = store.experiment_json(updated)
                await record(conn, actor=who, action=f"experiment.{action.value}",
                             experiment_id=experiment_id,
                             before=store.experiment_json(row), after=after)
                invalidation = await prepare(conn, row["public_model_id"])
        except asyncpg.UniqueViolationError as exc:
            # Two activations raced past the pre-check; the index decided.
            if exc.constraint_name != _LIVE_INDEX:
                raise
            raise _live_conflict(row["public_model_id"]) from None
    assert invalidation is not None
    await ctx.publisher.publish(invalidation)
    return json_response(after)


async def _check_can_activate(conn: asyncpg.Connection, row: asyncpg.Record) -> None:
    check_activation(await store.variant_currents(conn, row["id"]), row["is_archived"])
    other = await conn.fetchval(
        "SELECT id FROM model_experiment WHERE public_model_id = $1 "
        "AND status IN ('active', 'paused') AND id <> $2",
        row["public_model_id"], row["id"],
    )
    if other is not None:
        raise _live_conflict(row["public_model_id"])


async def activate(request: web.Request) -> web.Response:
    return await _transition(request, Action.ACTIVATE)


async def pause(request: web.Request) -> web.Response:
    return await _transition(request, Action.PAUSE)


async def complete(request: web.Request) -> web.Response:
    return await _transition(request, Action.COMPLETE)


async def archive(request: web.Request) -> web.Response:
    experiment_id = parse_experiment_id(request.match_info["id"])
    change = parse_archive(await read_json(request))
    who = actor(request).name
    async with context(request).pool.acquire() as conn, conn.transaction():
        row = await store.lock_experiment(conn, experiment_id)
        if not plan_archive(row["status"], row["is_archived"], change.archived):
            return json_response(store.experiment_json(row))
        updated = await store.update_experiment(
            conn, experiment_id, {"is_archived": change.archived}
        )
        after = store.experiment_json(updated)
        await record(conn, actor=who,
                     action="experiment.archive" if change.archived else "experiment.unarchive",
                     experiment_id=experiment_id, before=store.experiment_json(row), after=after)
    return json_response(after)


def register_routes(app: web.Application) -> None:
    app.router.add_get("/api/experiments", list_experiments)
    app.router.add_post("/api/experiments", create_experiment)
    app.router.add_get("/api/experiments/{id}", get_experiment)
    app.router.add_patch("/api/experiments/{id}", patch_experiment)
    app.router.add_delete("/api/experiments/{id}", delete_experiment)
    app.router.add_post("/api/experiments/{id}/activate", activate)
    app.router.add_post("/api/experiments/{id}/pause", pause)
    app.router.add_post("/api/experiments/{id}/complete", complete)
    app.router.add_post("/api/experiments/{id}/archive", archive)
