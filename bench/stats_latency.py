"""Stats endpoint latency over 1,000,000 request rows.

Creates a scratch database on the given server, migrates it, seeds one
experiment (three variants weighted 1:1:2, two versions each) with N requests
made by 20,000 subjects in sessions of five requests within an hour (ten
sessions each), 5% without a client request id, ~10% of client request ids
rated, all with generate_series SQL. The raw rows are written with triggers
off (``session_replication_role = replica``, needs a superuser) and the rollup is
then built by ``abgate_rebuild_stats_rollup()`` (the same numbers the triggers
keep; tests/evidence checks that), which loads 1M rows in minutes instead of
tens of minutes. Then it times :func:`admin.stats.compute_stats` the way the
handler calls it, unwindowed and for the last 7 days, and drops the database.

    python bench/stats_latency.py --server postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from abgate.db import connect, create_pool
from abgate.embedded import with_database
from abgate.migrations import migrate_up
from admin.stats import Window, compute_stats

EXPERIMENT_ID = uuid.UUID("00000000-0000-0000-0000-0000000000e1")

SEED_SQL = """
SET session_replication_role = replica;
INSERT INTO model_experiment (id, public_model_id, name, status, started_at)
VALUES ('{experiment}', 'partner/preview-bench', 'bench', 'active', now() - interval '40 days');
INSERT INTO model_experiment_variant (experiment_id, label, weight)
SELECT '{experiment}', l, w FROM (VALUES ('a', 1), ('b', 1), ('c', 2)) AS v(l, w);
INSERT INTO model_experiment_variant_version (variant_id, upstream, encrypted_api_key, effective_at)
SELECT v.id,
       jsonb_build_object('internal_id', 'ckpt-' || v.label || n,
                          'base_url', 'https://partner.example/v1', 'api_kind', 'chat_completions'),
       '{{"kid": "k", "iv": "i", "data": "d", "authTag": "t"}}',
       now() - (60 - n * 20) * interval '1 day'
FROM model_experiment_variant v, generate_series(1, 2) AS n;
SELECT abgate_ensure_request_partition(now() - interval '31 days');
SELECT abgate_ensure_request_partition(now());
CREATE TEMP TABLE slots AS
SELECT v.id AS variant_id, array_agg(x.id ORDER BY x.id) AS versions,
       row_number() OVER (ORDER BY v.id) - 1 AS slot
FROM model_experiment_variant v JOIN model_experiment_variant_version x ON x.variant_id = v.id
GROUP BY v.id;
CREATE TEMP TABLE gen AS
SELECT g, md5(g::text)::uuid AS id, g % 20000 AS s,
       now() - interval '30 days'
         + ((hashint8((g % 20000) * 100 + (g / 20000) % 10) & 2147483647) % 719)
           * interval '1 hour'
         + (g % 3600) * interval '1 second' AS ts
FROM generate_series(1::bigint, {rows}::bigint) AS g;
INSERT INTO usage (id, created_at, user_id, request_kind, upstream_model, status_code,
                   has_error, input_tokens, output_tokens, latency_ms, ttft_ms,
                   market_cost_microdollars)
SELECT id, ts, CASE WHEN s % 10 < 8 THEN 'user-' || s END, 'chat_completions', 'ckpt',
       CASE WHEN g % 50 = 0 THEN 500 ELSE 200 END, g % 50 = 0,
       100 + g % 900, 50 + g % 400, 200 + (g * 7919) % 5000, 50 + (g * 104729) % 1000, g % 1000
FROM gen;
INSERT INTO model_experiment_request (usage_id, created_at, variant_version_id,
    allocation_subject, subject_value, client_request_id, request_kind,
    system_prompt_sha256, request_body_sha256)
SELECT gen.id, gen.ts,
       slots.versions[CASE WHEN gen.ts < now() - interval '15 days' THEN 1 ELSE 2 END],
       CASE WHEN s % 10 < 8 THEN 'user' WHEN s % 10 = 8 THEN 'machine' ELSE 'ip' END,
       'subject-' || s,
       CASE WHEN g % 20 = 0 THEN NULL ELSE 'crid-' || g END,
       'chat_completions', md5((s % 5)::text) || md5((s % 5)::text), md5(g::text) || md5(g::text)
FROM gen JOIN slots ON slots.slot = CASE (s * 31) % 4 WHEN 0 THEN 0 WHEN 1 THEN 1 ELSE 2 END;
INSERT INTO feedback (client_request_id, allocation_subject, subject_value, rating)
SELECT client_request_id, allocation_subject, subject_value,
       CASE WHEN hashtext(client_request_id) % 3 = 0 THEN -1 ELSE 1 END
FROM model_experiment_request
WHERE client_request_id IS NOT NULL AND hashtext(client_request_id) % 10 = 0;
SET session_replication_role = origin;
SELECT abgate_rebuild_stats_rollup();
ANALYZE;
"""


async def _seed(dsn: str, rows: int) -> None:
    conn = await connect(dsn)
    try:
        await migrate_up(conn)
        started = time.perf_counter()
        await conn.execute(SEED_SQL.format(experiment=EXPERIMENT_ID, rows=rows))
        print(f"seeded {rows:,} request rows in {time.perf_counter() - started:.0f} s")
    finally:
        await conn.close()


async def _time(pool: asyncpg.Pool, window: Window, runs: int) -> list[float]:
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        async with pool.acquire() as conn, conn.transaction(
            isolation="repeatable_read", readonly=True
        ):
            await conn.execute("SET LOCAL jit = off")
            document = await compute_stats(conn, EXPERIMENT_ID, window)
        timings.append(time.perf_counter() - started)
    total = sum(v["totals"]["requests"] for v in document["versions"])
    print(f"  window {window.since} .. {window.until}: {total:,} requests counted")
    return timings


def _report(name: str, timings: list[float]) -> None:
    ordered = sorted(timings)
    p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
    print(f"{name}: p50 {statistics.median(ordered) * 1000:.0f} ms, "
          f"p95 {p95 * 1000:.0f} ms, max {ordered[-1] * 1000:.0f} ms over {len(ordered)} runs")


async def main(server: str, rows: int, runs: int, keep: bool) -> None:
    name = f"abgate_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = with_database(server, name)
    try:
        await _seed(dsn, rows)
        pool = await create_pool(dsn, min_size=1, max_size=2)
        try:
            await _time(pool, Window(), 2)  # warm the cache
            _report("stats, whole experiment", await _time(pool, Window(), runs))
            now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
            week = Window(now - timedelta(days=7), now + timedelta(hours=1))
            _report("stats, last 7 days", await _time(pool, week, runs))
        finally:
            await pool.close()
    finally:
        if keep:
            print(f"kept database {name}")
        else:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="DSN of a database on the server (a superuser); a scratch "
                             "database is created beside it")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()
    asyncio.run(main(args.server, args.rows, args.runs, args.keep))
