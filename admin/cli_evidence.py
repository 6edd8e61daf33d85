"""Evidence lifecycle commands: ``abgate retention``, ``abgate wipe-user``, ``abgate export``.

* ``retention --keep-months N`` (N >= 1) drops every monthly request partition
  whose rows are all older than N months, then the usage rows, feedback and
  rollup hours of that time, then prompt blobs no row references any more.
* ``wipe-user ID`` replaces both prompt hashes of every request of that user
  (``usage.user_id``) with ``__deleted__``, deletes the blobs no other request
  references, clears the comments of the user's feedback and writes an audit
  row (with the user id's SHA-256, not the id).
* ``export --experiment ID [--variant-version ID ...] [--since TS] [--until TS]
  --out FILE.jsonl [--sign-key-file F] [--redact-pattern RE ...]`` writes one
  JSON line per request served by the chosen versions (default: all of the
  experiment's) whose body is stored: the version's ``internal_id``, the time,
  the request kind, the rebuilt body through :class:`~abgate.redactor.Redactor`
  and the redactor's version. Never a user id, subject, client request id or
  key. With ``--sign-key-file`` an HMAC-SHA256 of the file is written to
  ``FILE.jsonl.sig``.

Exit codes: 0 done, 2 bad arguments or configuration (from abgate.cli).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import hashlib
import hmac
import os
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from abgate.config import Settings
from abgate.db import connect
from abgate.prompt_store import (
    DELETED,
    BlobStore,
    EvidenceDeleted,
    EvidenceRef,
    StoredBody,
    delete_unreferenced,
    deleting,
    is_sha256,
    load_bodies,
    open_blob_store,
)
from abgate.redactor import Redactor, patterns_from_env
from admin.audit import record
from admin.errors import BadRequest
from admin.query_params import parse_timestamp

__all__ = [
    "command_export",
    "command_retention",
    "command_wipe_user",
    "export",
    "retention",
    "wipe_user",
]

EXIT_USAGE = 2
_PARTITION_PREFIX = "model_experiment_request_"
_GC_GRACE_S = 3600.0
_BATCH = 1000
_DELETE_BATCH = 10_000
_SIGN_KEY_MIN_BYTES = 16


class _Usage(Exception):
    """A bad argument: printed and turned into exit code 2."""


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _settings() -> Settings:
    settings = Settings.from_env()
    assert settings.database_url is not None
    return settings


def _run(coro: Any) -> int:
    try:
        return int(asyncio.run(coro))
    except _Usage as exc:
        print(f"abgate: {exc}", file=sys.stderr)
        return EXIT_USAGE


# -- retention -----------------------------------------------------------------------


def _months_before(moment: datetime, months: int) -> datetime:
    index = moment.year * 12 + moment.month - 1 - months
    year, month = divmod(index, 12)
    day = moment.day
    while True:  # the same day N months earlier, or that month's last day
        try:
            return moment.replace(year=year, month=month + 1, day=day)
        except ValueError:
            day -= 1


def _partition_end(name: str) -> datetime | None:
    """The exclusive upper bound of a partition named ``..._YYYY_MM``."""
    suffix = name.removeprefix(_PARTITION_PREFIX)
    try:
        year, month = (int(part) for part in suffix.split("_"))
        start = datetime(year, month, 1, tzinfo=UTC)
    except ValueError:
        return None
    return _months_before(start, -1)


@dataclass
class RetentionResult:
    dropped: list[str] = field(default_factory=list)
    usage_rows: int = 0
    feedback_rows: int = 0
    blobs: int = 0
    boundary: datetime | None = None


async def _delete_in_batches(conn: asyncpg.Connection, sql: str, boundary: datetime) -> int:
    total = 0
    while True:
        deleted = len(await conn.fetch(sql, boundary, _DELETE_BATCH))
        total += deleted
        if deleted < _DELETE_BATCH:
            return total


async def collect_garbage(conn: asyncpg.Connection, store: BlobStore | None) -> int:
    """Delete blobs older than the grace period that no request row references."""
    if store is None:
        return 0
    moment = datetime.now(UTC).timestamp() - _GC_GRACE_S
    keys = await store.keys_older_than(conn, datetime.fromtimestamp(moment, UTC))
    deleted = 0
    for start in range(0, len(keys), _DELETE_BATCH):
        deleted += await delete_unreferenced(conn, store, keys[start:start + _DELETE_BATCH])
    return deleted


async def retention(
    conn: asyncpg.Connection, keep_months: int, store: BlobStore | None,
    now: datetime | None = None,
) -> RetentionResult:
    """Drop what is older than ``keep_months`` whole months (see module doc)."""
    if keep_months < 1:
        raise _Usage("--keep-months must be at least 1")
    cutoff = _months_before((now or datetime.now(UTC)).astimezone(UTC), keep_months)
    names = [r["relname"] for r in await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'model_experiment_request'::regclass ORDER BY c.relname"
    )]
    result = RetentionResult()
    for name in names:
        end = _partition_end(name)
        if end is None or end > cutoff:
            continue
        async with conn.transaction():
            await conn.execute("SET LOCAL lock_timeout = '10s'")
            await conn.execute(f'DROP TABLE "{name}"')
        result.dropped.append(name)
        result.boundary = max(result.boundary or end, end)
    if result.boundary is None:
        result.blobs = await collect_garbage(conn, store)
        return result
    boundary = result.boundary
    result.usage_rows = await _delete_in_batches(
        conn, "DELETE FROM usage WHERE id IN (SELECT id FROM usage WHERE created_at < $1 "
              "LIMIT $2) RETURNING 1", boundary)
    result.feedback_rows = await _delete_in_batches(
        conn, "DELETE FROM feedback WHERE id IN (SELECT id FROM feedback WHERE created_at < $1 "
              "LIMIT $2) RETURNING 1", boundary)
    async with conn.transaction():
        await conn.execute("DELETE FROM request_stats_hourly WHERE hour < $1", boundary)
        await conn.execute("DELETE FROM request_latency_hourly WHERE hour < $1", boundary)
        await conn.execute("DELETE FROM request_client_request_seen WHERE first_hour < $1",
                           boundary)
        await conn.execute(
            "UPDATE request_subject_seen SET hours = hours - int4multirange("
            "int4range(NULL, abgate_epoch_hour($1))) "
            "WHERE hours && int4range(NULL, abgate_epoch_hour($1))", boundary)
        await conn.execute("DELETE FROM request_subject_seen WHERE isempty(hours)")
    result.blobs = await collect_garbage(conn, store)
    return result


async def _retention_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="abgate retention",
                                     description="Drop request partitions older than N months.")
    parser.add_argument("--keep-months", type=int, required=True, metavar="N")
    args = parser.parse_args(argv)
    settings = _settings()
    assert settings.database_url is not None
    conn = await connect(settings.database_url)
    try:
        result = await retention(conn, args.keep_months, open_blob_store(settings.prompt_store))
    finally:
        await conn.close()
    for name in result.dropped:
        print(f"dropped partition {name}")
    if not result.dropped:
        print(f"no request partition is entirely older than {args.keep_months} month(s)")
    else:
        print(f"deleted {result.usage_rows} usage row(s) and {result.feedback_rows} feedback "
              f"row(s) older than {result.boundary:%Y-%m-%d}")
    print(f"deleted {result.blobs} prompt blob(s) no request references")
    return 0


def command_retention(argv: list[str]) -> int:
    return _run(_retention_main(argv))


# -- wipe-user --------------------------------------------------------------------------


@dataclass
class WipeResult:
    requests: int
    blobs: int
    feedback_comments: int


_WIPE_SQL = f"""
WITH target AS (
    SELECT m.usage_id, m.created_at, m.system_prompt_sha256, m.body_blob_sha256
    FROM model_experiment_request m JOIN usage u ON u.id = m.usage_id
    WHERE u.user_id = $1
    FOR UPDATE OF m
)
UPDATE model_experiment_request AS m
SET system_prompt_sha256 = '{DELETED}', request_body_sha256 = '{DELETED}', body_blob_sha256 = NULL
FROM target
WHERE m.usage_id = target.usage_id AND m.created_at = target.created_at
RETURNING target.system_prompt_sha256 AS system_key, target.body_blob_sha256 AS body_key
"""  # noqa: S608 - constants only
_REFERENCED_SQL = """
SELECT k FROM unnest($1::text[]) AS k
WHERE EXISTS (SELECT 1 FROM model_experiment_request WHERE system_prompt_sha256 = k)
   OR EXISTS (SELECT 1 FROM model_experiment_request WHERE body_blob_sha256 = k)
