"""Who is asking: the allocation subject of a request, sans-I/O.

Order (CONTRACT.md "Environment", DESIGN.md "allocation subject"):

1. ``user`` from a verified bearer JWT, when ``ABGATE_JWT_SECRET`` (HS256) or
   ``ABGATE_JWT_PUBLIC_KEY`` (RS256 for an RSA key, ES256 for a P-256 key) is
   set and the request has ``Authorization: Bearer <token>``. A bearer that is
   not a valid token (not a JWT, bad signature, wrong algorithm, expired, not
   yet valid, no usable user claim) raises :class:`InvalidToken`: the handler
   answers 401 rather than silently bucketing the caller as someone else.
   Without a JWT key the bearer is ignored (it is the gateway's business).
2. ``user`` from ``ABGATE_USER_HEADER`` when configured (set by a trusted auth layer).
3. ``machine`` from ``ABGATE_MACHINE_HEADER``.
4. ``ip`` from the first ``X-Forwarded-For`` entry, else the peer address,
   else ``"unknown"``.

Empty values fall through to the next source; every value is stripped and
capped at 500 characters. ``exp`` and ``nbf`` are enforced with 30 s leeway;
``aud`` and ``iss`` are not checked (there is no setting for them).

Verified tokens are cached (LRU keyed by the token's SHA-256, never the token
itself) until their ``exp``, at most 5 minutes, so a busy client's stream of
requests costs one signature check. Neither the token nor its claims ever
appear in an exception message.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from abgate.config import ConfigError, Settings

__all__ = ["MAX_SUBJECT_CHARS", "IdentityResolver", "InvalidToken", "Subject"]

MAX_SUBJECT_CHARS = 500
LEEWAY_S = 30
CACHE_SIZE = 10_000
CACHE_TTL_S = 300.0


# Built per request: not frozen, as a frozen dataclass sets each field with
# object.__setattr__ (about 0.26 µs an instance here).
@dataclass(slots=True)
class Subject:
    kind: str  # "user" | "machine" | "ip"
    value: str
    user_id: str | None  # the value when kind == "user", else None


class InvalidToken(Exception):
    """The bearer JWT failed verification. The message says why, never what the token is."""


def _public_key_algorithm(pem: str) -> tuple[Any, str]:
    """Load ``ABGATE_JWT_PUBLIC_KEY``; returns (key, the one algorithm it verifies)."""
    variable = "ABGATE_JWT_PUBLIC_KEY"
    try:
        key = load_pem_public_key(pem.encode("utf-8"))
    except (ValueError, TypeError):
        raise ConfigError(variable, "is not a valid PEM public key") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise ConfigError(variable, "RSA keys must be at least 2048 bits")
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key, "ES256"
    raise ConfigError(variable, "must be an RSA or an EC P-256 public key")


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        return None
    value = value.strip()[:MAX_SUBJECT_CHARS].strip()
    return value or None


class IdentityResolver:
    """Resolves the allocation subject of requests under one :class:`Settings`.

    ``headers`` must look names up case-insensitively (aiohttp's
    ``request.headers``) or have lowercase keys.
    """

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        self._user_header = settings.user_header
        self._machine_header = settings.machine_header or None
        self._user_claim = settings.jwt_user_claim
        self._clock = clock
        # alg -> verification key; only these algorithms are ever accepted.
        self._keys: dict[str, Any] = {}
        if settings.jwt_secret:
            self._keys["HS256"] = settings.jwt_secret.encode("utf-8")
        if settings.jwt_public_key:
            key, algorithm = _public_key_algorithm(settings.jwt_public_key)
            self._keys[algorithm] = key
        self._cache: OrderedDict[bytes, tuple[str, float]] = OrderedDict()

    @property
    def jwt_enabled(self) -> bool:
        return bool(self._keys)

    def resolve(self, headers: Mapping[str, str], peer: str | None) -> Subject:
        if self._keys:
            token = _bearer(headers.get("authorization"))
            if token is not None:
                user = self._verify(token)
                return Subject("user", user, user)
        if self._user_header:
            trusted = _header(headers, self._user_header)
            if trusted is not None:
                return Subject("user", trusted, trusted)
        if self._machine_header:
            machine = _header(headers, self._machine_header)
            if machine is not None:
                return Subject("machine", machine, None)
        forwarded = headers.get("x-forwarded-for")
        if forwarded:
            first = forwarded.split(",", 1)[0].strip()[:MAX_SUBJECT_CHARS].strip()
            if first:
                return Subject("ip", first, None)
        if peer:
            peer = peer.strip()[:MAX_SUBJECT_CHARS]
            if peer:
                return Subject("ip", peer, None)
        return Subject("ip", "unknown", None)

    def _verify(self, token: str) -> str:
        """The user id in ``token``, from the cache or after full verification."""
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None:
            user, valid_until = cached
            if now < valid_until:
                self._cache.move_to_end(digest)
                return user
            del self._cache[digest]
        user, valid_until = self._decode(token, now)
        self._cache[digest] = (user, valid_until)
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return user

    def _decode(self, token: str, now: float) -> tuple[str, float]:
        if token.count(".") != 2:
            raise InvalidToken("bearer token is not a JWT")
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.InvalidTokenError:
            raise InvalidToken("bearer token is malformed") from None
        if not isinstance(algorithm, str) or algorithm not in self._keys:
            raise InvalidToken("bearer token uses an algorithm that is not accepted")
        key = self._keys[algorithm]
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                leeway=LEEWAY_S,
                # No audience/issuer is configured; the user claim is checked below
                # (so an integer ``sub`` is accepted like any other claim).
                options={"verify_aud": False, "verify_iss": False, "verify_sub": False},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("bearer token has expired") from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken("bearer token is not valid yet") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("bearer token signature is invalid") from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise InvalidToken("bearer token is invalid") from None
        user = _claim(claims.get(self._user_claim))
        if user is None:
            raise InvalidToken("bearer token has no usable user claim")
        valid_until = now + CACHE_TTL_S
        exp = claims.get("exp")
        if isinstance(exp, int | float) and not isinstance(exp, bool):
            valid_until = min(valid_until, float(exp) + LEEWAY_S)
        return user, valid_until


def _bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None


def _claim(value: Any) -> str | None:
    """A user claim as a subject value: a non-empty string or an integer."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str):
        return None
    value = value.strip()[:MAX_SUBJECT_CHARS].strip()
    return value or None
