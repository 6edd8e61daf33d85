"""``abgate admin [--host 0.0.0.0] [--port 8081]``: serve the control plane."""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Sequence

from aiohttp import web

from abgate.config import Settings
from admin.app import create_app

__all__ = ["command_admin"]

log = logging.getLogger("abgate.admin")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="abgate admin", description="run the control plane")
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=8081, help="port to bind (default 8081)")
    return parser


def _event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # uvloop is optional (e.g. on Windows)
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def command_admin(argv: Sequence[str]) -> int:
    """Run until SIGINT/SIGTERM; in-flight requests finish before the pool closes."""
    args = _parser().parse_args(list(argv))
    if not 0 <= args.port <= 65535:
        _parser().error("--port must be 0-65535")
    settings = Settings.from_env()  # ConfigError propagates: the CLI exits 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    loop = _event_loop()
    asyncio.set_event_loop(loop)
    try:
        # run_app turns SIGTERM/SIGINT into a graceful shutdown (stop accepting,
        # drain, then run cleanup contexts that close the pool and Redis).
        web.run_app(
            create_app(settings), host=args.host, port=args.port, loop=loop,
            access_log=None, shutdown_timeout=settings.drain_s,
            print=lambda message: log.info("%s", message.strip()),
        )
    finally:
        asyncio.set_event_loop(None)
        if not loop.is_closed():
            loop.close()
    return 0
