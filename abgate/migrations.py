"""Numbered up/down SQL migrations with an advisory lock and checksums.

Files live in ``sql/`` as ``NNNN_name.up.sql`` and ``NNNN_name.down.sql``.
Each file is applied in its own transaction and recorded in
``schema_migrations`` with the sha256 of its up file. The runner holds a
session advisory lock for its whole run, so a second runner waits and then
finds nothing to do. A recorded checksum that no longer matches the file on
disk stops every operation: applied migrations are history and must not change.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

__all__ = [
    "Migration",
    "MigrationError",
    "MigrationStatus",
    "ensure_partitions",
    "load_migrations",
    "migrate_down",
    "migrate_status",
    "migrate_up",
]

# Arbitrary constant; the same for every abgate process and database.
_LOCK_KEY = 0x4A_B6_A7_E0_01
_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.(up|down)\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(RuntimeError):
    """The migration set or the database is in a state the runner refuses."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    up_sql: str
    down_sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.up_sql.encode()).hexdigest()


@dataclass(frozen=True)
class MigrationStatus:
    version: int
    name: str
    state: str  # applied | pending | changed | missing-file
    applied_at: datetime | None


def _default_dir() -> Path:
    """``sql/`` of a checkout, else the copy installed as package data (``abgate/sql``)."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "sql", here / "sql"):
        if candidate.is_dir() and any(candidate.glob("*.sql")):
            return candidate
    raise MigrationError("migration files not found (expected sql/*.sql)")


def load_migrations(directory: Path | None = None) -> list[Migration]:
    """Read and pair the up/down files; both halves must exist."""
    directory = directory or _default_dir()
    halves: dict[int, dict[str, str]] = {}
    names: dict[int, str] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_RE.match(path.name)
        if not match:
            raise MigrationError(f"unexpected file in migrations directory: {path.name}")
        version, name, direction = int(match[1]), match[2], match[3]
        if names.setdefault(version, name) != name:
            raise MigrationError(f"migration {version:04d} has two names")
        halves.setdefault(version, {})[direction] = path.read_text(encoding="utf-8")
    if not halves:
        raise MigrationError(f"no migration files in {directory}")
    migrations = []
    for version in sorted(halves):
        pair = halves[version]
        for direction in ("up", "down"):
            if direction not in pair:
                raise MigrationError(
                    f"migration {version:04d}_{names[version]} has no {direction} file"
                )
        migrations.append(Migration(version, names[version], pair["up"], pair["down"]))
    return migrations


async def _applied(conn: asyncpg.Connection) -> dict[int, asyncpg.Record]:
    rows = await conn.fetch("SELECT version, name, checksum, applied_at FROM schema_migrations")
    return {row["version"]: row for row in rows}


def _check_drift(migrations: list[Migration], applied: dict[int, asyncpg.Record]) -> None:
    by_version = {m.version: m for m in migrations}
    for version, row in sorted(applied.items()):
        migration = by_version.get(version)
        if migration is None:
            raise MigrationError(
                f"migration {version:04d}_{row['name']} is applied but its file is missing"
            )
        if migration.checksum != row["checksum"]:
            raise MigrationError(
                f"migration {version:04d}_{row['name']} was changed after it was applied "
                "(checksum mismatch); restore the file and add a new migration instead"
            )


async def _locked(conn: asyncpg.Connection) -> None:
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    await conn.execute(_CREATE_TABLE)


async def _unlock(conn: asyncpg.Connection) -> None:
    await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)


async def migrate_up(
    conn: asyncpg.Connection, migrations: list[Migration] | None = None
) -> list[Migration]:
    """Apply every pending migration in order; returns what was applied."""
    migrations = load_migrations() if migrations is None else migrations
    await _locked(conn)
    try:
        applied = await _applied(conn)
        _check_drift(migrations, applied)
        done = []
        for migration in migrations:
            if migration.version in applied:
                continue
            async with conn.transaction():
                await conn.execute(migration.up_sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            done.append(migration)
        return done
    finally:
        await _unlock(conn)


async def migrate_down(
    conn: asyncpg.Connection, steps: int, migrations: list[Migration] | None = None
) -> list[Migration]:
    """Roll back the newest ``steps`` applied migrations; returns what was rolled back."""
    if steps < 1:
        raise MigrationError("down needs a positive number of steps")
    migrations = load_migrations() if migrations is None else migrations
    by_version = {m.version: m for m in migrations}
    await _locked(conn)
    try:
        applied = await _applied(conn)
        _check_drift(migrations, applied)
        undone = []
        for version in sorted(applied, reverse=True)[:steps]:
            migration = by_version[version]
            async with conn.transaction():
                await conn.execute(migration.down_sql)
                await conn.execute("DELETE FROM schema_migrations WHERE version = $1", version)
            undone.append(migration)
        return undone
    finally:
        await _unlock(conn)


async def migrate_status(
    conn: asyncpg.Connection, migrations: list[Migration] | None = None
) -> list[MigrationStatus]:
    """Every known migration with its state; changes nothing."""
    migrations = load_migrations() if migrations is None else migrations
    # Read-only: a database never migrated simply has everything pending.
    has_table = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    applied = await _applied(conn) if has_table else {}
    statuses = []
    for migration in migrations:
        row = applied.pop(migration.version, None)
        if row is None:
            statuses.append(MigrationStatus(migration.version, migration.name, "pending", None))
        else:
            state = "applied" if row["checksum"] == migration.checksum else "changed"
            statuses.append(
                MigrationStatus(migration.version, migration.name, state, row["applied_at"])
            )
    for version, row in sorted(applied.items()):
        statuses.append(MigrationStatus(version, row["name"], "missing-file", row["applied_at"]))
    return statuses


def _add_months(moment: datetime, months: int) -> datetime:
    month_index = moment.month - 1 + months
    return moment.replace(
        year=moment.year + month_index // 12, month=month_index % 12 + 1, day=1
    )


async def ensure_partitions(
    conn: asyncpg.Connection, ahead: int = 3, now: datetime | None = None
) -> list[str]:
    """Create the request partitions for the current month and ``ahead`` more."""
    if ahead < 0:
        raise MigrationError("--ahead must be >= 0")
    start = (now or datetime.now(UTC)).astimezone(UTC).replace(
        day=1, hour=0, minute=0, second=0, microsecond=0
    )
    names = []
    for offset in range(ahead + 1):
        name = await conn.fetchval(
            "SELECT abgate_ensure_request_partition($1)", _add_months(start, offset)
        )
        names.append(name)
    return names
