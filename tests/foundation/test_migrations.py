"""The migration runner: apply, roll back, checksums, locking and status."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from pathlib import Path

import asyncpg
import pytest

from abgate.db import connect
from abgate.migrations import (
    Migration,
    MigrationError,
    load_migrations,
    migrate_down,
    migrate_status,
    migrate_up,
)

from .catalog import schema_snapshot, tables

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
MIGRATIONS = load_migrations()


def edited(migrations: list[Migration], version: int) -> list[Migration]:
    """The same list with one migration's up file changed (as if edited after applying)."""
    return [
        dataclasses.replace(m, up_sql=m.up_sql + "\n-- edited\n") if m.version == version else m
        for m in migrations
    ]


async def applied_versions(conn: asyncpg.Connection) -> list[int]:
    rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
    return [row["version"] for row in rows]


async def advisory_locks_held(conn: asyncpg.Connection) -> int:
    """Advisory locks held in this test's database (other databases run other tests)."""
    count: int = await conn.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    return count


# -- up -----------------------------------------------------------------------


async def test_up_on_an_empty_database_applies_every_migration_in_order(
    empty_db: asyncpg.Connection,
) -> None:
    done = await migrate_up(empty_db)
    assert [m.version for m in done] == [m.version for m in MIGRATIONS]
    assert await applied_versions(empty_db) == [m.version for m in MIGRATIONS]


async def test_up_records_the_sha256_of_each_up_file(empty_db: asyncpg.Connection) -> None:
    await migrate_up(empty_db)
    recorded = {
        f"{row['version']:04d}_{row['name']}.up.sql": row["checksum"]
        for row in await empty_db.fetch("SELECT version, name, checksum FROM schema_migrations")
    }
    on_disk = {name: hashlib.sha256((SQL_DIR / name).read_bytes()).hexdigest() for name in recorded}
    assert recorded == on_disk


async def test_running_up_again_applies_nothing(empty_db: asyncpg.Connection) -> None:
    await migrate_up(empty_db)
    before = await schema_snapshot(empty_db)
    first_applied = await empty_db.fetch("SELECT * FROM schema_migrations ORDER BY version")

    assert await migrate_up(empty_db) == []

    assert await schema_snapshot(empty_db) == before
    assert await empty_db.fetch("SELECT * FROM schema_migrations ORDER BY version") == first_applied


async def test_a_failing_migration_is_rolled_back_whole_and_not_recorded(
    empty_db: asyncpg.Connection,
) -> None:
    broken = Migration(9001, "broken", "CREATE TABLE half_done (id int); SELECT 1 / 0;", "")

    with pytest.raises(asyncpg.DivisionByZeroError):
        await migrate_up(empty_db, [*MIGRATIONS, broken])

    assert await applied_versions(empty_db) == [m.version for m in MIGRATIONS]
    assert "half_done" not in await tables(empty_db)
    assert await advisory_locks_held(empty_db) == 0


async def test_two_concurrent_runners_apply_each_migration_once(
    empty_db: asyncpg.Connection, empty_database_url: str
) -> None:
    other = await connect(empty_database_url)
    try:
        results = await asyncio.gather(migrate_up(empty_db), migrate_up(other))
    finally:
        await other.close()

    assert sorted(len(done) for done in results) == [0, len(MIGRATIONS)]
    assert await applied_versions(empty_db) == [m.version for m in MIGRATIONS]


# -- down -----------------------------------------------------------------------


async def test_down_all_then_up_recreates_an_identical_schema(
    empty_db: asyncpg.Connection,
) -> None:
    await migrate_up(empty_db)
    original = await schema_snapshot(empty_db)

    await migrate_down(empty_db, len(MIGRATIONS))
    await migrate_up(empty_db)

    assert await schema_snapshot(empty_db) == original


