"""The prompt store: exact rebuild, system prompt stored once, backends, caps and failures."""

from __future__ import annotations

import hashlib
from pathlib import Path

import asyncpg
import orjson
import pytest
from evidence_helpers import body_for, chat_body, experiment, record, write
from hypothesis import given, settings
from hypothesis import strategies as st

from abgate.prompt_store import (
    MAX_CONTENT_BYTES,
    CorruptEvidence,
    EvidenceRef,
    FileBlobStore,
    PostgresBlobStore,
    Remainder,
    StoredBody,
    cap_utf8,
    load_bodies,
    rebuild,
    split,
)
from proxy.evidence import system_prompt

KINDS = ("chat_completions", "messages", "responses")


def _round_trip(content: bytes, system: bytes | None) -> bytes:
    parts = split(content, system)
    remainder = Remainder.decode(parts.remainder)
    return rebuild(remainder, parts.system)


# -- sans-I/O ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_split_cuts_the_system_prompt_out_and_rebuild_restores_the_exact_bytes(kind: str) -> None:
    body = orjson.dumps(body_for(kind, "You are terse. " * 50, "hello"))
    system = system_prompt(kind, orjson.loads(body))
    assert system is not None
    parts = split(body, system)
    assert system not in parts.remainder
    assert Remainder.decode(parts.remainder).spans
    assert _round_trip(body, system) == body


def test_chat_system_messages_apart_from_each_other_are_each_cut() -> None:
    body = orjson.dumps({"messages": [
        {"role": "system", "content": "first rules"},
        {"role": "user", "content": "hi"},
        {"role": "developer", "content": "second rules"},
    ]})
    system = system_prompt("chat_completions", orjson.loads(body))
    assert system is not None
    remainder = Remainder.decode(split(body, system).remainder)
    assert remainder.layout == "array" and len(remainder.spans) == 2
    assert _round_trip(body, system) == body


def test_chat_system_messages_next_to_each_other_are_cut_as_one_piece() -> None:
    body = orjson.dumps({"messages": [
        {"role": "system", "content": "first rules"},
        {"role": "developer", "content": "second rules"},
        {"role": "user", "content": "hi"},
    ]})
    system = system_prompt("chat_completions", orjson.loads(body))
    assert system is not None
    remainder = Remainder.decode(split(body, system).remainder)
    assert remainder.layout == "array" and remainder.spans == ((13, len(system) - 2),)
    assert _round_trip(body, system) == body


def test_a_long_system_prompt_whose_start_recurs_in_the_body_is_still_cut() -> None:
    rules = "a" * 400 + " and then the real rules"
    decoys = ["a" * 400 + f" decoy {i}" for i in range(12)]
    body = orjson.dumps({"model": "m", "notes": decoys, "instructions": rules, "input": "q"})
    system = system_prompt("responses", orjson.loads(body))
    assert system is not None
    remainder = Remainder.decode(split(body, system).remainder)
    assert remainder.spans == ((body.index(system), len(system)),)
    assert _round_trip(body, system) == body


def test_a_system_prompt_not_found_in_the_body_leaves_the_body_whole() -> None:
    body = b'{"messages":[{"role": "system", "content": "spaced json"}]}'
    system = b'[{"role":"system","content":"spaced json"}]'
    remainder = Remainder.decode(split(body, system).remainder)
    assert remainder.spans == () and remainder.rest == body
    assert _round_trip(body, system) == body


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(
    kind=st.sampled_from(KINDS),
    system=st.one_of(st.none(), st.text(max_size=40), json_values),
    extra=st.dictionaries(st.text(max_size=8), json_values, max_size=3),
)
def test_any_body_rebuilds_to_its_exact_bytes(kind: str, system: object, extra: dict) -> None:
    body: dict[str, object] = {**extra}
    if kind == "chat_completions":
        body["messages"] = [{"role": "user", "content": "q"},
                            {"role": "system", "content": system}]
    else:
        body["system" if kind == "messages" else "instructions"] = system
    sent = orjson.dumps(body)
    assert _round_trip(sent, system_prompt(kind, orjson.loads(sent))) == sent


