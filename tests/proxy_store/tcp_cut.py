"""An in-process TCP relay that a test can cut and restore, to take a server "down".

Cutting aborts every relayed connection and makes new ones close at once, which
is what a client sees when Postgres or Redis dies or the network drops. A
black hole instead accepts connections and never answers (a hung server or a
dropped route). Restoring relays again. Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_DEFAULT_PORTS = {"postgres": 5432, "postgresql": 5432, "redis": 6379}


class TcpCut:
    """Relays 127.0.0.1:<port> to a TCP ``(host, port)`` or a unix socket path."""

    def __init__(self, target: tuple[str, int] | str) -> None:
        self._target = target
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.is_cut = False
        self.is_black_hole = False
        self.port = 0

    @classmethod
    def for_url(cls, url: str) -> TcpCut:
        """A relay to the server of a Postgres or Redis URL (TCP or unix socket)."""
        parts = urlsplit(url)
        if parts.scheme == "unix":
            return cls(parts.path)
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
        if parts.hostname:
            return cls((parts.hostname, port))
        socket_dir = dict(parse_qsl(parts.query))["host"]  # libpq-style unix socket
        return cls(f"{socket_dir}/.s.PGSQL.{port}")

    def url_through(self, url: str) -> str:
        """``url`` pointed at this relay instead of its server."""
        parts = urlsplit(url)
        if parts.scheme == "unix":
            return f"redis://127.0.0.1:{self.port}/0"
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{self.port}" if userinfo else f"127.0.0.1:{self.port}"
        query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "host"])
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))

    async def start(self) -> TcpCut:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def cut(self) -> None:
        self.is_cut = True
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._links):
            task.cancel()

    def black_hole(self) -> None:
        self.cut()
        self.is_cut, self.is_black_hole = False, True

    def restore(self) -> None:
        self.is_cut = self.is_black_hole = False

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await asyncio.gather(*self._links, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.is_cut:
            writer.transport.abort()
            return
        if self.is_black_hole:
            await self._hold(reader, writer)
            return
        try:
            if isinstance(self._target, str):
                up_reader, up_writer = await asyncio.open_unix_connection(self._target)
            else:
                up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        task = asyncio.current_task()
        assert task is not None
        self._links.add(task)
        try:
            await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
        except (asyncio.CancelledError, OSError):
            pass
        finally:
            self._links.discard(task)
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._links.add(task)
        self._writers.add(writer)
        try:
            await reader.read()
        except (asyncio.CancelledError, OSError):
            pass
        finally:
            self._links.discard(task)
            self._writers.discard(writer)
            writer.transport.abort()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.transport.abort()