"""


async def wipe_user(
    conn: asyncpg.Connection, user_id: str, store: BlobStore | None, actor: str
) -> WipeResult:
    """Wipe one user's prompt evidence in one transaction (see module doc)."""
    if not user_id.strip() or len(user_id) > 500 or "\x00" in user_id:
        raise _Usage("the user id must be 1-500 characters")
    async with deleting(conn):
        rows = await conn.fetch(_WIPE_SQL, user_id)
        candidates = sorted({k for r in rows for k in (r["system_key"], r["body_key"])
                             if is_sha256(k)})
        referenced = {r["k"] for r in await conn.fetch(_REFERENCED_SQL, candidates)}
        orphans = [k for k in candidates if k not in referenced]
        blobs = await store.delete(conn, orphans) if store is not None else 0
        comments = await conn.fetch(
            "UPDATE feedback SET comment = NULL, updated_at = now() "
            "WHERE allocation_subject = 'user' AND subject_value = $1 AND comment IS NOT NULL "
            "RETURNING 1", user_id)
        result = WipeResult(len(rows), blobs, len(comments))
        await record(conn, actor=actor, action="user.wipe", after={
            "user_id_sha256": hashlib.sha256(user_id.encode("utf-8")).hexdigest(),
            "requests": result.requests,
            "blobs_deleted": result.blobs,
            "feedback_comments_cleared": result.feedback_comments,
        })
    return result