@pytest.mark.parametrize("blob", [
    b"not a remainder",
    b"abgate-remainder/1 {\"layout\":\"whole\"",
    b"abgate-remainder/1 not json\nrest",
    b'abgate-remainder/1 {"system":null,"layout":"whole","spans":[],"length":9,'
    b'"truncated":false}\nrest',
    b'abgate-remainder/1 {"system":null,"layout":"whole","spans":[[0,2]],"length":6,'
    b'"truncated":false}\nrest',
    b'abgate-remainder/1 {"system":null,"layout":"odd","spans":[],"length":4,'
    b'"truncated":false}\nrest',
])
def test_a_corrupt_remainder_is_refused(blob: bytes) -> None:
    with pytest.raises(CorruptEvidence):
        Remainder.decode(blob)


def test_rebuild_refuses_a_system_blob_that_does_not_match_its_hash() -> None:
    body = orjson.dumps(body_for("messages", "rules", "q"))
    parts = split(body, b'"rules"')
    with pytest.raises(CorruptEvidence):
        rebuild(Remainder.decode(parts.remainder), b'"other"')


def test_cap_never_splits_a_utf8_character() -> None:
    content = b"a" * 9 + "é€😀".encode()  # 2-, 3- and 4-byte characters after 9 bytes
    for limit in range(9, len(content) + 1):
        capped, truncated = cap_utf8(content, limit)
        capped.decode("utf-8")  # never raises
        assert truncated == (limit < len(content))
        assert len(capped) <= limit


# -- through the recorder -------------------------------------------------------------


async def _rows(db: asyncpg.Connection) -> list[asyncpg.Record]:
    return list(await db.fetch(
        "SELECT usage_id, request_body_sha256, system_prompt_sha256, body_blob_sha256, "
        "was_truncated FROM model_experiment_request ORDER BY created_at"))


async def _bodies(db: asyncpg.Connection, store: object) -> list[StoredBody | Exception]:
    rows = await _rows(db)
    return await load_bodies(db, store,  # type: ignore[arg-type]
                             [EvidenceRef(r["request_body_sha256"], r["body_blob_sha256"])
                              for r in rows])


@pytest.mark.parametrize("kind", KINDS)
async def test_stored_evidence_rebuilds_the_bytes_whose_hash_is_on_the_row(
    kind: str, db: asyncpg.Connection, pool: asyncpg.Pool, spool_dir: Path
) -> None:
    setup = await experiment(db, api_kind=kind)
    await write(pool, [record(kind, body_for(kind, "Be kind.", f"q{i}"), setup.version_ids[0])
                       for i in range(3)], spool_dir)
    rows = await _rows(db)
    bodies = await _bodies(db, PostgresBlobStore())
    assert len(rows) == 3
    for row, body in zip(rows, bodies, strict=True):
        assert isinstance(body, StoredBody) and not body.truncated
        assert hashlib.sha256(body.content).hexdigest() == row["request_body_sha256"]


async def test_each_row_is_inserted_with_its_evidence_and_never_updated(
    db: asyncpg.Connection, pool: asyncpg.Pool, spool_dir: Path
) -> None:
    setup = await experiment(db)
    await db.execute("""
        CREATE TABLE test_updates (n integer);
        CREATE FUNCTION test_note_update() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO test_updates VALUES (1); RETURN NULL; END; $$;
        CREATE TRIGGER test_note_update AFTER UPDATE ON model_experiment_request
            FOR EACH ROW EXECUTE FUNCTION test_note_update();
        CREATE TRIGGER test_note_usage_update AFTER UPDATE ON usage
            FOR EACH ROW EXECUTE FUNCTION test_note_update();
    """)
    await write(pool, [record("chat_completions", chat_body("rules", f"q{i}"),
                              setup.version_ids[0]) for i in range(3)], spool_dir)
    rows = await _rows(db)
    assert len(rows) == 3 and all(r["body_blob_sha256"] is not None for r in rows)
    assert await db.fetchval("SELECT count(*) FROM test_updates") == 0


