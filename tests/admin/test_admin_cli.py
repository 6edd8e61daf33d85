"""Operator commands: `abgate admin`, `abgate token create`, `abgate rekey`."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import urllib.request

import asyncpg
import pytest
from admin_api import ADMIN_TOKEN, API_KEY, Api

from abgate.cli import main
from abgate.config import Settings, parse_encryption_keys
from abgate.crypto import KeyRing
from admin.auth import hash_token
from admin.cli_rekey import rekey_all

OLD_KEYS = "test1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
NEW_KEY = "k2:YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY="


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    assert settings.database_url is not None
    return {"ABGATE_DATABASE_URL": settings.database_url, **extra}


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    for name in list(os.environ):
        if name.startswith("ABGATE_"):
            monkeypatch.delenv(name)
    for name, value in _env(settings).items():
        monkeypatch.setenv(name, value)


async def test_token_create_prints_a_token_that_authenticates(
    cli_env: None, api: Api, db: asyncpg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await asyncio.to_thread(main, ["token", "create", "--name", "ops", "--role",
                                          "viewer"])
    assert code == 0
    out = capsys.readouterr()
    token = out.out.strip()
    assert token.startswith("abg_") and token not in out.err
    row = await db.fetchrow("SELECT name, role, token_sha256 FROM admin_token")
    assert dict(row) == {"name": "ops", "role": "viewer", "token_sha256": hash_token(token)}
    assert (await api.as_(token).get("/api/experiments")).status == 200
    assert (await api.as_(token).post("/api/experiments", {"name": "x",
                                                           "public_model_id": "p"})).status == 403


@pytest.mark.parametrize("argv", [
    ["token", "create", "--name", "x", "--role", "root"],
    ["token", "create", "--role", "admin"],
    ["token", "create", "--name", "", "--role", "admin"],
    ["token"],
])
def test_token_create_rejects_bad_arguments(cli_env: None, argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


def test_token_create_without_database_url_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ABGATE_DATABASE_URL", raising=False)
    assert main(["token", "create", "--name", "x", "--role", "admin"]) == 2
    assert "ABGATE_DATABASE_URL" in capsys.readouterr().err


def test_admin_without_database_url_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ABGATE_DATABASE_URL", raising=False)
    assert main(["admin", "--port", "0"]) == 2
    assert "configuration error" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_admin_serves_and_stops_gracefully_on_sigterm(settings: Settings) -> None:
    port = _free_port()
    env = {**os.environ, **_env(settings, ABGATE_ADMIN_TOKEN=ADMIN_TOKEN)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "abgate.cli", "admin", "--host", "127.0.0.1", "--port",
         str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        async with asyncio.timeout(20):
            while True:
                try:
                    body = await asyncio.to_thread(
                        lambda: urllib.request.urlopen(
                            f"http://127.0.0.1:{port}/readyz", timeout=1).read())
                    break
                except OSError:
                    assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                    await asyncio.sleep(0.1)
        assert b"ready" in body
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 20)
        output = proc.stdout.read().decode() if proc.stdout else ""
        assert code == 0, output
        assert ADMIN_TOKEN not in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- rekey ---------------------------------------------------------------------------


async def _seed_versions(api: Api, count: int) -> None:
    experiment = await api.experiment()
    variant = await api.variant(experiment["id"], "a")
    for i in range(count):
        await api.version(variant["id"], api_key=f"{API_KEY}-{i}")


async def test_rekey_reencrypts_every_key_under_the_first_key(
    api: Api, db: asyncpg.Connection
) -> None:
    await _seed_versions(api, 7)
    ring = KeyRing(parse_encryption_keys(f"{NEW_KEY},{OLD_KEYS}"))
    before = await db.fetch("SELECT id, upstream, effective_at, created_at "
                            "FROM model_experiment_variant_version ORDER BY id")

    result = await rekey_all(db, ring, batch_size=3)

    assert (result.rekeyed, result.failed, result.already_current) == (7, 0, 0)
    rows = await db.fetch("SELECT id, encrypted_api_key FROM model_experiment_variant_version "
                          "ORDER BY id")
    assert [r["encrypted_api_key"]["kid"] for r in rows] == ["k2"] * 7
    new_only = KeyRing(parse_encryption_keys(NEW_KEY))
    assert [new_only.decrypt(r["encrypted_api_key"]) for r in rows] == [
        f"{API_KEY}-{i}" for i in range(7)]
    after = await db.fetch("SELECT id, upstream, effective_at, created_at "
                           "FROM model_experiment_variant_version ORDER BY id")
    assert before == after  # nothing but the ciphertext changed


async def test_rekey_is_safe_to_rerun(api: Api, db: asyncpg.Connection) -> None:
    await _seed_versions(api, 2)
    ring = KeyRing(parse_encryption_keys(f"{NEW_KEY},{OLD_KEYS}"))
    await rekey_all(db, ring)
    blobs = await db.fetch("SELECT encrypted_api_key FROM model_experiment_variant_version")
    again = await rekey_all(db, ring)
    assert (again.rekeyed, again.already_current) == (0, 2)
    assert await db.fetch("SELECT encrypted_api_key FROM model_experiment_variant_version") \
        == blobs


async def test_rekey_counts_keys_it_cannot_decrypt(
    api: Api, db: asyncpg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    await _seed_versions(api, 2)
    ring = KeyRing(parse_encryption_keys(NEW_KEY))  # lacks the old key
    result = await rekey_all(db, ring)
    assert (result.rekeyed, result.failed) == (0, 2)
    assert "unknown key id" in capsys.readouterr().err


async def test_rekey_command_prints_counts_and_no_key_material(
    api: Api, settings: Settings, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await _seed_versions(api, 3)
    for name, value in _env(settings, ABGATE_ENCRYPTION_KEYS=f"{NEW_KEY},{OLD_KEYS}").items():
        monkeypatch.setenv(name, value)
    code = await asyncio.to_thread(main, ["rekey"])
    out = capsys.readouterr()
    assert code == 0
    assert "rekeyed 3 key(s) under 'k2'" in out.out
    for secret in (API_KEY, NEW_KEY.split(":")[1], OLD_KEYS.split(":")[1]):
        assert secret not in out.out + out.err


def test_rekey_without_keys_exits_2(
    cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["rekey"]) == 2
    assert "ABGATE_ENCRYPTION_KEYS" in capsys.readouterr().err


async def test_ordinary_updates_of_versions_are_still_refused(
    api: Api, db: asyncpg.Connection
) -> None:
    await _seed_versions(api, 1)
    with pytest.raises(asyncpg.RestrictViolationError):
        await db.execute("UPDATE model_experiment_variant_version SET encrypted_api_key = "
                         "encrypted_api_key || '{\"kid\": \"x\"}'")


async def test_rekey_mode_still_refuses_changes_to_other_columns(
    api: Api, db: asyncpg.Connection
) -> None:
    await _seed_versions(api, 1)
    async with db.transaction():
        await db.execute("SET LOCAL abgate.rekey = 'on'")
        with pytest.raises(asyncpg.RestrictViolationError):
            await db.execute("UPDATE model_experiment_variant_version "
                             "SET upstream = '{\"internal_id\": \"evil\"}'")
    assert await db.fetchval(
        "SELECT upstream->>'internal_id' FROM model_experiment_variant_version") != "evil"
