"""p50 latency of the admin API on a database with many experiments.

Creates a scratch database on the server of ``ABGATE_DATABASE_URL`` (or
``--database-url``), migrates it, seeds ``--experiments`` experiments (each with
two variants and one version per variant; one in ten active), starts the admin
app in-process and measures:

* ``GET /api/experiments/{id}`` (experiment with variants and versions),
* a hot-swap ``POST /api/variants/{id}/versions`` keeping the key, and one with a
  new key (encrypted), on an active experiment (bump + publish included when
  ``ABGATE_REDIS_URL`` is set).

Usage: python bench/admin_latency.py [--experiments 1000] [--requests 300]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid

import asyncpg
from aiohttp import ClientSession, web

from abgate.config import Settings, parse_encryption_keys
from abgate.crypto import KeyRing, generate_key_entry
from abgate.db import connect
from abgate.embedded import with_database
from abgate.migrations import migrate_up
from admin.app import create_app

TOKEN = "abg_bench-admin-token"
UPSTREAM = {"internal_id": "partner/ckpt", "base_url": "https://api.partner.example/v1",
            "api_kind": "chat_completions"}


async def seed(conn: asyncpg.Connection, keyring: KeyRing, count: int) -> tuple[str, int]:
    """Insert ``count`` experiments; return an active experiment id and one of its variants."""
    blob = keyring.encrypt("sk-bench-key")
    experiments = [(uuid.uuid4(), f"bench/model-{i}", "active" if i % 10 == 0 else "draft")
                   for i in range(count)]
    await conn.executemany(
        "INSERT INTO model_experiment (id, public_model_id, name, status, started_at) "
        "VALUES ($1, $2, $2, $3, CASE WHEN $3 = 'active' THEN now() END)", experiments)
    variant_rows = await conn.fetch(
        "INSERT INTO model_experiment_variant (experiment_id, label, weight) "
        "SELECT id, l, 1 FROM model_experiment, unnest(ARRAY['a', 'b']) AS l RETURNING id")
    await conn.executemany(
        "INSERT INTO model_experiment_variant_version (variant_id, upstream, encrypted_api_key) "
        "VALUES ($1, $2, $3)", [(r["id"], UPSTREAM, blob) for r in variant_rows])
    await conn.execute("ANALYZE")
    active_id = experiments[0][0]
    variant_id = await conn.fetchval(
        "SELECT min(id) FROM model_experiment_variant WHERE experiment_id = $1", active_id)
    return str(active_id), int(variant_id)


async def measure(session: ClientSession, method: str, url: str, n: int,
                  body: dict | None = None) -> list[float]:
    samples = []
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for _ in range(n):
        started = time.perf_counter()
        async with session.request(method, url, json=body, headers=headers) as response:
            await response.read()
            assert response.status < 300, response.status
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def summary(name: str, samples: list[float]) -> str:
    q = statistics.quantiles(samples, n=100)
    return (f"{name:<42} p50 {statistics.median(samples):6.2f} ms   p90 {q[89]:6.2f} ms   "
            f"p99 {q[98]:6.2f} ms   (n={len(samples)})")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("ABGATE_DATABASE_URL"))
    parser.add_argument("--redis-url", default=os.environ.get("ABGATE_REDIS_URL"))
    parser.add_argument("--experiments", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    if not args.database_url:
        parser.error("set ABGATE_DATABASE_URL or pass --database-url")

    name = f"abgate_bench_{uuid.uuid4().hex[:8]}"
    server = await asyncpg.connect(args.database_url)
    await server.execute(f'CREATE DATABASE "{name}"')
    dsn = with_database(args.database_url, name)
    runner: web.AppRunner | None = None
    try:
        keys = generate_key_entry("bench")
        keyring = KeyRing(parse_encryption_keys(keys))
        conn = await connect(dsn)
        try:
            await migrate_up(conn)
            experiment_id, variant_id = await seed(conn, keyring, args.experiments)
        finally:
            await conn.close()
        env = {"ABGATE_DATABASE_URL": dsn, "ABGATE_ENCRYPTION_KEYS": keys,
               "ABGATE_ADMIN_TOKEN": TOKEN, "ABGATE_REDIS_NAMESPACE": name}
        if args.redis_url:
            env["ABGATE_REDIS_URL"] = args.redis_url
        runner = web.AppRunner(create_app(Settings.from_env(env)), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        async with ClientSession() as session:
            detail = f"{base}/api/experiments/{experiment_id}"
            versions = f"{base}/api/variants/{variant_id}/versions"
            await measure(session, "GET", detail, 20)  # warm the pool and the token cache
            get = await measure(session, "GET", detail, args.requests)
            keep = await measure(session, "POST", versions, args.requests // 3,
                                 {"upstream": UPSTREAM})
            new_key = await measure(session, "POST", versions, args.requests // 3,
                                    {"upstream": UPSTREAM, "api_key": "sk-bench-new"})
            get_after = await measure(session, "GET", detail, args.requests // 3)
        print(f"{args.experiments} experiments, redis {'on' if args.redis_url else 'off'}")
        print(summary("GET /api/experiments/{id}", get))
        print(summary("hot-swap keeping the key", keep))
        print(summary("hot-swap with a new key", new_key))
        print(summary(f"GET after {len(keep) + len(new_key)} more versions", get_after))
    finally:
        if runner is not None:
            await runner.cleanup()
        await server.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await server.close()


if __name__ == "__main__":
    asyncio.run(main())