async def test_a_system_prompt_used_by_many_requests_is_stored_once(
    db: asyncpg.Connection, pool: asyncpg.Pool, spool_dir: Path
) -> None:
    setup = await experiment(db)
    system = "You are a careful assistant. " * 2000  # ~58 KB
    await write(pool, [record("chat_completions", chat_body(system, f"question {i}"),
                              setup.version_ids[0]) for i in range(40)], spool_dir)
    system_sha = {r["system_prompt_sha256"] for r in await _rows(db)}
    assert len(system_sha) == 1
    blobs = await db.fetch("SELECT sha256, length(content) AS size FROM prompt_blob")
    assert len(blobs) == 41  # one system blob and forty small remainders
    assert sum(1 for b in blobs if b["size"] > len(system)) == 1
    assert all(isinstance(b, StoredBody) for b in await _bodies(db, PostgresBlobStore()))


async def test_the_filesystem_backend_keeps_blobs_as_files(
    db: asyncpg.Connection, pool: asyncpg.Pool, spool_dir: Path, tmp_path: Path
) -> None:
    setup = await experiment(db)
    root = tmp_path / "blobs"
    await write(pool, [record("chat_completions", chat_body("rules", f"q{i}"),
                              setup.version_ids[0]) for i in range(3)],
                spool_dir, prompt_store=f"fs:{root}")
    assert await db.fetchval("SELECT count(*) FROM prompt_blob") == 0
    assert len([p for p in root.rglob("*") if p.is_file()]) == 4
    rows = await _rows(db)
    for row, body in zip(rows, await _bodies(db, FileBlobStore(root)), strict=True):
        assert isinstance(body, StoredBody)
        assert hashlib.sha256(body.content).hexdigest() == row["request_body_sha256"]


async def test_with_the_store_off_hashes_are_kept_and_no_content(
    db: asyncpg.Connection, pool: asyncpg.Pool, spool_dir: Path
) -> None:
    setup = await experiment(db)
    item = record("chat_completions", chat_body("rules", "q"), setup.version_ids[0])
    await write(pool, [item], spool_dir, prompt_store="off")
    [row] = await _rows(db)
    assert row["request_body_sha256"] == item.request_body_sha256
    assert row["body_blob_sha256"] is None
    assert await db.fetchval("SELECT count(*) FROM prompt_blob") == 0


async def test_a_body_over_4_mib_is_stored_as_a_utf8_safe_part(
    db: asyncpg.Connection, pool: asyncpg.Pool, spool_dir: Path
) -> None:
    setup = await experiment(db)
    # The 4 MiB cut falls inside a 3-byte character.
    filler = "x" * (MAX_CONTENT_BYTES - 40) + "€" * 100
    item = record("chat_completions", chat_body("rules", filler), setup.version_ids[0])
    assert item.was_truncated
    await write(pool, [item], spool_dir)
    [row] = await _rows(db)
    [body] = await _bodies(db, PostgresBlobStore())
    assert row["was_truncated"] and isinstance(body, StoredBody) and body.truncated
    assert len(body.content) <= MAX_CONTENT_BYTES
    body.content.decode("utf-8")
    assert orjson.dumps(chat_body("rules", filler)).startswith(body.content)


async def test_a_failed_blob_write_marks_the_row_failed_and_keeps_it(
    db: asyncpg.Connection, pool: asyncpg.Pool, spool_dir: Path, tmp_path: Path
) -> None:
    setup = await experiment(db)
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the blob directory should be")
    item = record("chat_completions", chat_body("rules", "q"), setup.version_ids[0])
    await write(pool, [item], spool_dir, prompt_store=f"fs:{blocker}")
    [row] = await _rows(db)
    assert row["usage_id"] == item.usage_id
    assert (row["request_body_sha256"], row["system_prompt_sha256"]) == ("__failed__",
                                                                         "__failed__")


async def test_a_record_without_content_is_marked_failed(
    db: asyncpg.Connection, pool: asyncpg.Pool, spool_dir: Path
) -> None:
    setup = await experiment(db)
    item = record("messages", body_for("messages", None, "q"), setup.version_ids[0])
    item.prompt_body = None  # as after a spool replay, which keeps no content
    await write(pool, [item], spool_dir)
    [row] = await _rows(db)
    assert (row["request_body_sha256"], row["system_prompt_sha256"]) == ("__failed__",
                                                                         "__absent__")
