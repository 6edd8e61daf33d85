"""The `abgate` command line: one entry point, one subcommand per job.

Subcommands import their implementation lazily so that `abgate migrate` does not
load the proxy, and the shared package never imports `proxy` or `admin` at
module import time.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from abgate.config import ConfigError, Settings

__all__ = ["main"]

EXIT_USAGE = 2


def _fail(message: str) -> int:
    print(f"abgate: {message}", file=sys.stderr)
    return EXIT_USAGE


def _settings(require_database: bool = True) -> Settings:
    return Settings.from_env(require_database=require_database)


def _run(coro: Coroutine[Any, Any, int]) -> int:
    return asyncio.run(coro)


# -- migrate / partitions -----------------------------------------------------


async def _migrate(args: argparse.Namespace) -> int:
    from abgate.db import connect
    from abgate.migrations import migrate_down, migrate_status, migrate_up

    settings = _settings()
    assert settings.database_url is not None
    conn = await connect(settings.database_url)
    try:
        if args.action == "up":
            done = await migrate_up(conn)
            for m in done:
                print(f"applied {m.version:04d}_{m.name}")
            print("nothing to apply; database is up to date" if not done
                  else f"{len(done)} migration(s) applied")
        elif args.action == "down":
            undone = await migrate_down(conn, args.steps)
            for m in undone:
                print(f"rolled back {m.version:04d}_{m.name}")
            print(f"{len(undone)} migration(s) rolled back")
        else:
            for status in await migrate_status(conn):
                when = status.applied_at.isoformat() if status.applied_at else "-"
                print(f"{status.version:04d}_{status.name:<30} {status.state:<12} {when}")
    finally:
        await conn.close()
    return 0


async def _partitions(args: argparse.Namespace) -> int:
    from abgate.db import connect
    from abgate.migrations import ensure_partitions

    settings = _settings()
    assert settings.database_url is not None
    conn = await connect(settings.database_url)
    try:
        for name in await ensure_partitions(conn, ahead=args.ahead):
            print(f"partition {name} ready")
    finally:
        await conn.close()
    return 0


def _keygen(_: argparse.Namespace) -> int:
    from abgate.crypto import generate_key_entry

    print(generate_key_entry())
    return 0


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="abgate", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("migrate", help="apply, roll back or show migrations")
    msub = p.add_subparsers(dest="action", metavar="ACTION")
    msub.add_parser("up", help="apply pending migrations (default)")
    down = msub.add_parser("down", help="roll back the newest N migrations")
    down.add_argument("steps", type=int)
    msub.add_parser("status", help="list migrations and their state")
    p.set_defaults(handler=lambda a: _run(_migrate(a)), action="up")

    p = sub.add_parser("partitions", help="manage monthly request partitions")
    psub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    ensure = psub.add_parser("ensure", help="create this month's partition and N ahead")
    ensure.add_argument("--ahead", type=int, default=3)
    p.set_defaults(handler=lambda a: _run(_partitions(a)))

    p = sub.add_parser("keygen", help="print a new encryption key entry (kid:base64)")
    p.set_defaults(handler=_keygen)

    p = sub.add_parser("mock-upstream", help="fake OpenAI/Anthropic-compatible LLM")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(handler=lambda a: _mock_upstream(a.rest))

    for name, help_text in _COMPONENT_COMMANDS.items():
        p = sub.add_parser(name, help=help_text, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(handler=_component(name))
    return parser


def _mock_upstream(rest: Sequence[str]) -> int:
    from abgate.mock_upstream import main as mock_main

    return mock_main(list(rest))


# Commands implemented by a component package: name -> (module, help).
_COMPONENT_COMMANDS: dict[str, str] = {
    "proxy": "run the data plane",
    "admin": "run the control plane (API + UI)",
    "dev": "everything on one machine with embedded Postgres and Redis",
    "token": "create admin API tokens",
    "rekey": "re-encrypt all stored keys under the first key",
    "retention": "drop request partitions older than N months",
    "wipe-user": "replace a user's prompt evidence with __deleted__",
    "export": "write a partner export (JSONL) for one experiment",
}
_COMPONENT_MODULES: dict[str, str] = {
    "proxy": "proxy.cli",
    "admin": "admin.cli",
    "dev": "abgate.dev",
    "token": "admin.cli_tokens",
    "rekey": "admin.cli_rekey",
    "retention": "admin.cli_evidence",
    "wipe-user": "admin.cli_evidence",
    "export": "admin.cli_evidence",
}


def _component(name: str) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        module_name = _COMPONENT_MODULES[name]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # Only the component's own module (or its package) missing means "not built
            # yet"; a missing dependency inside an existing component is a real error.
            if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
                return _fail(f"'{name}' is not available yet in this build")
            raise
        entry = getattr(module, "command_" + name.replace("-", "_"))
        return int(entry(list(args.rest)) or 0)

    return handler


def _passthrough_handler(argv: Sequence[str]) -> Callable[[], int] | None:
    """Commands that parse their own flags get the rest of argv untouched."""
    if not argv:
        return None
    name, rest = argv[0], list(argv[1:])
    if name == "mock-upstream":
        return lambda: _mock_upstream(rest)
    if name in _COMPONENT_COMMANDS:
        return lambda: _component(name)(argparse.Namespace(rest=rest))
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    direct = _passthrough_handler(argv)
    try:
        if direct is not None:
            return direct()
        args = _build_parser().parse_args(argv)
        return int(args.handler(args))
    except ConfigError as exc:
        return _fail(f"configuration error: {exc}")
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a clean one-line error for operational failures
        from abgate.migrations import MigrationError

        if isinstance(exc, MigrationError | OSError) or type(exc).__module__.startswith("asyncpg"):
            return _fail(f"{type(exc).__name__}: {exc}")
        raise


if __name__ == "__main__":
    sys.exit(main())
