"""Variant and variant-version endpoints: add/rename/remove variants, hot-swap, rotate-key.

Structural edits (add/remove a variant) are for drafts only; labels, hot-swaps and
key rotations are allowed until the experiment is completed. A version row is
immutable: a hot-swap or a rotation inserts a new one, and a new version is
routing-affecting, so it bumps the routing version and is published after commit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import asyncpg
from aiohttp import web

from admin import store
from admin.audit import record
from admin.context import actor, context, encrypt_api_key
from admin.errors import BadRequest, Conflict, NotFound
from admin.http import json_response, read_json
from admin.lifecycle import check_api_kind_kept, ensure_draft, ensure_not_completed
from admin.publish import prepare
from admin.validation import (
    parse_experiment_id,
    parse_rotate_key,
    parse_variant_create,
    parse_variant_id,
    parse_variant_patch,
    parse_version_create,
)

__all__ = ["register_routes"]

_LABEL_UNIQUE = "model_experiment_variant_label_unique"


def _label_conflict(label: str) -> Conflict:
    return Conflict(f"this experiment already has a variant labelled {label!r}")


async def _lock_variant(
    conn: asyncpg.Connection, variant_id: int
) -> tuple[asyncpg.Record, asyncpg.Record, list[asyncpg.Record]]:
    """Lock the variant's experiment, then read the variant: (experiment, variant, siblings)."""
    experiment_id = await store.variant_experiment_id(conn, variant_id)
    experiment = await store.lock_experiment(conn, experiment_id)
    variants = await store.variants_of(conn, experiment_id)
    variant = next((v for v in variants if v["id"] == variant_id), None)
    if variant is None:  # removed between the lookup and the lock
        raise NotFound("variant not found")
    return experiment, variant, variants


def _variant_json(variant: asyncpg.Record, variants: list[asyncpg.Record]) -> dict[str, Any]:
    return store.variant_json(variant, store.share_total(variants))


async def create_variant(request: web.Request) -> web.Response:
    experiment_id = parse_experiment_id(request.match_info["id"])
    body = parse_variant_create(await read_json(request))
    who = actor(request).name
    async with context(request).pool.acquire() as conn:
        try:
            async with conn.transaction():
                experiment = await store.lock_experiment(conn, experiment_id)
                ensure_draft(experiment["status"], "variants can be added")
                row = await store.insert_variant(conn, experiment_id, body.label, body.weight)
                created = _variant_json(row, await store.variants_of(conn, experiment_id))
                created["current_version"] = None
                created["versions"] = []
                await store.touch_experiment(conn, experiment_id)
                await record(conn, actor=who, action="variant.create",
                             experiment_id=experiment_id, variant_id=row["id"], after=created)
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name != _LABEL_UNIQUE:
                raise
            raise _label_conflict(body.label) from None
    return json_response(created, status=201)


async def patch_variant(request: web.Request) -> web.Response:
    variant_id = parse_variant_id(request.match_info["id"])
    label = parse_variant_patch(await read_json(request))
    who = actor(request).name
    async with context(request).pool.acquire() as conn:
        try:
            async with conn.transaction():
                experiment, variant, variants = await _lock_variant(conn, variant_id)
                ensure_not_completed(experiment["status"], "labels can be changed")
                before = _variant_json(variant, variants)
                if label == variant["label"]:
                    return json_response(before)
                updated = await store.update_variant_label(conn, variant_id, label)
                after = _variant_json(updated, variants)
                await store.touch_experiment(conn, experiment["id"])
                await record(conn, actor=who, action="variant.update",
                             experiment_id=experiment["id"], variant_id=variant_id,
                             before=before, after=after)
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name != _LABEL_UNIQUE:
                raise
            raise _label_conflict(label) from None
    return json_response(after)


async def delete_variant(request: web.Request) -> web.Response:
    variant_id = parse_variant_id(request.match_info["id"])
    who = actor(request).name
    async with context(request).pool.acquire() as conn, conn.transaction():
        experiment, variant, variants = await _lock_variant(conn, variant_id)
        ensure_draft(experiment["status"], "variants can be removed")
        before = _variant_json(variant, variants)
        await store.delete_variant(conn, variant_id)
        await store.touch_experiment(conn, experiment["id"])
        await record(conn, actor=who, action="variant.delete",
                     experiment_id=experiment["id"], variant_id=variant_id, before=before)
    return web.Response(status=204)


