"""Catalog snapshots of the public schema, for comparing schemas across migrations."""

from __future__ import annotations

from typing import Any

import asyncpg

# Each query returns rows that identify one schema object completely, without OIDs.
_QUERIES: dict[str, str] = {
    "relations": """
        SELECT c.relname, c.relkind::text, pg_get_partkeydef(c.oid)
        FROM pg_class c
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
    """,
    "columns": """
        SELECT table_name, column_name, ordinal_position, data_type, is_nullable,
               column_default, is_identity, identity_generation
        FROM information_schema.columns WHERE table_schema = 'public'
    """,
    "constraints": """
        SELECT conrelid::regclass::text, conname, contype::text, pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace = 'public'::regnamespace
    """,
    "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'",
    "triggers": """
        SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid)
        FROM pg_trigger WHERE NOT tgisinternal
    """,
    "functions": """
        SELECT proname, pg_get_function_identity_arguments(oid), pg_get_functiondef(oid)
        FROM pg_proc WHERE pronamespace = 'public'::regnamespace
    """,
}


async def schema_snapshot(conn: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every table, column, constraint, index, trigger and function of the public schema."""
    return {
        kind: sorted(tuple(row) for row in await conn.fetch(query))
        for kind, query in _QUERIES.items()
    }


async def tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch(
        "SELECT relname FROM pg_class"
        " WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p')"
    )
    return {row["relname"] for row in rows}


async def integrity_rules(conn: asyncpg.Connection) -> set[str]:
    """Names of every rule a bad row can violate: CHECK, UNIQUE, FK, natural primary
    keys, standalone unique indexes and user triggers (partition clones excluded).

    A primary key on a single identity or defaulted column is a surrogate key no
    insert can collide with, so it is not a rule worth a test.
    """
    rows = await conn.fetch(
        """
        SELECT con.conname AS name
        FROM pg_constraint con
        WHERE con.connamespace = 'public'::regnamespace
          AND con.conparentid = 0
          AND con.conrelid <> 'schema_migrations'::regclass
          AND (con.contype IN ('c', 'u', 'f', 'x')
               OR (con.contype = 'p' AND NOT (
                   cardinality(con.conkey) = 1 AND EXISTS (
                       SELECT 1 FROM pg_attribute a
                       WHERE a.attrelid = con.conrelid AND a.attnum = con.conkey[1]
                         AND (a.attidentity <> '' OR a.atthasdef)))))
        UNION ALL
        SELECT i.relname
        FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
        WHERE i.relnamespace = 'public'::regnamespace AND x.indisunique
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)
          AND NOT i.relispartition
        UNION ALL
        SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgparentid = 0
        """
    )
    return {row["name"] for row in rows}
