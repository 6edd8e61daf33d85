"""Typed settings built once from the environment and validated at start-up.

Every variable of CONTRACT.md "Environment" maps to one field here. A malformed
value raises :class:`ConfigError`, which names the variable but never echoes a
secret's value; the CLI turns it into exit code 2.
"""

from __future__ import annotations

import base64
import binascii
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit

__all__ = ["ConfigError", "EncryptionKey", "Settings", "parse_encryption_keys"]

_KID_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


class ConfigError(ValueError):
    """A setting is missing or malformed. The message never contains a secret."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


@dataclass(frozen=True, repr=False)
class EncryptionKey:
    kid: str
    key: bytes

    def __repr__(self) -> str:  # never print key bytes
        return f"EncryptionKey(kid={self.kid!r})"


def parse_encryption_keys(
    raw: str, variable: str = "ABGATE_ENCRYPTION_KEYS"
) -> list[EncryptionKey]:
    """Parse ``kid:base64(32 bytes)[,kid:...]``; the first entry encrypts."""
    keys: list[EncryptionKey] = []
    seen: set[str] = set()
    for position, entry in enumerate(p.strip() for p in raw.split(",")):
        if not entry:
            continue
        kid, sep, b64 = entry.partition(":")
        if not sep or not _KID_RE.fullmatch(kid):
            raise ConfigError(
                variable,
                f"entry {position + 1} must be 'kid:base64key' with a kid of 1-64 "
                "characters from [A-Za-z0-9_.-]",
            )
        if kid in seen:
            raise ConfigError(variable, f"kid {kid!r} appears twice")
        try:
            key = base64.b64decode(b64.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(variable, f"key for kid {kid!r} is not valid base64") from None
        if len(key) != 32:
            raise ConfigError(variable, f"key for kid {kid!r} must decode to 32 bytes")
        seen.add(kid)
        keys.append(EncryptionKey(kid, key))
    if raw.strip() and not keys:
        raise ConfigError(variable, "no key entries found")
    return keys


def _split_url(name: str, value: str) -> SplitResult:
    # urlsplit raises a bare ValueError (e.g. an unclosed IPv6 bracket); report it
    # as a ConfigError so the CLI exits 2 instead of printing a traceback.
    try:
        return urlsplit(value)
    except ValueError:
        raise ConfigError(name, "is not a valid URL") from None


def _dsn(env: Mapping[str, str], name: str, schemes: tuple[str, ...], required: bool) -> str | None:
    value = env.get(name, "").strip()
    if not value:
        if required:
            raise ConfigError(name, "is required")
        return None
    parts = _split_url(name, value)
    if parts.scheme not in schemes:
        raise ConfigError(name, f"must be a URL with scheme {' or '.join(schemes)}")
    if parts.scheme.startswith("unix"):
        if not parts.path:
            raise ConfigError(name, "unix socket URL needs a path")
    elif not parts.hostname and "host=" not in parts.query:
        raise ConfigError(name, "must name a host")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ConfigError(name, "has an invalid port") from None
    return value


def _bool(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    value = env.get(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(name, "must be true/false (1/0, yes/no, on/off)")


def _number(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(name, "must be a number") from None
    if not math.isfinite(number):
        raise ConfigError(name, "must be a finite number")
    if number < minimum:
        raise ConfigError(name, f"must be >= {minimum}")
    return number


def _integer(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    value = env.get(name, "").strip()
    if not value:
        return default
    if not re.fullmatch(r"[0-9]{1,19}", value):
        raise ConfigError(name, "must be a whole number")
    number = int(value)
    if number < minimum:
        raise ConfigError(name, f"must be >= {minimum}")
    return number


def _header(env: Mapping[str, str], name: str, default: str | None) -> str | None:
    value = env.get(name, "").strip().lower()
    if not value:
        return default
    if not re.fullmatch(r"[a-z0-9!#$%&'*+.^_`|~-]+", value):
        raise ConfigError(name, "must be a valid HTTP header name")
    return value


def _gateway(env: Mapping[str, str]) -> str | None:
    value = env.get("ABGATE_GATEWAY_URL", "").strip().rstrip("/")
    if not value:
        return None
    parts = _split_url("ABGATE_GATEWAY_URL", value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("ABGATE_GATEWAY_URL", "must be an http(s)://host[:port] origin")
    if parts.path or parts.query or parts.fragment:
        raise ConfigError("ABGATE_GATEWAY_URL", "must be an origin without path or query")
    if "@" in parts.netloc:
        # Credentials in the origin would travel into logs with every passthrough URL.
        raise ConfigError("ABGATE_GATEWAY_URL", "must not contain credentials")
    try:
        parts.port  # noqa: B018
    except ValueError:
        raise ConfigError("ABGATE_GATEWAY_URL", "has an invalid port") from None
    return value


@dataclass(frozen=True, repr=False)
class Settings:
    """Process settings. ``repr`` is redacted so a stray log line leaks nothing."""

    database_url: str | None
    redis_url: str | None = None
    redis_namespace: str = "abgate"
    gateway_url: str | None = None
    encryption_keys: list[EncryptionKey] = field(default_factory=list)
    admin_token: str | None = None
    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    jwt_user_claim: str = "sub"
    user_header: str | None = None
    machine_header: str = "x-machine-id"
    client_request_header: str = "x-client-request-id"
    allow_insecure_upstream: bool = False
    max_body_bytes: int = 32 * 1024 * 1024
    sse_keepalive_s: float = 15.0
    drain_s: float = 30.0
    spool_dir: str = ".abgate-spool"
    spool_max_bytes: int = 256 * 1024 * 1024
    prompt_store: str = "postgres"

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, require_database: bool = True
    ) -> Settings:
        env = os.environ if env is None else env
        keys_raw = env.get("ABGATE_ENCRYPTION_KEYS", "")
        namespace = env.get("ABGATE_REDIS_NAMESPACE", "abgate").strip() or "abgate"
        if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", namespace):
            raise ConfigError("ABGATE_REDIS_NAMESPACE", "must be 1-64 of [A-Za-z0-9_.:-]")
        jwt_public_key = env.get("ABGATE_JWT_PUBLIC_KEY", "").strip() or None
        if jwt_public_key and "BEGIN" not in jwt_public_key:
            raise ConfigError("ABGATE_JWT_PUBLIC_KEY", "must be a PEM public key")
        prompt_store = env.get("ABGATE_PROMPT_STORE", "postgres").strip() or "postgres"
        if prompt_store not in ("postgres", "off") and not (
            prompt_store.startswith("fs:") and len(prompt_store) > 3
        ):
            raise ConfigError("ABGATE_PROMPT_STORE", "must be postgres, off or fs:PATH")
        return cls(
            database_url=_dsn(
                env, "ABGATE_DATABASE_URL", ("postgres", "postgresql"), require_database
            ),
            redis_url=_dsn(env, "ABGATE_REDIS_URL", ("redis", "rediss", "unix"), False),
            redis_namespace=namespace,
            gateway_url=_gateway(env),
            encryption_keys=parse_encryption_keys(keys_raw) if keys_raw.strip() else [],
            admin_token=env.get("ABGATE_ADMIN_TOKEN", "").strip() or None,
            jwt_secret=env.get("ABGATE_JWT_SECRET", "") or None,
            jwt_public_key=jwt_public_key,
            jwt_user_claim=env.get("ABGATE_JWT_USER_CLAIM", "").strip() or "sub",
            user_header=_header(env, "ABGATE_USER_HEADER", None),
            machine_header=_header(env, "ABGATE_MACHINE_HEADER", "x-machine-id") or "",
            client_request_header=_header(
                env, "ABGATE_CLIENT_REQUEST_HEADER", "x-client-request-id"
            )
            or "",
            allow_insecure_upstream=_bool(env, "ABGATE_ALLOW_INSECURE_UPSTREAM"),
            max_body_bytes=_integer(
                env, "ABGATE_MAX_BODY_BYTES", 32 * 1024 * 1024, minimum=1024
            ),
            sse_keepalive_s=_number(env, "ABGATE_SSE_KEEPALIVE_S", 15.0, minimum=0.05),
            drain_s=_number(env, "ABGATE_DRAIN_S", 30.0, minimum=0),
            spool_dir=env.get("ABGATE_SPOOL_DIR", "").strip() or ".abgate-spool",
            spool_max_bytes=_integer(
                env, "ABGATE_SPOOL_MAX_BYTES", 256 * 1024 * 1024, minimum=1024
            ),
            prompt_store=prompt_store,
        )

    def __repr__(self) -> str:
        keys = len(self.encryption_keys)
        return f"Settings(redis_namespace={self.redis_namespace!r}, keys={keys})"
