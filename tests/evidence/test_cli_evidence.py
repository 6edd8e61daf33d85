"""wipe-user, retention and the redacted, signed partner export."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import orjson
import pytest
from evidence_helpers import body_for, chat_body, experiment, record, write

from abgate.config import Settings
from abgate.prompt_store import PostgresBlobStore
from abgate.redactor import REDACTOR_VERSION, Redactor
from admin.cli_evidence import (
    command_export,
    command_retention,
    command_wipe_user,
    retention,
    wipe_user,
)

# Fixed values (test ids must be the same in every xdist worker) that look random.
PLANTED = [
    "sk-ant-api03-Jx7Qm2LpR9vT4wYz8KbN3sHd",
    "sk-proj-Vb3Nq8ZkT1mR6pW2xL9sJ4cF7hD",
    "AKIAZ7QK4M2PX9WJ3RTE",
    "ghp_4f9c2a7e1b8d3f6a0c5e9b2d7f1a4c8e3b6d",
    "xoxb-1234567890-9f8e7d6c5b4a",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEifQ.Qm9Xc2Z1bmt5U2lnbmF0dXJl",
    "jane.doe@example.com",
    "q8Zr2VfK9xLm4TpW7nYc3HbJ6sDg1QeA5uRk0oXz",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1L\n-----END RSA PRIVATE KEY-----",
    "CUSTOM-0001-ZZ",
]


def _env(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    assert settings.database_url is not None
    monkeypatch.setenv("ABGATE_DATABASE_URL", settings.database_url)
    monkeypatch.delenv("ABGATE_PROMPT_STORE", raising=False)


# -- redactor -----------------------------------------------------------------------------


@pytest.mark.parametrize("secret", PLANTED[:-1])
def test_the_redactor_removes_each_planted_secret(secret: str) -> None:
    assert secret not in Redactor().redact_text(f"here: {secret} (keep this)")
    assert "keep this" in Redactor().redact_text(f"here: {secret} (keep this)")


def test_bearer_tokens_and_credentials_keep_their_label() -> None:
    text = Redactor().redact_text("Authorization: Bearer abc.def-123456 password=hunter22")
    assert text == "Authorization: Bearer [REDACTED:bearer] password=[REDACTED:credential]"


def test_plain_prose_paths_and_identifiers_survive() -> None:
    text = "Summarise /usr/local/lib/python3.11/site-packages in model_experiment_request_2026_10"
    assert Redactor().redact_text(text) == text


def test_json_loses_user_pseudonyms_and_keeps_structure() -> None:
    body = {"user": "p1", "metadata": {"user_id": "p1", "trace": "t"},
            "messages": [{"role": "user", "content": "mail jane@example.com"}]}
    assert Redactor().redact_json(body) == {
        "metadata": {"trace": "t"},
        "messages": [{"role": "user", "content": "mail [REDACTED:email]"}]}


def test_extra_patterns_change_the_version_and_bad_ones_are_refused() -> None:
    assert Redactor().version == REDACTOR_VERSION
    custom = Redactor([r"CUSTOM-\d{4}-ZZ"])
    assert custom.version.startswith(REDACTOR_VERSION + "+custom.")
    assert custom.redact_text("id CUSTOM-0001-ZZ") == "id [REDACTED:custom]"
    with pytest.raises(ValueError, match="not a valid regex"):
        Redactor(["("])


# -- wipe-user ------------------------------------------------------------------------------


async def test_wipe_user_deletes_that_users_evidence_and_only_orphaned_blobs(
    db: asyncpg.Connection, pool: asyncpg.Pool, spool_dir: Path
) -> None:
    setup = await experiment(db)
    shared = "Shared system prompt."
    mine = [record("chat_completions", chat_body(shared, f"alice {i}"), setup.version_ids[0],
                   subject=("user", "alice")) for i in range(3)]
    theirs = record("chat_completions", chat_body(shared, "bob"), setup.version_ids[0],
                    subject=("user", "bob"))
    await write(pool, [*mine, theirs], spool_dir)
    await db.execute("INSERT INTO feedback (client_request_id, allocation_subject, "
                     "subject_value, rating, comment) VALUES ('c', 'user', 'alice', 1, 'mine')")
    blobs_before = await db.fetchval("SELECT count(*) FROM prompt_blob")
    result = await wipe_user(db, "alice", PostgresBlobStore(), "cli:test")
    assert (result.requests, result.blobs, result.feedback_comments) == (3, 3, 1)
    assert await db.fetchval("SELECT count(*) FROM prompt_blob") == blobs_before - 3
    states = dict(await db.fetch("SELECT subject_value, array_agg(DISTINCT request_body_sha256 || "
                                 "'/' || system_prompt_sha256) FROM model_experiment_request "
                                 "GROUP BY 1"))
    assert states["alice"] == ["__deleted__/__deleted__"]
    assert "__deleted__" not in states["bob"][0]
    audit = await db.fetchrow("SELECT actor, after FROM audit_log WHERE action = 'user.wipe'")
    assert audit["actor"] == "cli:test"
    assert audit["after"]["user_id_sha256"] == hashlib.sha256(b"alice").hexdigest()
    assert "alice" not in orjson.dumps(audit["after"]).decode()


def test_wipe_user_command_prints_counts(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _env(monkeypatch, settings)
    assert command_wipe_user(["nobody"]) == 0
    assert "wiped the prompt evidence of 0 request(s)" in capsys.readouterr().out


# -- retention ------------------------------------------------------------------------------


async def test_retention_drops_only_partitions_older_than_n_months(
    db: asyncpg.Connection, pool: asyncpg.Pool, spool_dir: Path
) -> None:
    setup = await experiment(db)
    old, recent = datetime(2020, 3, 15, tzinfo=UTC), datetime.now(UTC)
    for moment in (old, recent):
        await db.execute("SELECT abgate_ensure_request_partition($1)", moment)
    await write(pool, [
        record("responses", body_for("responses", None, "old"), setup.version_ids[0],
               created_at=old),
        record("responses", body_for("responses", None, "new"), setup.version_ids[0],
               created_at=recent)], spool_dir)
    # The blob GC spares fresh blobs; age the old request's remainder.
    await db.execute("UPDATE prompt_blob SET created_at = $1", old)
    result = await retention(db, 1, PostgresBlobStore())
    assert result.dropped == ["model_experiment_request_2020_03"]
    assert (result.usage_rows, result.blobs) == (1, 1)
    assert await db.fetchval("SELECT count(*) FROM model_experiment_request") == 1
    assert await db.fetchval("SELECT count(*) FROM request_stats_hourly WHERE hour < $1",
                             recent.replace(day=1)) == 0
    assert await db.fetchval("SELECT count(*) FROM prompt_blob") == 1


def test_retention_needs_at_least_one_month(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _env(monkeypatch, settings)
    assert command_retention(["--keep-months", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err
    assert command_retention(["--keep-months", "1"]) == 0
    assert "no request partition" in capsys.readouterr().out


# -- export ---------------------------------------------------------------------------------


async def _export_fixture(db: asyncpg.Connection, pool: asyncpg.Pool, spool_dir: Path
                          ) -> tuple[str, list[int]]:
    setup = await experiment(db)
    prompt = " ".join(PLANTED)
    records = [record("chat_completions", chat_body(f"system {prompt}", f"user {prompt} {i}"),
                      setup.version_ids[i % 2], subject=("user", "alice-user-id"),
                      client_request_id=f"crid-secret-{i}") for i in range(10)]
    await write(pool, records, spool_dir)
    return str(setup.experiment_id), setup.version_ids


async def test_export_writes_redacted_lines_without_identities_and_a_valid_signature(
    db: asyncpg.Connection, pool: asyncpg.Pool, spool_dir: Path, settings: Settings,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    experiment_id, _ = await _export_fixture(db, pool, spool_dir)
    _env(monkeypatch, settings)
    monkeypatch.setenv("ABGATE_REDACT_PATTERNS", orjson.dumps([r"CUSTOM-\d{4}-ZZ"]).decode())
    key = tmp_path / "sign.key"
    key.write_bytes(secrets.token_bytes(32).hex().encode())
    out = tmp_path / "export.jsonl"
    code = await _run_in_thread(command_export, ["--experiment", experiment_id, "--out",
                                                 str(out), "--sign-key-file", str(key)])
    assert code == 0
    data = out.read_bytes()
    lines = [orjson.loads(line) for line in data.splitlines()]
    assert len(lines) == 10
    assert set(lines[0]) == {"internal_id", "created_at", "request_kind", "request",
                             "truncated", "redactor_version"}
    assert lines[0]["internal_id"] in ("ckpt-0", "ckpt-1")
    for secret in [*PLANTED, "alice-user-id", "crid-secret", "pseudonym-1"]:
        assert secret.encode() not in data, secret
    assert b"-----BEGIN" not in data
    signature = orjson.loads(Path(f"{out}.sig").read_bytes())
    expected = hmac.new(key.read_bytes().strip(), data, hashlib.sha256).hexdigest()
    assert signature["signature"] == expected
    assert signature["sha256"] == hashlib.sha256(data).hexdigest()


async def test_export_keeps_only_the_chosen_versions(
    db: asyncpg.Connection, pool: asyncpg.Pool, spool_dir: Path, settings: Settings,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    experiment_id, versions = await _export_fixture(db, pool, spool_dir)
    _env(monkeypatch, settings)
    out = tmp_path / "one.jsonl"
    assert await _run_in_thread(command_export, [
        "--experiment", experiment_id, "--variant-version", str(versions[1]),
        "--out", str(out)]) == 0
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert len(lines) == 5 and {line["internal_id"] for line in lines} == {"ckpt-1"}


@pytest.mark.parametrize("extra", [
    ["--variant-version", "999999"], ["--since", "yesterday"], ["--redact-pattern", "("],
    ["--sign-key-file", "/nonexistent/key"],
])
async def test_export_refuses_bad_arguments_with_exit_2(
    db: asyncpg.Connection, settings: Settings, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path, extra: list[str],
) -> None:
    setup = await experiment(db)
    _env(monkeypatch, settings)
    argv = ["--experiment", str(setup.experiment_id), "--out", str(tmp_path / "x.jsonl"), *extra]
    assert await _run_in_thread(command_export, argv) == 2
    assert not (tmp_path / "x.jsonl").exists()


async def _run_in_thread(command: object, argv: list[str]) -> int:
    """The commands run their own event loop (asyncio.run), so not on the test's loop."""
    import asyncio

    return await asyncio.to_thread(command, argv)  # type: ignore[arg-type]
