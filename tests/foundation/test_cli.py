"""The `abgate` console script, run as an operator would: exit codes and output."""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from abgate import cli
from abgate.config import Settings
from abgate.migrations import load_migrations

MIGRATION_NAMES = [f"{m.version:04d}_{m.name}" for m in load_migrations()]
KEY_A = base64.b64encode(b"A" * 32).decode()
KEY_B = base64.b64encode(b"B" * 32).decode()


def _console_script() -> str:
    found = shutil.which("abgate", path=str(Path(sys.executable).parent)) or shutil.which("abgate")
    assert found, "the abgate console script is not installed"
    return found


ABGATE = _console_script()


def abgate(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the console script with only the given ABGATE_* variables set."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ABGATE_")}
    return subprocess.run(
        [ABGATE, *args], env=clean | env, capture_output=True, text=True, timeout=60, check=False
    )


def single_line(text: str) -> bool:
    return text.strip() != "" and "\n" not in text.strip()


def month_name(moment: datetime) -> str:
    return f"model_experiment_request_{moment:%Y_%m}"


# -- migrate --------------------------------------------------------------------


def test_migrate_up_applies_every_migration(empty_database_url: str) -> None:
    result = abgate("migrate", "up", ABGATE_DATABASE_URL=empty_database_url)
    assert result.returncode == 0, result.stderr
    assert [f"applied {name}" for name in MIGRATION_NAMES] == result.stdout.splitlines()[:-1]


def test_migrate_up_twice_reports_that_nothing_is_pending(empty_database_url: str) -> None:
    abgate("migrate", "up", ABGATE_DATABASE_URL=empty_database_url)
    result = abgate("migrate", "up", ABGATE_DATABASE_URL=empty_database_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "nothing to apply; database is up to date"


def test_migrate_without_an_action_means_up(empty_database_url: str) -> None:
    result = abgate("migrate", ABGATE_DATABASE_URL=empty_database_url)
    assert result.returncode == 0, result.stderr
    assert f"applied {MIGRATION_NAMES[-1]}" in result.stdout


def test_migrate_down_999_then_up_round_trips(empty_database_url: str) -> None:
    abgate("migrate", "up", ABGATE_DATABASE_URL=empty_database_url)

    down = abgate("migrate", "down", "999", ABGATE_DATABASE_URL=empty_database_url)
    up = abgate("migrate", "up", ABGATE_DATABASE_URL=empty_database_url)

    assert down.returncode == 0, down.stderr
    assert down.stdout.splitlines() == [
        *(f"rolled back {name}" for name in reversed(MIGRATION_NAMES)),
        f"{len(MIGRATION_NAMES)} migration(s) rolled back",
    ]
    assert up.returncode == 0, up.stderr
    assert up.stdout.splitlines()[-1] == f"{len(MIGRATION_NAMES)} migration(s) applied"


def test_migrate_down_zero_exits_2(empty_database_url: str) -> None:
    result = abgate("migrate", "down", "0", ABGATE_DATABASE_URL=empty_database_url)
    assert result.returncode == 2
    assert single_line(result.stderr)
    assert "positive" in result.stderr


def test_migrate_status_shows_each_migration_as_pending_then_applied(
    empty_database_url: str,
) -> None:
    before = abgate("migrate", "status", ABGATE_DATABASE_URL=empty_database_url)
    abgate("migrate", "up", ABGATE_DATABASE_URL=empty_database_url)
    after = abgate("migrate", "status", ABGATE_DATABASE_URL=empty_database_url)

    assert before.returncode == after.returncode == 0
    assert [line.split()[:2] for line in before.stdout.splitlines()] == [
        [name, "pending"] for name in MIGRATION_NAMES
    ]
    assert [line.split()[:2] for line in after.stdout.splitlines()] == [
        [name, "applied"] for name in MIGRATION_NAMES
    ]


async def test_migrate_up_refuses_a_changed_migration_with_exit_2(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("UPDATE schema_migrations SET checksum = 'tampered' WHERE version = 1")
    finally:
        await conn.close()

    result = abgate("migrate", "up", ABGATE_DATABASE_URL=database_url)

    assert result.returncode == 2
    assert single_line(result.stderr)
    assert MIGRATION_NAMES[0] in result.stderr
    assert "checksum" in result.stderr


def test_migrate_against_an_unreachable_database_exits_2_with_one_line() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql://abgate:db-password-123@127.0.0.1:{port}/abgate"

    result = abgate("migrate", "status", ABGATE_DATABASE_URL=url)

    assert result.returncode == 2
    assert single_line(result.stderr)
    assert "db-password-123" not in result.stderr


# -- partitions -----------------------------------------------------------------


def test_partitions_ensure_ahead_1_creates_this_month_and_the_next(database_url: str) -> None:
    now = datetime.now(UTC)
    next_month = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)

    result = abgate("partitions", "ensure", "--ahead", "1", ABGATE_DATABASE_URL=database_url)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"partition {month_name(now)} ready",
        f"partition {month_name(next_month)} ready",
    ]


