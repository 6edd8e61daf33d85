"""Prompt evidence of one experimented request: what was sent, hashed, sans-I/O.

* ``request_body_sha256`` is the SHA-256 of the exact bytes sent upstream, whole.
  The content kept in the prompt store is capped at 4 MiB (cut on a UTF-8
  character boundary) and ``was_truncated`` says so; the hash still identifies
  the full body, so two requests that differ only after 4 MiB never collide.
* ``system_prompt_sha256`` is the SHA-256 of the system prompt serialised with
  orjson (compact, keys in the client's order), or ``"__absent__"``. Storing it
  apart lets a large system prompt repeated across requests be stored once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import orjson

from abgate.prompt_store import sha256_hex

__all__ = [
    "ABSENT", "MAX_EVIDENCE_BYTES", "RequestHashes", "capped", "hash_request", "system_prompt",
]

MAX_EVIDENCE_BYTES = 4 * 1024 * 1024
ABSENT = "__absent__"
_SYSTEM_ROLES = frozenset({"system", "developer"})


def system_prompt(api_kind: str, body: dict[str, Any]) -> bytes | None:
    """The system prompt of a request body as JSON bytes, or None when it has none.

    chat_completions: the list of ``system`` and ``developer`` messages, in order;
    messages: ``system``; responses: ``instructions``.
    """
    if api_kind == "chat_completions":
        messages = body.get("messages")
        if not isinstance(messages, list):
            return None
        system = [m for m in messages if isinstance(m, dict) and m.get("role") in _SYSTEM_ROLES]
        return orjson.dumps(system) if system else None
    field = {"messages": "system", "responses": "instructions"}.get(api_kind)
    if field is None:
        return None
    value = body.get(field)
    return None if value is None else orjson.dumps(value)


class RequestHashes(NamedTuple):
    request_body_sha256: str
    system_prompt_sha256: str  # or "__absent__"
    was_truncated: bool
    system: bytes | None  # equal to the system prompt hashed; maybe a copy held already


def _plain(data: bytes) -> tuple[str, bytes]:
    return sha256_hex(data), data


def hash_request(
    sent: bytes,
    system: bytes | None,
    *,
    digest: Callable[[bytes], tuple[str, bytes]] = _plain,
) -> RequestHashes:
    """The evidence hashes of a request that sent ``sent`` with system prompt ``system``.

    ``digest`` returns a SHA-256 hex digest and bytes equal to its input: the
    proxy passes :meth:`proxy.digests.PrefixDigests.digest`, which reuses shared
    prefixes and hands back the copy of a repeated system prompt it already holds.
    """
    body_hash, _ = digest(sent)
    truncated = len(sent) > MAX_EVIDENCE_BYTES
    if system is None:
        return RequestHashes(body_hash, ABSENT, truncated, None)
    system_hash, system = digest(system)
    return RequestHashes(body_hash, system_hash, truncated, system)


def capped(content: bytes, limit: int = MAX_EVIDENCE_BYTES) -> tuple[bytes, bool]:
    """``content`` cut to at most ``limit`` bytes without splitting a UTF-8 character.

    Returns ``(content, was_truncated)``. For bytes that are not UTF-8 the cut
    backs off at most three bytes (the longest continuation run of a character).
    """
    if limit < 0:
        raise ValueError("limit must be >= 0")
    if len(content) <= limit:
        return content, False
    cut = limit
    # content[cut] is the first byte dropped; while it is a continuation byte
    # (0b10xxxxxx) the character it belongs to started before the cut.
    for _ in range(3):
        if cut == 0 or content[cut] & 0xC0 != 0x80:
            break
        cut -= 1
    return content[:cut], True
