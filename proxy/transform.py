"""Turning a client's request into the body sent to the chosen upstream, sans-I/O.

:func:`prepare_upstream_body` applies, in this order, to a copy of the body:

1. drop ``provider`` (routing hints meant for the gateway, not the partner);
2. drop the upstream's ``remove_from_body`` keys (top level);
3. merge ``extra_body`` *shallowly*: each top-level key replaces the client's
   value whole (no deep merge: an admin who sets ``reasoning`` sets all of it);
4. ``model`` = the upstream's internal id;
5. identity: any ``user`` / ``safety_identifier`` the client sent is replaced by
   the pseudonym; chat and responses always get ``user`` = pseudonym, messages
   always gets ``metadata.user_id`` = pseudonym (other metadata kept);
6. chat streams: ``stream_options.include_usage = true`` so usage can be recorded.

``remove_from_body`` always wins over 5 and 6: a field the partner rejects is
never added back (the client's value was already removed, so nothing leaks).

Pseudonyms are ``"abg-"`` + 32 hex chars of HMAC-SHA256 over the partner host,
the subject kind and the subject value, keyed by :func:`pseudonym_secret`. The
host (not the whole base URL or the internal id) is used so that a hot-swap to
another checkpoint of the same partner keeps every pseudonym; two partners can
never correlate theirs. 36 characters fit every API's limit on these fields.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from abgate.config import EncryptionKey
from abgate.crypto import NoEncryptionKeyError
from abgate.upstream import Upstream
from proxy.errors import BadRequest

__all__ = [
    "PSEUDONYM_INFO",
    "PreparedRequest",
    "data_collection_denied",
    "parse_json_object",
    "prepare_upstream_body",
    "pseudonym",
    "pseudonym_secret",
]

PSEUDONYM_INFO = b"abgate-pseudonym-v1"
_IDENTITY_FIELDS = ("user", "safety_identifier")


@dataclass(slots=True)
class PreparedRequest:
    body: bytes  # exactly what is sent upstream (hash it for evidence)
    stream: bool  # the client asked for a stream ("stream": true)
    # False only for a chat stream whose client did not set
    # stream_options.include_usage; every other answer carries usage anyway.
    client_wants_usage: bool
    # The upstream will send a usage-only chunk the client did not ask for:
    # drop it (StreamTransformer(drop_usage_chunk=forced_usage)).
    forced_usage: bool


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """Parse a request body that must be a JSON object with a string ``model``.

    Raises :class:`BadRequest` (400) otherwise; the message never echoes the body.
    """
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    if not isinstance(body.get("model"), str):
        raise BadRequest("The request body must have a string `model`.")
    return body


def data_collection_denied(body: dict[str, Any]) -> bool:
    """True when the request opts out of data collection (``provider`` preferences)."""
    provider = body.get("provider")
    if not isinstance(provider, dict):
        return False
    return provider.get("data_collection") == "deny" or provider.get("zdr") is True


def prepare_upstream_body(
    api_kind: str, body: dict[str, Any], upstream: Upstream, pseudonym: str
) -> PreparedRequest:
    """The body to send ``upstream`` for the client's ``body`` (left unmodified)."""
    out = dict(body)
    out.pop("provider", None)
    removed = upstream.remove_from_body
    for key in removed:
        out.pop(key, None)
    # Values are shared with the snapshot's Upstream: nested dicts are copied
    # below before being modified, never changed in place.
    out.update(upstream.extra_body)
    out["model"] = upstream.internal_id

    for key in _IDENTITY_FIELDS:
        if key in out:
            out[key] = pseudonym
    if api_kind == "messages":
        if "metadata" not in removed:
            metadata = out.get("metadata")
            out["metadata"] = {
                **(metadata if isinstance(metadata, dict) else {}),
                "user_id": pseudonym,
            }
    elif "user" not in removed:
        out["user"] = pseudonym

    stream = body.get("stream") is True
    client_wants_usage = True
    forced_usage = False
    if api_kind == "chat_completions" and stream:
        client_options = body.get("stream_options")
        client_wants_usage = (
            isinstance(client_options, dict) and client_options.get("include_usage") is True
        )
        if not client_wants_usage and "stream_options" not in removed:
            options = out.get("stream_options")
            out["stream_options"] = {
                **(options if isinstance(options, dict) else {}),
                "include_usage": True,
            }
            forced_usage = True
    return PreparedRequest(orjson.dumps(out), stream, client_wants_usage, forced_usage)


def pseudonym_secret(keys: Sequence[EncryptionKey]) -> bytes:
    """The HMAC key for pseudonyms, derived (HKDF-SHA256) from the *last* encryption key.

    The last key is the oldest: operators prepend new keys, so a key rotation
    does not change pseudonyms. Removing that key does. Raises
    :class:`NoEncryptionKeyError` when no key is configured.
    """
    if not keys:
        raise NoEncryptionKeyError()
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=PSEUDONYM_INFO)
    return hkdf.derive(keys[-1].key)


def pseudonym(secret: bytes, upstream: Upstream, subject_kind: str, subject_value: str) -> str:
    """The stable, irreversible id the partner behind ``upstream`` sees for a subject."""
    return _pseudonym(secret, _partner(upstream.base_url), subject_kind, subject_value)


# A busy subject sends many requests: the HMAC and the URL parse are done once
# per (partner, subject) rather than per request. Pseudonyms are not secret
# (every partner request carries one), so keeping them in memory costs nothing.
@functools.lru_cache(maxsize=256)
def _partner(base_url: str) -> str:
    return urlsplit(base_url).hostname or base_url


@functools.lru_cache(maxsize=16_384)
def _pseudonym(secret: bytes, partner: str, subject_kind: str, subject_value: str) -> str:
    message = "\x00".join((partner, subject_kind, subject_value))
    digest = hmac.new(secret, message.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
    return "abg-" + digest[:32]
