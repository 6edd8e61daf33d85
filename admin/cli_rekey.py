"""``abgate rekey``: re-encrypt every stored API key under the first encryption key.

Works in batches of :data:`BATCH_SIZE` rows, one transaction each, that lock their
rows (FOR UPDATE) and use the narrow rekey exception of the immutability trigger
(sql/0005_rekey.up.sql). Rows already under the first key are skipped, so the
command is safe to re-run and to interrupt. It prints counts, never key material.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from abgate.config import Settings
from abgate.crypto import CryptoError, KeyRing
from abgate.db import connect

__all__ = ["BATCH_SIZE", "RekeyResult", "command_rekey", "rekey_all"]

BATCH_SIZE = 500

_BATCH_SQL = """
SELECT id, encrypted_api_key FROM model_experiment_variant_version
WHERE id > $1 AND encrypted_api_key->>'kid' IS DISTINCT FROM $2
ORDER BY id LIMIT $3
FOR UPDATE
"""
_UPDATE_SQL = """
UPDATE model_experiment_variant_version AS v SET encrypted_api_key = u.blob
FROM unnest($1::bigint[], $2::jsonb[]) AS u(id, blob)
WHERE v.id = u.id
"""


@dataclass
class RekeyResult:
    rekeyed: int = 0
    failed: int = 0
    already_current: int = 0


async def rekey_all(
    conn: asyncpg.Connection, keyring: KeyRing, batch_size: int = BATCH_SIZE
) -> RekeyResult:
    """Re-encrypt every version key not under ``keyring.primary_kid``."""
    primary = keyring.primary_kid  # raises NoEncryptionKeyError on an empty ring
    result = RekeyResult()
    result.already_current = await conn.fetchval(
        "SELECT count(*) FROM model_experiment_variant_version "
        "WHERE encrypted_api_key->>'kid' = $1", primary)
    last_id = 0
    while True:
        async with conn.transaction():
            await conn.execute("SET LOCAL abgate.rekey = 'on'")
            rows = await conn.fetch(_BATCH_SQL, last_id, primary, batch_size)
            if not rows:
                return result
            ids: list[int] = []
            blobs: list[dict[str, str]] = []
            for row in rows:
                try:
                    blobs.append(keyring.rekey(row["encrypted_api_key"]))
                except CryptoError as exc:
                    # The message names the kid or the failure, never key material.
                    print(f"version {row['id']}: cannot re-encrypt: {exc}", file=sys.stderr)
                    result.failed += 1
                    continue
                ids.append(row["id"])
            if ids:
                await conn.execute(_UPDATE_SQL, ids, blobs)
            result.rekeyed += len(ids)
            last_id = rows[-1]["id"]


def command_rekey(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="abgate rekey", description="re-encrypt all stored keys under the first key")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    args = parser.parse_args(list(argv))
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    settings = Settings.from_env()
    if not settings.encryption_keys:
        print("abgate rekey: ABGATE_ENCRYPTION_KEYS is not configured", file=sys.stderr)
        return 2
    keyring = KeyRing(settings.encryption_keys)
    assert settings.database_url is not None

    async def run() -> RekeyResult:
        assert settings.database_url is not None
        conn = await connect(settings.database_url)
        try:
            return await rekey_all(conn, keyring, args.batch_size)
        finally:
            await conn.close()

    result = asyncio.run(run())
    print(f"rekeyed {result.rekeyed} key(s) under {keyring.primary_kid!r}; "
          f"{result.already_current} already current; {result.failed} failed")
    return 1 if result.failed else 0
