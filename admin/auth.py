"""Bearer-token authentication and roles for the admin API.

Tokens are random strings shown once at creation (``abgate token create``); the
database keeps only their sha256 (``admin_token.token_sha256``). ``admin`` may do
everything, ``viewer`` only reads (GET/HEAD). ``ABGATE_ADMIN_TOKEN``, when set, is
a bootstrap admin named ``bootstrap``, compared in constant time.

Lookups are cached in process for :data:`CACHE_TTL_S` seconds so that reads stay
fast; a revoked token therefore keeps working for at most that long.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
from aiohttp import web
from aiohttp.typedefs import Middleware

from admin.errors import Forbidden, Unauthorized

__all__ = [
    "CACHE_TTL_S",
    "PRINCIPAL",
    "ROLES",
    "Authenticator",
    "Principal",
    "auth_middleware",
    "generate_token",
    "hash_token",
]

CACHE_TTL_S = 5.0
ROLES = ("admin", "viewer")
TOKEN_PREFIX = "abg_"  # noqa: S105 - a prefix, not a secret
BOOTSTRAP_NAME = "bootstrap"
_MAX_TOKEN_CHARS = 512
_CACHE_MAX_ENTRIES = 1024
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Paths served without a token: probes, metrics, the API description and the UI.
_PUBLIC_PATHS = frozenset({"/", "/healthz", "/readyz", "/metrics", "/openapi.json"})


@dataclass(frozen=True)
class Principal:
    name: str
    role: str

    @property
    def can_write(self) -> bool:
        return self.role == "admin"


PRINCIPAL = web.RequestKey("abgate_admin_principal", Principal)


def generate_token() -> str:
    """A new token: ``abg_`` + 32 random bytes, URL-safe base64."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


_LOOKUP_SQL = """
UPDATE admin_token SET last_used_at = now()
WHERE token_sha256 = $1 AND revoked_at IS NULL
RETURNING name, role
"""


class Authenticator:
    """Resolves a bearer token to a :class:`Principal`, with a short positive cache."""

    def __init__(self, pool: asyncpg.Pool, bootstrap_token: str | None) -> None:
        self._pool = pool
        self._bootstrap = bootstrap_token.encode("utf-8") if bootstrap_token else None
        self._cache: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    def __repr__(self) -> str:  # never show tokens or their hashes
        return f"Authenticator(cached={len(self._cache)})"

    async def authenticate(self, token: str) -> Principal | None:
        if not token or len(token) > _MAX_TOKEN_CHARS:
            return None
        encoded = token.encode("utf-8", "surrogateescape")
        if self._bootstrap is not None and hmac.compare_digest(encoded, self._bootstrap):
            return Principal(BOOTSTRAP_NAME, "admin")
        digest = hashlib.sha256(encoded).hexdigest()
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        # Touches last_used_at at most once per cache period per token.
        row = await self._pool.fetchrow(_LOOKUP_SQL, digest)
        if row is None:
            self._cache.pop(digest, None)
            return None
        principal = Principal(row["name"], row["role"])
        self._cache[digest] = (principal, now + CACHE_TTL_S)
        self._cache.move_to_end(digest)
        while len(self._cache) > _CACHE_MAX_ENTRIES:
            self._cache.popitem(last=False)
        return principal


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def is_public(path: str) -> bool:
    return path in _PUBLIC_PATHS or path == "/ui" or path.startswith("/ui/")


def auth_middleware(authenticator_of: Callable[[web.Request], Authenticator]) -> Middleware:
    """Every non-public path needs a valid token; mutations need the admin role."""

    @web.middleware
    async def middleware(
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        if is_public(request.path):
            return await handler(request)
        token = bearer_token(request.headers.get("Authorization"))
        if token is None:
            raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
        principal = await authenticator_of(request).authenticate(token)
        if principal is None:
            raise Unauthorized("invalid or revoked token")
        if request.method not in _READ_METHODS and not principal.can_write:
            raise Forbidden(f"role {principal.role!r} may only read")
        request[PRINCIPAL] = principal
        return await handler(request)

    return middleware