async def _effective_at(conn: asyncpg.Connection, requested: datetime | None) -> datetime:
    """When the new version takes effect: now, or a future instant for a scheduled swap."""
    now = await store.transaction_now(conn)
    if requested is None:
        return now
    if requested < now:
        raise BadRequest("effective_at must not be in the past; omit it to swap now")
    return requested


# Builds the new version row inside the locked transaction: (prior version, new row).
_Build = Callable[
    [asyncpg.Connection, asyncpg.Record, int, str],
    Awaitable[tuple[asyncpg.Record | None, asyncpg.Record]],
]


async def _insert_version(
    request: web.Request, variant_id: int, *, action: str, what: str, build: _Build
) -> web.Response:
    """Shared shape of hot-swap and rotate-key: lock, build the row, audit, bump, publish."""
    ctx = context(request)
    who = actor(request).name
    async with ctx.pool.acquire() as conn, conn.transaction():
        experiment, _, _ = await _lock_variant(conn, variant_id)
        ensure_not_completed(experiment["status"], what)
        prior, row = await build(conn, experiment, variant_id, who)
        created = store.version_json(row)
        await store.touch_experiment(conn, experiment["id"])
        await record(conn, actor=who, action=action, experiment_id=experiment["id"],
                     variant_id=variant_id, version_id=row["id"],
                     before=store.version_json(prior) if prior is not None else None,
                     after=created)
        invalidation = await prepare(conn, experiment["public_model_id"])
    await ctx.publisher.publish(invalidation)
    return json_response(created, status=201)


async def create_version(request: web.Request) -> web.Response:
    """Hot-swap: a new upstream, with a new key or the prior version's key."""
    variant_id = parse_variant_id(request.match_info["id"])
    ctx = context(request)
    body = parse_version_create(
        await read_json(request), allow_insecure=ctx.settings.allow_insecure_upstream
    )
    upstream = body.upstream.to_json()

    async def build(
        conn: asyncpg.Connection, experiment: asyncpg.Record, variant_id: int, who: str
    ) -> tuple[asyncpg.Record | None, asyncpg.Record]:
        live_kinds = await store.api_kinds_in_use(conn, experiment["id"])
        check_api_kind_kept(experiment["status"], live_kinds, body.upstream.api_kind)
        effective_at = await _effective_at(conn, body.effective_at)
        prior = await store.prior_version(conn, variant_id, effective_at)
        if body.api_key is not None:
            row = await store.insert_version(
                conn, variant_id=variant_id, upstream=upstream, effective_at=effective_at,
                actor=who, encrypted_api_key=encrypt_api_key(ctx, body.api_key),
            )
        elif prior is not None:
            row = await store.insert_version(
                conn, variant_id=variant_id, upstream=upstream, effective_at=effective_at,
                actor=who, key_from_version=prior["id"],
            )
        else:
            raise BadRequest("api_key is required: this variant has no prior version to keep")
        return prior, row

    return await _insert_version(request, variant_id, action="version.create",
                                 what="versions can be added", build=build)


async def rotate_key(request: web.Request) -> web.Response:
    """A new version with the prior upstream and a new key."""
    variant_id = parse_variant_id(request.match_info["id"])
    ctx = context(request)
    api_key, requested_at = parse_rotate_key(await read_json(request))

    async def build(
        conn: asyncpg.Connection, experiment: asyncpg.Record, variant_id: int, who: str
    ) -> tuple[asyncpg.Record | None, asyncpg.Record]:
        effective_at = await _effective_at(conn, requested_at)
        prior = await store.prior_version(conn, variant_id, effective_at)
        if prior is None:
            raise BadRequest(
                "this variant has no version yet; create one with POST /api/variants/{id}/versions"
            )
        row = await store.insert_version(
            conn, variant_id=variant_id, upstream=prior["upstream"], effective_at=effective_at,
            actor=who, encrypted_api_key=encrypt_api_key(ctx, api_key),
        )
        return prior, row

    return await _insert_version(request, variant_id, action="version.rotate_key",
                                 what="keys can be rotated", build=build)


def register_routes(app: web.Application) -> None:
    app.router.add_post("/api/experiments/{id}/variants", create_variant)
    app.router.add_patch("/api/variants/{id}", patch_variant)
    app.router.add_delete("/api/variants/{id}", delete_variant)
    app.router.add_post("/api/variants/{id}/versions", create_version)
    app.router.add_post("/api/variants/{id}/rotate-key", rotate_key)

