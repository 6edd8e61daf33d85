"""Seeding the benchmark's experiments: through the admin API, or SQL as the fallback."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp import web

from abgate.config import Settings
from abgate.crypto import KeyRing
from admin.app import create_app
from bench.seed import BENCH_API_KEY, ExperimentSpec, seed_via_admin, seed_via_sql

TOKEN = "abg_bench_test_token_0123456789"
SPECS = [ExperimentSpec("bench/preview-one", "http://127.0.0.1:9/v1"),
         ExperimentSpec("bench/preview-two", "http://127.0.0.1:10/v1", weights=(1, 1))]

VARIANTS_SQL = """
SELECT e.public_model_id, e.status, v.label, v.weight, vv.upstream, vv.encrypted_api_key
FROM model_experiment e
JOIN model_experiment_variant v ON v.experiment_id = e.id
JOIN model_experiment_variant_version vv ON vv.variant_id = v.id
ORDER BY e.public_model_id, v.label
"""


@pytest.fixture
async def admin_url(settings: Settings) -> AsyncIterator[str]:
    runner = web.AppRunner(create_app(dataclasses.replace(settings, admin_token=TOKEN)))
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def _assert_seeded(db: asyncpg.Connection, keyring: KeyRing) -> None:
    rows = await db.fetch(VARIANTS_SQL)
    assert [(r["public_model_id"], r["status"], r["label"], r["weight"]) for r in rows] == [
        ("bench/preview-one", "active", "a", 3), ("bench/preview-one", "active", "b", 1),
        ("bench/preview-two", "active", "a", 1), ("bench/preview-two", "active", "b", 1),
    ]
    assert {r["upstream"]["base_url"] for r in rows[:2]} == {"http://127.0.0.1:9/v1"}
    assert {keyring.decrypt(r["encrypted_api_key"]) for r in rows} == {BENCH_API_KEY}
    versions = await db.fetchval("SELECT count(*) FROM routing_config_version")
    assert versions == 2


async def test_admin_api_seeds_active_experiments_with_weighted_variants(
        admin_url: str, db: asyncpg.Connection, settings: Settings) -> None:
    await seed_via_admin(admin_url, TOKEN, SPECS)
    await _assert_seeded(db, KeyRing(settings.encryption_keys))


async def test_sql_fallback_seeds_the_same_rows(
        database_url: str, db: asyncpg.Connection, settings: Settings) -> None:
    keyring = KeyRing(settings.encryption_keys)
    await seed_via_sql(database_url, keyring, SPECS)
    await _assert_seeded(db, keyring)


async def test_a_refused_admin_call_names_the_status_but_not_the_token(admin_url: str) -> None:
    with pytest.raises(RuntimeError, match="401") as failure:
        await seed_via_admin(admin_url, "abg_wrong_token", SPECS)
    assert "abg_wrong_token" not in str(failure.value)
