"""What every admin handler needs, built once per app and stored under :data:`CONTEXT`."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import redis.asyncio as aioredis
from aiohttp import web

from abgate.config import Settings
from abgate.crypto import KeyRing, NoEncryptionKeyError
from admin.auth import PRINCIPAL, Authenticator, Principal
from admin.errors import InternalError
from admin.publish import Publisher

__all__ = ["CONTEXT", "NO_KEYS_MESSAGE", "AdminContext", "actor", "context", "encrypt_api_key"]

NO_KEYS_MESSAGE = "encryption keys are not configured (ABGATE_ENCRYPTION_KEYS)"


@dataclass
class AdminContext:
    settings: Settings
    pool: asyncpg.Pool
    redis: aioredis.Redis | None
    keyring: KeyRing
    publisher: Publisher
    authenticator: Authenticator

    def __repr__(self) -> str:
        return f"AdminContext(settings={self.settings!r}, keyring={self.keyring!r})"


CONTEXT = web.AppKey("abgate_admin_context", AdminContext)


def context(request: web.Request) -> AdminContext:
    return request.app[CONTEXT]


def actor(request: web.Request) -> Principal:
    return request[PRINCIPAL]


def encrypt_api_key(ctx: AdminContext, api_key: str) -> dict[str, str]:
    """Encrypt under the first key; a missing key ring is a clear 500."""
    try:
        return ctx.keyring.encrypt(api_key)
    except NoEncryptionKeyError:
        raise InternalError(NO_KEYS_MESSAGE) from None
