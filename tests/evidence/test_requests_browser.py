"""Request browser filters, pagination and limits; prompt download 200/404/410 and its audit."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from evidence_helpers import (
    VIEWER_TOKEN,
    Setup,
    auth,
    body_for,
    chat_body,
    experiment,
    record,
    write,
)

from abgate.prompt_store import MAX_CONTENT_BYTES

SECRET_KEY = "sk-partner-secret-0123456789"


async def _seed(db: asyncpg.Connection, pool: asyncpg.Pool, spool_dir: Path) -> Setup:
    setup = await experiment(db, weights=(1, 1))
    start = datetime.now(UTC) - timedelta(minutes=30)
    records = []
    for i in range(25):
        records.append(record(
            "chat_completions" if i % 2 else "messages",
            body_for("chat_completions" if i % 2 else "messages", "rules", f"q{i}"),
            setup.version_ids[i % 2], client_request_id=f"crid-{i}",
            created_at=start + timedelta(seconds=i), status_code=500 if i % 5 == 0 else 200,
            has_error=i % 5 == 0))
    await write(pool, records, spool_dir)
    return setup


async def _page(admin: TestClient, query: str, token: str | None = None) -> dict:
    response = await admin.get(f"/api/requests{query}", headers=auth(token) if token else auth())
    assert response.status == 200, await response.text()
    return await response.json()  # type: ignore[no-any-return]


async def test_pages_walk_every_row_newest_first_without_repeats(
    admin: TestClient, db: asyncpg.Connection, pool: asyncpg.Pool, spool_dir: Path
) -> None:
    await _seed(db, pool, spool_dir)
    seen, cursor = [], None
    while True:
        page = await _page(admin, "?limit=10" + (f"&cursor={cursor}" if cursor else ""))
        seen += page["requests"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 25 == len({r["usage_id"] for r in seen})
    times = [r["created_at"] for r in seen]
    assert times == sorted(times, reverse=True)


async def test_default_limit_is_50(
    admin: TestClient, db: asyncpg.Connection, pool: asyncpg.Pool, spool_dir: Path
) -> None:
    await _seed(db, pool, spool_dir)
    page = await _page(admin, "")
    assert len(page["requests"]) == 25 and page["next_cursor"] is None


@pytest.mark.parametrize("query", ["?limit=9", "?limit=101", "?limit=ten", "?cursor=!!",
                                   "?outcome=maybe", "?body_state=gone", "?request_kind=x",
                                   "?experiment_id=nope", "?variant_id=-1", "?colour=blue"])
async def test_bad_parameters_are_400(admin: TestClient, query: str) -> None:
    response = await admin.get(f"/api/requests{query}", headers=auth())
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "BAD_REQUEST"


async def test_filters_select_matching_rows(
    admin: TestClient, db: asyncpg.Connection, pool: asyncpg.Pool, spool_dir: Path
) -> None:
    setup = await _seed(db, pool, spool_dir)
    other = await experiment(db)
    await write(pool, [record("responses", body_for("responses", None, "x"),
                              other.version_ids[0])], spool_dir)
    assert len((await _page(admin, f"?experiment_id={setup.experiment_id}"))["requests"]) == 25
    by_variant = await _page(admin, f"?variant_id={setup.variant_ids[1]}")
    assert {r["variant_id"] for r in by_variant["requests"]} == {setup.variant_ids[1]}
    by_version = await _page(admin, f"?variant_version_id={setup.version_ids[0]}")
    assert len(by_version["requests"]) == 13
    assert [r["client_request_id"] for r in
            (await _page(admin, "?client_request_id=crid-7"))["requests"]] == ["crid-7"]
    kinds = {r["request_kind"] for r in (await _page(admin, "?request_kind=messages"))["requests"]}
    assert kinds == {"messages"}
    errors = (await _page(admin, "?outcome=error"))["requests"]
    assert len(errors) == 5 and {r["outcome"] for r in errors} == {"error"}
    assert len((await _page(admin, "?outcome=success"))["requests"]) == 21


async def test_body_state_filter_and_rows_carry_no_subject_or_key(
    admin: TestClient, db: asyncpg.Connection, pool: asyncpg.Pool, spool_dir: Path
) -> None:
    await _seed(db, pool, spool_dir)
    await db.execute("UPDATE model_experiment_request SET request_body_sha256 = '__deleted__', "
                     "body_blob_sha256 = NULL WHERE client_request_id = 'crid-3'")
    await db.execute("UPDATE model_experiment_request SET request_body_sha256 = '__failed__', "
                     "body_blob_sha256 = NULL WHERE client_request_id = 'crid-4'")
    deleted = (await _page(admin, "?body_state=deleted"))["requests"]
    failed = (await _page(admin, "?body_state=failed"))["requests"]
    available = (await _page(admin, "?body_state=available"))["requests"]
    assert [r["client_request_id"] for r in deleted] == ["crid-3"]
    assert [r["client_request_id"] for r in failed] == ["crid-4"]
    assert len(available) == 23
    response = await admin.get("/api/requests", headers=auth())
    raw = await response.read()
    assert b"alice" not in raw and b"encrypted_api_key" not in raw and b"subject_value" not in raw


async def _download(
    admin: TestClient, usage_id: object, token: str | None = None
) -> ClientResponse:
    return await admin.get(f"/api/requests/{usage_id}/prompt",
                           headers=auth(token) if token else auth())


async def test_download_returns_the_exact_body_and_is_audited(
    admin: TestClient, db: asyncpg.Connection, pool: asyncpg.Pool, spool_dir: Path
) -> None:
    setup = await experiment(db)
    item = record("chat_completions", chat_body("rules", "hello"), setup.version_ids[0])
    await write(pool, [item], spool_dir)
    response = await _download(admin, item.usage_id, VIEWER_TOKEN)
    assert response.status == 200
    assert response.content_type == "application/json"
    assert f'filename="{item.usage_id}.json"' in response.headers["Content-Disposition"]
    body = await response.read()
    assert hashlib.sha256(body).hexdigest() == item.request_body_sha256
    audit = await db.fetchrow("SELECT actor, action, version_id, after FROM audit_log "
                              "WHERE action = 'prompt.download'")
    assert audit["actor"] == "viewer-1" and audit["version_id"] == setup.version_ids[0]
    assert audit["after"]["usage_id"] == str(item.usage_id)


async def test_a_truncated_body_downloads_as_a_text_part(
    admin: TestClient, db: asyncpg.Connection, pool: asyncpg.Pool, spool_dir: Path
) -> None:
    setup = await experiment(db)
    item = record("chat_completions", chat_body("rules", "y" * MAX_CONTENT_BYTES),
                  setup.version_ids[0])
    await write(pool, [item], spool_dir)
    response = await _download(admin, item.usage_id)
    assert response.status == 200 and response.content_type == "text/plain"
    assert f'{item.usage_id}.json.part"' in response.headers["Content-Disposition"]
    assert len(await response.read()) == MAX_CONTENT_BYTES


async def test_download_is_404_when_missing_or_failed_and_410_when_deleted(
    admin: TestClient, db: asyncpg.Connection, pool: asyncpg.Pool, spool_dir: Path
) -> None:
    setup = await experiment(db)
    items = [record("responses", body_for("responses", "r", f"q{i}"), setup.version_ids[0])
             for i in range(3)]
    await write(pool, items, spool_dir)
    await db.execute("UPDATE model_experiment_request SET request_body_sha256 = '__failed__', "
                     "body_blob_sha256 = NULL WHERE usage_id = $1", items[0].usage_id)
    await db.execute("UPDATE model_experiment_request SET request_body_sha256 = '__deleted__', "
                     "body_blob_sha256 = NULL WHERE usage_id = $1", items[1].usage_id)
    await db.execute("DELETE FROM prompt_blob WHERE sha256 = (SELECT body_blob_sha256 FROM "
                     "model_experiment_request WHERE usage_id = $1)", items[2].usage_id)
    assert (await _download(admin, items[0].usage_id)).status == 404
    assert (await _download(admin, items[1].usage_id)).status == 410
    assert (await _download(admin, items[2].usage_id)).status == 404
    assert (await _download(admin, "00000000-0000-0000-0000-000000000000")).status == 404
    assert (await _download(admin, "not-a-uuid")).status == 404
    assert await db.fetchval("SELECT count(*) FROM audit_log WHERE action = "
                             "'prompt.download'") == 0


async def test_downloads_need_a_token(admin: TestClient) -> None:
    response = await admin.get("/api/requests")
    assert response.status == 401
    assert orjson.loads(await response.read())["error"]["code"] == "UNAUTHORIZED"