async def test_down_all_leaves_only_the_bookkeeping_table(empty_db: asyncpg.Connection) -> None:
    await migrate_up(empty_db)
    await migrate_down(empty_db, len(MIGRATIONS))

    snapshot = await schema_snapshot(empty_db)
    assert {row[0] for row in snapshot["relations"]} == {"schema_migrations"}
    assert snapshot["functions"] == []
    assert snapshot["triggers"] == []
    assert await applied_versions(empty_db) == []


async def test_down_n_rolls_back_exactly_the_newest_n(empty_db: asyncpg.Connection) -> None:
    await migrate_up(empty_db, MIGRATIONS[:2])
    after_two = await schema_snapshot(empty_db)
    await migrate_up(empty_db)

    undone = await migrate_down(empty_db, len(MIGRATIONS) - 2)

    assert [m.version for m in undone] == [m.version for m in reversed(MIGRATIONS[2:])]
    assert await applied_versions(empty_db) == [m.version for m in MIGRATIONS[:2]]
    assert await schema_snapshot(empty_db) == after_two


async def test_each_down_file_exactly_undoes_its_up_file(empty_db: asyncpg.Connection) -> None:
    await migrate_up(empty_db, [])  # creates only the bookkeeping table
    snapshots = [await schema_snapshot(empty_db)]
    for count in range(1, len(MIGRATIONS) + 1):
        await migrate_up(empty_db, MIGRATIONS[:count])
        snapshots.append(await schema_snapshot(empty_db))

    for count in range(len(MIGRATIONS), 0, -1):
        [undone] = await migrate_down(empty_db, 1)
        assert undone.version == MIGRATIONS[count - 1].version
        assert await schema_snapshot(empty_db) == snapshots[count - 1], undone.name


async def test_down_more_steps_than_applied_rolls_back_everything(
    empty_db: asyncpg.Connection,
) -> None:
    await migrate_up(empty_db)
    undone = await migrate_down(empty_db, 999)
    assert len(undone) == len(MIGRATIONS)
    assert await applied_versions(empty_db) == []


@pytest.mark.parametrize("steps", [0, -1])
async def test_down_needs_a_positive_number_of_steps(
    empty_db: asyncpg.Connection, steps: int
) -> None:
    await migrate_up(empty_db)
    with pytest.raises(MigrationError, match="positive"):
        await migrate_down(empty_db, steps)
    assert await applied_versions(empty_db) == [m.version for m in MIGRATIONS]


# -- drift ----------------------------------------------------------------------


async def test_up_refuses_when_an_applied_migration_changed_and_applies_nothing(
    empty_db: asyncpg.Connection,
) -> None:
    await migrate_up(empty_db, MIGRATIONS[:2])
    changed = MIGRATIONS[1]
    before = await schema_snapshot(empty_db)

    with pytest.raises(MigrationError, match=f"{changed.version:04d}_{changed.name}") as info:
        await migrate_up(empty_db, edited(MIGRATIONS, changed.version))

    assert "checksum" in str(info.value)
    assert await applied_versions(empty_db) == [m.version for m in MIGRATIONS[:2]]
    assert await schema_snapshot(empty_db) == before
    assert await advisory_locks_held(empty_db) == 0


async def test_down_refuses_when_an_applied_migration_changed(
    empty_db: asyncpg.Connection,
) -> None:
    await migrate_up(empty_db)
    changed = MIGRATIONS[0]

    with pytest.raises(MigrationError, match=f"{changed.version:04d}_{changed.name}"):
        await migrate_down(empty_db, 1, edited(MIGRATIONS, changed.version))

    assert await applied_versions(empty_db) == [m.version for m in MIGRATIONS]


async def test_up_refuses_when_the_file_of_an_applied_migration_is_missing(
    empty_db: asyncpg.Connection,
) -> None:
    await migrate_up(empty_db)
    missing = MIGRATIONS[-1]

    with pytest.raises(MigrationError, match=f"{missing.version:04d}_{missing.name}") as info:
        await migrate_up(empty_db, MIGRATIONS[:-1])

    assert "missing" in str(info.value)
    assert await applied_versions(empty_db) == [m.version for m in MIGRATIONS]


# -- status ---------------------------------------------------------------------