async def _wipe_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="abgate wipe-user",
                                     description="Delete one user's prompt evidence.")
    parser.add_argument("user_id", metavar="ID")
    args = parser.parse_args(argv)
    settings = _settings()
    assert settings.database_url is not None
    conn = await connect(settings.database_url)
    try:
        result = await wipe_user(conn, args.user_id, open_blob_store(settings.prompt_store),
                                 _actor())
    finally:
        await conn.close()
    print(f"wiped the prompt evidence of {result.requests} request(s)")
    print(f"deleted {result.blobs} prompt blob(s) no other request references")
    print(f"cleared {result.feedback_comments} feedback comment(s)")
    return 0


def command_wipe_user(argv: list[str]) -> int:
    return _run(_wipe_main(argv))


# -- export ------------------------------------------------------------------------------


@dataclass
class ExportResult:
    rows: int = 0
    skipped_deleted: int = 0
    skipped_missing: int = 0
    seconds: float = 0.0
    signature: str | None = None


@dataclass(frozen=True)
class ExportRequest:
    experiment_id: uuid.UUID
    version_ids: tuple[int, ...]
    since: datetime | None
    until: datetime | None
    out: Path
    sign_key: bytes | None
    redactor: Redactor


_ROWS_SQL = """
SELECT m.usage_id, m.created_at, m.request_kind, m.variant_version_id,
       m.request_body_sha256, m.body_blob_sha256
FROM model_experiment_request m
WHERE m.variant_version_id = ANY($1::bigint[])
  AND m.created_at >= coalesce($2::timestamptz, '-infinity')
  AND m.created_at < coalesce($3::timestamptz, 'infinity')
  AND (m.created_at, m.usage_id) > ($4::timestamptz, $5::uuid)
ORDER BY m.created_at, m.usage_id
LIMIT $6
"""


async def _versions(conn: asyncpg.Connection, request: ExportRequest) -> dict[int, str]:
    """version id -> internal_id for the chosen versions (all of the experiment's by default)."""
    if await conn.fetchval("SELECT 1 FROM model_experiment WHERE id = $1",
                           request.experiment_id) is None:
        raise _Usage(f"experiment {request.experiment_id} not found")
    rows = await conn.fetch(
        "SELECT x.id, x.upstream->>'internal_id' AS internal_id "
        "FROM model_experiment_variant_version x "
        "JOIN model_experiment_variant v ON v.id = x.variant_id WHERE v.experiment_id = $1",
        request.experiment_id)
    versions = {r["id"]: r["internal_id"] for r in rows}
    if request.version_ids:
        foreign = sorted(set(request.version_ids) - set(versions))
        if foreign:
            raise _Usage(f"variant version {foreign[0]} does not belong to experiment "
                         f"{request.experiment_id}")
        versions = {v: versions[v] for v in request.version_ids}
    return versions


def _line(row: asyncpg.Record, internal_id: str, body: StoredBody, redactor: Redactor) -> bytes:
    line: dict[str, Any] = {
        "internal_id": internal_id,
        "created_at": row["created_at"],
        "request_kind": row["request_kind"],
    }
    text = body.content.decode("utf-8", "replace")
    parsed: Any = None
    if not body.truncated:
        try:
            parsed = orjson.loads(body.content)
        except orjson.JSONDecodeError:
            parsed = None
    if parsed is not None:
        line["request"] = redactor.redact_json(parsed)
    else:
        line["request_part"] = redactor.redact_text(text)
    line["truncated"] = body.truncated
    line["redactor_version"] = redactor.version
    return orjson.dumps(line) + b"\n"


