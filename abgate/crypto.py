"""Envelope for upstream API keys at rest: AES-256-GCM, sans-I/O.

Stored form (the ``encrypted_api_key`` jsonb column)::

    {"kid": "<key id>", "iv": b64(12 bytes), "data": b64(ciphertext), "authTag": b64(16 bytes)}

All four values are standard base64 with padding. The plaintext is the UTF-8
API key. The key id is bound as AES-GCM associated data (``kid.encode("utf-8")``),
so a blob whose ``kid`` is relabelled to another key of the ring fails to
authenticate even if both keys were the same.

Keys come from ``ABGATE_ENCRYPTION_KEYS`` (:func:`abgate.config.parse_encryption_keys`):
the first key encrypts, every key decrypts, and :meth:`KeyRing.needs_rekey`
tells ``abgate rekey`` which blobs to re-encrypt under the first key.

Nothing in this module ever puts key bytes, plaintext or ciphertext into an
exception message or a ``repr``: errors name only the field, the key id or the
kind of failure.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from abgate.config import EncryptionKey

__all__ = [
    "BLOB_FIELDS",
    "IV_BYTES",
    "KEY_BYTES",
    "TAG_BYTES",
    "CryptoError",
    "KeyRing",
    "NoEncryptionKeyError",
    "generate_key_entry",
]

KEY_BYTES = 32
IV_BYTES = 12
TAG_BYTES = 16
BLOB_FIELDS: tuple[str, ...] = ("kid", "iv", "data", "authTag")

# Same rule as abgate.config for ``kid`` in ABGATE_ENCRYPTION_KEYS.
_KID_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# Upper bound on a stored ciphertext; an API key is far smaller. Guards against
# decoding an absurd blob (e.g. a corrupted row) into memory.
_MAX_DATA_B64 = 64 * 1024


class CryptoError(Exception):
    """Encryption or decryption failed. The message never contains secrets."""


class NoEncryptionKeyError(CryptoError):
    """The key ring is empty: ``ABGATE_ENCRYPTION_KEYS`` is not set."""

    def __init__(self) -> None:
        super().__init__("ABGATE_ENCRYPTION_KEYS is not configured")


def _safe_kid(kid: str) -> str:
    """Quote a key id from untrusted storage for an error message, bounded."""
    return repr(kid[:64] + ("..." if len(kid) > 64 else ""))


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _field(blob: Mapping[str, Any], name: str) -> str:
    if name not in blob:
        raise CryptoError(f"malformed encrypted key: missing field {name!r}")
    value = blob[name]
    if not isinstance(value, str):
        raise CryptoError(f"malformed encrypted key: field {name!r} must be a string")
    return value


def _b64_field(blob: Mapping[str, Any], name: str, *, size: int | None = None) -> bytes:
    text = _field(blob, name)
    if len(text) > _MAX_DATA_B64:
        raise CryptoError(f"malformed encrypted key: field {name!r} is too long")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise CryptoError(f"malformed encrypted key: field {name!r} is not valid base64") from None
    if size is not None and len(raw) != size:
        raise CryptoError(f"malformed encrypted key: field {name!r} must decode to {size} bytes")
    return raw


class KeyRing:
    """The configured encryption keys. The first key encrypts; any key decrypts.

    An empty ring is allowed (the process can start without keys); every
    operation that needs a key then raises :class:`NoEncryptionKeyError`.
    """

    __slots__ = ("_ciphers", "_kids")

    def __init__(self, keys: Sequence[EncryptionKey]) -> None:
        ciphers: dict[str, AESGCM] = {}
        kids: list[str] = []
        for entry in keys:
            if not isinstance(entry.kid, str) or not _KID_RE.fullmatch(entry.kid):
                raise CryptoError("key id must be 1-64 characters from [A-Za-z0-9_.-]")
            if entry.kid in ciphers:
                raise CryptoError(f"key id {entry.kid!r} appears twice")
            if not isinstance(entry.key, bytes | bytearray) or len(entry.key) != KEY_BYTES:
                raise CryptoError(f"key {entry.kid!r} must be {KEY_BYTES} bytes (AES-256)")
            ciphers[entry.kid] = AESGCM(bytes(entry.key))
            kids.append(entry.kid)
        self._ciphers = ciphers
        self._kids = tuple(kids)

    def __repr__(self) -> str:  # key ids only, never key bytes
        return f"KeyRing(kids={list(self._kids)!r})"

    def __len__(self) -> int:
        return len(self._kids)

    def __bool__(self) -> bool:
        return bool(self._kids)

    @property
    def kids(self) -> tuple[str, ...]:
        """All key ids, primary first."""
        return self._kids

    @property
    def primary_kid(self) -> str:
        """The id of the key that encrypts. Raises NoEncryptionKeyError if empty."""
        if not self._kids:
            raise NoEncryptionKeyError()
        return self._kids[0]

    def encrypt(self, plaintext: str) -> dict[str, str]:
        """Encrypt ``plaintext`` under the primary key with a fresh random IV."""
        if not isinstance(plaintext, str):
            raise TypeError("plaintext must be a str")
        kid = self.primary_kid
        iv = os.urandom(IV_BYTES)
        sealed = self._ciphers[kid].encrypt(iv, plaintext.encode("utf-8"), kid.encode("utf-8"))
        return {
            "kid": kid,
            "iv": _b64(iv),
            "data": _b64(sealed[:-TAG_BYTES]),
            "authTag": _b64(sealed[-TAG_BYTES:]),
        }

    def decrypt(self, blob: Mapping[str, Any]) -> str:
        """Decrypt a stored blob with the key its ``kid`` names.

        Raises :class:`NoEncryptionKeyError` when the ring is empty and
        :class:`CryptoError` when the blob is malformed, names an unknown key
        or fails authentication (tampered, relabelled or wrong key).
        Extra fields in ``blob`` are ignored.
        """
        if not self._kids:
            raise NoEncryptionKeyError()
        if not isinstance(blob, Mapping):
            raise CryptoError("malformed encrypted key: expected an object")
        kid = _field(blob, "kid")
        iv = _b64_field(blob, "iv", size=IV_BYTES)
        data = _b64_field(blob, "data")
        tag = _b64_field(blob, "authTag", size=TAG_BYTES)
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise CryptoError(f"unknown key id {_safe_kid(kid)}")
        try:
            raw = cipher.decrypt(iv, data + tag, kid.encode("utf-8"))
        except InvalidTag:
            raise CryptoError("ciphertext failed authentication") from None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise CryptoError("decrypted key is not valid UTF-8") from None

    def needs_rekey(self, blob: Mapping[str, Any]) -> bool:
        """True when ``blob`` is not encrypted under the primary key."""
        primary = self.primary_kid
        if not isinstance(blob, Mapping):
            raise CryptoError("malformed encrypted key: expected an object")
        return _field(blob, "kid") != primary

    def rekey(self, blob: Mapping[str, Any]) -> dict[str, str]:
        """Decrypt ``blob`` and encrypt the plaintext again under the primary key."""
        return self.encrypt(self.decrypt(blob))


def generate_key_entry(kid: str | None = None) -> str:
    """A fresh ``kid:base64(32 random bytes)`` entry for ``ABGATE_ENCRYPTION_KEYS``.

    The default kid is ``k`` + UTC date ``yyyymmdd`` + 4 random hex digits,
    e.g. ``k20250131a1b2``. Raises ValueError for a kid that
    :func:`abgate.config.parse_encryption_keys` would refuse.
    """
    if kid is None:
        today = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
        kid = f"k{today}{secrets.token_hex(2)}"
    elif not isinstance(kid, str) or not _KID_RE.fullmatch(kid):
        raise ValueError("key id must be 1-64 characters from [A-Za-z0-9_.-]")
    return f"{kid}:{_b64(secrets.token_bytes(KEY_BYTES))}"
