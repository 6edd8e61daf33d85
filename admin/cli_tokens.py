"""``abgate token create --name N --role admin|viewer``: issue an admin API token.

The token is printed once, on stdout, and only its sha256 is stored.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from abgate.config import Settings
from abgate.db import connect
from admin.auth import ROLES, generate_token, hash_token

__all__ = ["command_token", "create_token"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="abgate token", description="manage admin API tokens")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = sub.add_parser("create", help="create a token and print it once")
    create.add_argument("--name", required=True, help="who or what uses it (audit actor)")
    create.add_argument("--role", required=True, choices=ROLES)
    return parser


async def create_token(database_url: str, name: str, role: str) -> str:
    """Store a new token's hash and return the token (the only time it exists in clear)."""
    token = generate_token()
    conn = await connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO admin_token (name, role, token_sha256) VALUES ($1, $2, $3)",
            name, role, hash_token(token),
        )
    finally:
        await conn.close()
    return token


def command_token(argv: Sequence[str]) -> int:
    parser = _parser()
    args = parser.parse_args(list(argv))
    name = args.name.strip()
    if not 1 <= len(name) <= 200 or "\x00" in name:
        parser.error("--name must be 1-200 characters")
    settings = Settings.from_env()
    assert settings.database_url is not None
    token = asyncio.run(create_token(settings.database_url, name, args.role))
    print(token)
    print(f"token for {name!r} ({args.role}) created; it is shown only this once",
          file=sys.stderr)
    return 0
