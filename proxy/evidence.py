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
from typing import Any

import orjson

from abgate.prompt_store import sha256_hex

__all__ = ["ABSENT", "MAX_EVIDENCE_BYTES", "capped", "hash_request", "system_prompt"]

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


def hash_request(
    sent: bytes, system: bytes | None, *, digest: Callable[[bytes], str] = sha256_hex
) -> tuple[str, str, bool]:
    """``(request_body_sha256, system_prompt_sha256 or "__absent__", was_truncated)``.

    ``digest`` is a SHA-256 hex function: the proxy passes
    :meth:`proxy.digests.PrefixDigests.hexdigest`, which reuses shared prefixes.
    """
    body_hash = digest(sent)
    system_hash = digest(system) if system is not None else ABSENT
    return body_hash, system_hash, len(sent) > MAX_EVIDENCE_BYTES


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