def test_partitions_ensure_with_negative_ahead_exits_2(database_url: str) -> None:
    result = abgate("partitions", "ensure", "--ahead", "-1", ABGATE_DATABASE_URL=database_url)
    assert result.returncode == 2
    assert single_line(result.stderr)


# -- keygen ---------------------------------------------------------------------


def test_keygen_prints_a_key_entry_that_settings_accept() -> None:
    result = abgate("keygen")

    assert result.returncode == 0, result.stderr
    assert single_line(result.stdout)
    entry = result.stdout.strip()
    settings = Settings.from_env({"ABGATE_ENCRYPTION_KEYS": entry}, require_database=False)
    [key] = settings.encryption_keys
    assert key.kid == entry.split(":", 1)[0]
    assert len(key.key) == 32


def test_keygen_prints_a_new_key_each_time() -> None:
    first, second = abgate("keygen").stdout, abgate("keygen").stdout
    assert first.split(":", 1)[1] != second.split(":", 1)[1]


# -- malformed settings ---------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "secrets"),
    [
        pytest.param(
            "ABGATE_DATABASE_URL",
            "mysql://app:hunter2-db-secret@db.example/app",
            ["hunter2-db-secret"],
            id="DSN with the wrong scheme",
        ),
        pytest.param(
            "ABGATE_DATABASE_URL",
            "postgresql://app:hunter2-db-secret@[::1/app",
            ["hunter2-db-secret"],
            id="DSN that is not a URL",
        ),
        pytest.param(
            "ABGATE_ENCRYPTION_KEYS",
            "k1:" + base64.b64encode(b"sixteen-byte-key").decode(),
            [base64.b64encode(b"sixteen-byte-key").decode()],
            id="16-byte key",
        ),
        pytest.param(
            "ABGATE_ENCRYPTION_KEYS",
            "k1:not*base64*key-secret",
            ["not*base64*key-secret"],
            id="key that is not base64",
        ),
        pytest.param(
            "ABGATE_ENCRYPTION_KEYS", f"bad kid!:{KEY_A}", [KEY_A], id="kid with bad characters"
        ),
        pytest.param(
            "ABGATE_ENCRYPTION_KEYS", f"k1:{KEY_A},k1:{KEY_B}", [KEY_A, KEY_B], id="duplicate kid"
        ),
    ],
)
def test_malformed_setting_exits_2_naming_the_variable_without_the_secret(
    variable: str, value: str, secrets: list[str]
) -> None:
    env = {"ABGATE_DATABASE_URL": "postgresql://app@127.0.0.1:5432/app", variable: value}

    result = abgate("migrate", "status", **env)

    assert result.returncode == 2
    assert single_line(result.stderr)
    assert variable in result.stderr
    for secret in secrets:
        assert secret not in result.stderr
        assert secret not in result.stdout


def test_missing_database_url_exits_2_naming_it() -> None:
    result = abgate("migrate", "status")
    assert result.returncode == 2
    assert single_line(result.stderr)
    assert "ABGATE_DATABASE_URL" in result.stderr


# -- component commands ---------------------------------------------------------


def test_a_component_that_is_not_built_exits_2_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(cli._COMPONENT_MODULES, "export", "admin.not_built_yet_for_test")

    code = cli.main(["export", "--experiment", "x"])

    assert code == 2
    err = capsys.readouterr().err
    assert single_line(err)
    assert "'export' is not available yet" in err


def test_a_component_with_a_missing_dependency_is_not_reported_as_unbuilt(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # component.cli_tokens exists but imports component.cli, which does not: a broken
    # install must fail loudly, not hide behind "not available yet" because the
    # missing module's name happens to prefix the component's.
    package = tmp_path / "component_for_test"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "cli_tokens.py").write_text(
        textwrap.dedent(
            """
            from component_for_test.cli import shared_option  # noqa: F401

            def command_token(argv):
                return 0
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli._COMPONENT_MODULES, "token", "component_for_test.cli_tokens")

    with pytest.raises(ModuleNotFoundError, match=r"component_for_test\.cli"):
        cli.main(["token", "create"])
