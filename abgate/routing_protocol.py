"""How routing changes travel from the admin app to every proxy.

Both sides import this module; it is the whole protocol.

Versions
    ``routing_config_version_seq`` is a monotonic Postgres sequence. Every
    routing-affecting admin mutation (activate, pause, complete, new version,
    rotate-key) calls :func:`bump_version` inside its own transaction. That takes
    the next value ``v`` and upserts ``routing_config_version(public_model_id, v)``,
    so the row commits or rolls back together with the change it describes.
    Names, descriptions, labels and archive flags do not affect routing and
    do not bump.

Push (sub-second)
    After the transaction commits, the admin app deletes the Redis snapshot key
    of the public id and publishes an :class:`Invalidation` (public id, ``v`` and
    the new membership set) on :func:`channel`. Each proxy raises its fence for
    that public id to ``v``, drops its local snapshot and replaces its membership
    set. Publication failures are logged and counted, never raised: the
    mutation has already committed and the poll below catches up.

Poll (safety net, every :data:`POLL_INTERVAL_S`)
    Each proxy runs :data:`CHANGES_SINCE_SQL` with the highest version it has
    seen. Rows it has not seen are treated exactly like pushed invalidations,
    and the membership set is reloaded with :data:`MEMBERSHIP_SQL`. With Redis
    down, this bounds propagation to a few seconds.

Fencing
    A snapshot carries the version of the ``routing_config_version`` row read in
    the same Postgres transaction as the snapshot itself. A proxy never caches
    or serves a snapshot whose version is lower than its fence for that public
    id; a stale Redis copy is ignored and re-read from Postgres. Snapshots are
    written to Redis under :func:`snapshot_key` by the proxy that loaded them.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import orjson

__all__ = [
    "CHANGES_SINCE_SQL",
    "MEMBERSHIP_SQL",
    "POLL_INTERVAL_S",
    "Invalidation",
    "ProtocolError",
    "bump_version",
    "channel",
    "current_members",
    "snapshot_key",
]

POLL_INTERVAL_S = 2.0

MEMBERSHIP_SQL = """
SELECT DISTINCT public_model_id FROM model_experiment WHERE status IN ('active', 'paused')
"""

CHANGES_SINCE_SQL = """
SELECT public_model_id, version FROM routing_config_version WHERE version > $1 ORDER BY version
"""

_BUMP_SQL = """
INSERT INTO routing_config_version (public_model_id, version, updated_at)
VALUES ($1, nextval('routing_config_version_seq'), now())
ON CONFLICT (public_model_id)
DO UPDATE SET version = EXCLUDED.version, updated_at = EXCLUDED.updated_at
RETURNING version
"""


class ProtocolError(ValueError):
    """A message on the channel is not a valid invalidation."""


@dataclass(frozen=True)
class Invalidation:
    public_model_id: str
    version: int
    members: frozenset[str]

    def encode(self) -> bytes:
        return orjson.dumps(
            {"public_model_id": self.public_model_id, "version": self.version,
             "members": sorted(self.members)}
        )

    @classmethod
    def decode(cls, payload: bytes | str) -> Invalidation:
        try:
            data = orjson.loads(payload)
            public_model_id, version, members = (
                data["public_model_id"], data["version"], data["members"]
            )
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise ProtocolError("malformed routing invalidation") from None
        if (
            not isinstance(public_model_id, str)
            or not isinstance(version, int)
            or isinstance(version, bool)
            or not isinstance(members, list)
            or not all(isinstance(m, str) for m in members)
        ):
            raise ProtocolError("malformed routing invalidation")
        return cls(public_model_id, version, frozenset(members))


def channel(namespace: str) -> str:
    """The pub/sub channel of one abgate deployment (namespace isolates tests too)."""
    return f"{namespace}:routing"


def snapshot_key(namespace: str, public_model_id: str) -> str:
    return f"{namespace}:snapshot:{public_model_id}"


async def bump_version(conn: asyncpg.Connection, public_model_id: str) -> int:
    """Take the next routing version for ``public_model_id``.

    Call it inside the mutation's own transaction so both commit together.
    """
    version: int = await conn.fetchval(_BUMP_SQL, public_model_id)
    return version


async def current_members(conn: asyncpg.Connection) -> frozenset[str]:
    """Public ids with an active or paused experiment."""
    return frozenset(row[0] for row in await conn.fetch(MEMBERSHIP_SQL))