async def export(
    conn: asyncpg.Connection, store: BlobStore | None, request: ExportRequest
) -> ExportResult:
    """Write the export file (atomically) and, with a key, its signature."""
    started = time.perf_counter()
    versions = await _versions(conn, request)
    result = ExportResult()
    digest = hashlib.sha256()
    mac = hmac.new(request.sign_key, digestmod=hashlib.sha256) if request.sign_key else None
    tmp = request.out.with_name(f".{request.out.name}.{os.getpid()}.tmp")
    cursor: tuple[datetime, uuid.UUID] = (datetime(1, 1, 1, tzinfo=UTC), uuid.UUID(int=0))
    try:
        with tmp.open("wb") as handle:
            while True:
                rows = await conn.fetch(_ROWS_SQL, list(versions), request.since, request.until,
                                        cursor[0], cursor[1], _BATCH)
                if not rows:
                    break
                cursor = (rows[-1]["created_at"], rows[-1]["usage_id"])
                refs = [EvidenceRef(r["request_body_sha256"], r["body_blob_sha256"])
                        for r in rows]
                for row, body in zip(rows, await load_bodies(conn, store, refs), strict=True):
                    if not isinstance(body, StoredBody):
                        if isinstance(body, EvidenceDeleted):
                            result.skipped_deleted += 1
                        else:
                            result.skipped_missing += 1
                        continue
                    data = _line(row, versions[row["variant_version_id"]], body,
                                 request.redactor)
                    handle.write(data)
                    digest.update(data)
                    if mac is not None:
                        mac.update(data)
                    result.rows += 1
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, request.out)
    finally:
        if tmp.exists():
            tmp.unlink()
    if mac is not None:
        result.signature = mac.hexdigest()
        signature = {"algorithm": "HMAC-SHA256", "file": request.out.name,
                     "sha256": digest.hexdigest(), "signature": result.signature}
        await asyncio.to_thread(
            Path(f"{request.out}.sig").write_bytes, orjson.dumps(signature) + b"\n"
        )
    result.seconds = time.perf_counter() - started
    return result


def _read_sign_key(path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        key = Path(path).read_bytes().strip()
    except OSError as exc:
        raise _Usage(f"cannot read --sign-key-file: {exc.strerror}") from None
    if len(key) < _SIGN_KEY_MIN_BYTES:
        raise _Usage(f"the signing key must be at least {_SIGN_KEY_MIN_BYTES} bytes")
    return key


def _export_request(argv: Sequence[str]) -> ExportRequest:
    parser = argparse.ArgumentParser(prog="abgate export",
                                     description="Write a redacted partner export (JSONL).")
    parser.add_argument("--experiment", required=True, metavar="ID")
    parser.add_argument("--variant-version", type=int, action="append", default=[],
                        metavar="ID", dest="versions")
    parser.add_argument("--since", metavar="TIMESTAMP")
    parser.add_argument("--until", metavar="TIMESTAMP")
    parser.add_argument("--out", required=True, metavar="FILE.jsonl")
    parser.add_argument("--sign-key-file", metavar="FILE")
    parser.add_argument("--redact-pattern", action="append", default=[], metavar="REGEX")
    args = parser.parse_args(argv)
    try:
        experiment_id = uuid.UUID(args.experiment)
    except ValueError:
        raise _Usage("--experiment must be a UUID") from None
    try:
        since = parse_timestamp(args.since, "--since") if args.since else None
        until = parse_timestamp(args.until, "--until") if args.until else None
    except BadRequest as exc:
        raise _Usage(exc.message) from None
    if since is not None and until is not None and since >= until:
        raise _Usage("--since must be before --until")
    try:
        patterns = patterns_from_env(os.environ.get("ABGATE_REDACT_PATTERNS"))
        redactor = Redactor([*patterns, *args.redact_pattern])
    except ValueError as exc:
        raise _Usage(str(exc)) from None
    out = Path(args.out)
    if not out.parent.is_dir():
        raise _Usage(f"the directory of --out does not exist: {out.parent}")
    return ExportRequest(experiment_id, tuple(args.versions), since, until, out,
                         _read_sign_key(args.sign_key_file), redactor)


async def _export_main(argv: Sequence[str]) -> int:
    request = _export_request(argv)
    settings = _settings()
    assert settings.database_url is not None
    conn = await connect(settings.database_url)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            result = await export(conn, open_blob_store(settings.prompt_store), request)
    finally:
        await conn.close()
    rate = result.rows / result.seconds if result.seconds > 0 else 0.0
    print(f"exported {result.rows} request(s) to {request.out} "
          f"({rate:,.0f} rows/s; redactor {request.redactor.version})")
    if result.skipped_deleted or result.skipped_missing:
        print(f"skipped {result.skipped_deleted} wiped request(s) and "
              f"{result.skipped_missing} without captured evidence")
    if result.signature is not None:
        print(f"signature written to {request.out}.sig")
    return 0


def command_export(argv: list[str]) -> int:
    return _run(_export_main(argv))

