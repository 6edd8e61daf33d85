"""Partner export throughput (rows/s) with realistic prompt evidence.

Creates a scratch database, records N chat requests (a 6 KB system prompt shared
by all, a ~1.5 KB user turn each) through the real recorder and evidence sink,
then times :func:`admin.cli_evidence.export` (rebuild + redaction + JSONL + HMAC)
and drops the database.

    python bench/export_throughput.py --server postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import orjson

from abgate.db import create_pool
from abgate.embedded import with_database
from abgate.evidence_sink import evidence_sink
from abgate.migrations import ensure_partitions, migrate_up
from abgate.prompt_store import PostgresBlobStore
from abgate.redactor import Redactor
from admin.cli_evidence import ExportRequest, export
from proxy.evidence import capped, hash_request, system_prompt
from proxy.recorder import Recorder
from proxy.records import RequestRecord
from proxy.spool import Spool

SYSTEM = "You are a helpful assistant for ACME support; answer briefly. " * 100
USER = ("My order 4711 arrived damaged; contact me at someone@example.com. "
        "The tracking page shows token sk-proj-" + secrets.token_urlsafe(24) + ". ") * 10


async def _seed(pool: asyncpg.Pool, rows: int, spool: Path) -> uuid.UUID:
    async with pool.acquire() as conn:
        experiment_id = await conn.fetchval(
            "INSERT INTO model_experiment (public_model_id, name, status) "
            "VALUES ('partner/preview-export', 'export', 'active') RETURNING id")
        variant_id = await conn.fetchval(
            "INSERT INTO model_experiment_variant (experiment_id, label, weight) "
            "VALUES ($1, 'a', 1) RETURNING id", experiment_id)
        version_id = await conn.fetchval(
            "INSERT INTO model_experiment_variant_version (variant_id, upstream, "
            "encrypted_api_key) VALUES ($1, $2, $3) RETURNING id", variant_id,
            {"internal_id": "ckpt-a", "base_url": "https://p.example/v1",
             "api_kind": "chat_completions"},
            {"kid": "k", "iv": "i", "data": "d", "authTag": "t"})
        await ensure_partitions(conn, ahead=0)
    recorder = Recorder(pool, Spool(str(spool), 256 * 1024 * 1024))
    recorder.prompt_sink = evidence_sink(pool, "postgres")
    await recorder.start()
    for i in range(rows):
        body = {"model": "ckpt-a", "user": "pseudonym", "messages": [
            {"role": "system", "content": SYSTEM}, {"role": "user", "content": f"{i} {USER}"}]}
        sent = orjson.dumps(body)
        system = system_prompt("chat_completions", body)
        body_sha, system_sha, truncated, _ = hash_request(sent, system)
        recorder.record(RequestRecord(
            created_at=datetime.now(UTC), request_kind="chat_completions",
            upstream_model="ckpt-a", status_code=200, variant_version_id=version_id,
            allocation_subject="user", subject_value=f"u{i % 100}",
            client_request_id=f"c{i}", system_prompt_sha256=system_sha,
            request_body_sha256=body_sha, was_truncated=truncated,
            prompt_body=capped(sent)[0], prompt_system=system))
    await recorder.close(timeout=600)
    return experiment_id  # type: ignore[no-any-return]


async def main(server: str, rows: int) -> None:
    name = f"abgate_bench_export_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = with_database(server, name)
    try:
        pool = await create_pool(dsn, min_size=1, max_size=4)
        async with pool.acquire() as conn:
            await migrate_up(conn)
        with tempfile.TemporaryDirectory() as tmp:
            experiment_id = await _seed(pool, rows, Path(tmp) / "spool")
            out = Path(tmp) / "export.jsonl"
            async with pool.acquire() as conn:
                result = await export(conn, PostgresBlobStore(), ExportRequest(
                    experiment_id, (), None, None, out, b"k" * 32, Redactor()))
            size = out.stat().st_size
        await pool.close()
        print(f"exported {result.rows:,} rows ({size / 1e6:.1f} MB) in {result.seconds:.2f} s: "
              f"{result.rows / result.seconds:,.0f} rows/s")
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rows", type=int, default=10_000)
    args = parser.parse_args()
    asyncio.run(main(args.server, args.rows))