async def test_status_lists_applied_then_pending_migrations(
    empty_db: asyncpg.Connection,
) -> None:
    await migrate_up(empty_db, MIGRATIONS[:2])

    statuses = await migrate_status(empty_db)

    assert [(s.version, s.name) for s in statuses] == [(m.version, m.name) for m in MIGRATIONS]
    assert [s.state for s in statuses] == ["applied"] * 2 + ["pending"] * (len(MIGRATIONS) - 2)
    assert all(s.applied_at is not None for s in statuses[:2])
    assert all(s.applied_at is None for s in statuses[2:])


async def test_status_marks_an_edited_applied_migration_as_changed(
    empty_db: asyncpg.Connection,
) -> None:
    await migrate_up(empty_db)
    statuses = await migrate_status(empty_db, edited(MIGRATIONS, MIGRATIONS[0].version))
    assert [s.state for s in statuses] == ["changed"] + ["applied"] * (len(MIGRATIONS) - 1)


async def test_status_marks_an_applied_migration_without_a_file_as_missing(
    empty_db: asyncpg.Connection,
) -> None:
    await migrate_up(empty_db)
    statuses = await migrate_status(empty_db, MIGRATIONS[:-1])
    assert statuses[-1].version == MIGRATIONS[-1].version
    assert statuses[-1].state == "missing-file"


async def test_status_of_a_never_migrated_database_is_all_pending_and_changes_nothing(
    empty_db: asyncpg.Connection,
) -> None:
    statuses = await migrate_status(empty_db)
    assert [s.state for s in statuses] == ["pending"] * len(MIGRATIONS)
    assert await tables(empty_db) == set()


# -- load_migrations ------------------------------------------------------------


def write(directory: Path, **files: str) -> Path:
    for name, sql in files.items():
        (directory / name).write_text(sql, encoding="utf-8")
    return directory


def test_load_pairs_up_and_down_files_in_version_order(tmp_path: Path) -> None:
    write(
        tmp_path,
        **{
            "0002_second.up.sql": "CREATE TABLE b ();",
            "0002_second.down.sql": "DROP TABLE b;",
            "0001_first.up.sql": "CREATE TABLE a ();",
            "0001_first.down.sql": "DROP TABLE a;",
        },
    )
    assert load_migrations(tmp_path) == [
        Migration(1, "first", "CREATE TABLE a ();", "DROP TABLE a;"),
        Migration(2, "second", "CREATE TABLE b ();", "DROP TABLE b;"),
    ]


def test_load_rejects_an_up_file_without_a_down_file(tmp_path: Path) -> None:
    write(tmp_path, **{"0001_orphan.up.sql": "CREATE TABLE a ();"})
    with pytest.raises(MigrationError, match="0001_orphan has no down file"):
        load_migrations(tmp_path)


def test_load_rejects_a_down_file_without_an_up_file(tmp_path: Path) -> None:
    write(tmp_path, **{"0001_orphan.down.sql": "DROP TABLE a;"})
    with pytest.raises(MigrationError, match="0001_orphan has no up file"):
        load_migrations(tmp_path)


@pytest.mark.parametrize(
    "name", ["1_short.up.sql", "0001_Upper.up.sql", "0001_first.sql", "0001_first.sideways.sql"]
)
def test_load_rejects_a_file_that_is_not_named_like_a_migration(tmp_path: Path, name: str) -> None:
    write(tmp_path, **{name: "SELECT 1;"})
    with pytest.raises(MigrationError, match=name.replace(".", r"\.")):
        load_migrations(tmp_path)


def test_load_rejects_two_names_for_one_version(tmp_path: Path) -> None:
    write(
        tmp_path,
        **{
            "0001_first.up.sql": "CREATE TABLE a ();",
            "0001_first.down.sql": "DROP TABLE a;",
            "0001_other.up.sql": "CREATE TABLE b ();",
            "0001_other.down.sql": "DROP TABLE b;",
        },
    )
    with pytest.raises(MigrationError, match="0001 has two names"):
        load_migrations(tmp_path)
