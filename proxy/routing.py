"""Which requests are experiment candidates, decided as cheaply as possible. Sans-I/O.

Only POSTs to ``.../chat/completions``, ``.../responses`` and ``.../messages``
can be experimented. For those, the body bytes are searched for a member id
(a public id with a live experiment) before anything is parsed: the vast
majority of traffic names production models and passes through unparsed.

JSON may spell a string with escapes (``\\u0070artner``, ``a\\/b``), so a body
containing an escape is parsed even without a literal match: a client must
not reach the gateway with a preview id just by escaping it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxy.errors import BadRequest
from proxy.transform import parse_json_object

__all__ = [
    "ENDPOINT_SUFFIXES",
    "CandidateBody",
    "MemberIndex",
    "candidate_api_kind",
    "contains_anchored",
    "rare_byte_index",
]

ENDPOINT_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("/chat/completions", "chat_completions"),
    ("/responses", "responses"),
    ("/messages", "messages"),
)
_ESCAPES = (b"\\u", b"\\/")
# Bodies from this size on are searched from a rare byte of each member id.
_ANCHORED_FROM = 16 * 1024
# Occurrences of that byte checked one by one before the plain search takes over.
_ANCHOR_TRIES = 8
# Bytes most common in JSON chat bodies: never chosen as the anchor when another
# byte of the id is available (letters and space most common, then digits and
# JSON punctuation).
_COMMON = (
    frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ "),
    frozenset(b'0123456789.,:"{}[]'),
)


def candidate_api_kind(method: str, path: str) -> str | None:
    """The api kind of an experiment-candidate request, or None (plain passthrough)."""
    if method != "POST":
        return None
    for suffix, kind in ENDPOINT_SUFFIXES:
        if path.endswith(suffix):
            return kind
    return None


@dataclass(slots=True)  # per request: not frozen (see proxy.identity.Subject)
class CandidateBody:
    """A body that names a member id in ``model``: the experiment path takes it."""

    public_model_id: str
    payload: dict[str, Any]


class MemberIndex:
    """The member set with its ids pre-encoded for byte search.

    ``refresh`` is called with the store's current (immutable) member set on
    every request; it re-encodes only when the set object changed.
    """

    __slots__ = ("_encoded", "_members")

    def __init__(self) -> None:
        self._members: frozenset[str] = frozenset()
        # Each id's bytes and the position of its rarest byte (the search anchor).
        self._encoded: tuple[tuple[bytes, int], ...] = ()

    def refresh(self, members: frozenset[str]) -> None:
        if members is not self._members:
            encoded = (m.encode("utf-8") for m in members)
            self._encoded = tuple((m, rare_byte_index(m)) for m in encoded)
            self._members = members

    @property
    def members(self) -> frozenset[str]:
        return self._members

    def mentioned_literally(self, body: bytes) -> bool:
        if len(body) < _ANCHORED_FROM:
            return any(m in body for m, _ in self._encoded)
        return any(contains_anchored(body, m, anchor) for m, anchor in self._encoded)

    def match(self, body: bytes) -> CandidateBody | None:
        """The member this body's ``model`` names, or None to pass it through.

        Raises :class:`~proxy.errors.BadRequest` for a body that is not a JSON
        object only when it literally contains a member id: anything else is
        the gateway's business.
        """
        literal = self.mentioned_literally(body)
        if not literal and not _has_escape(body):
            return None
        try:
            payload = parse_json_object(body)
        except BadRequest:
            if literal:
                raise
            return None
        model = payload.get("model")
        if isinstance(model, str) and model in self._members:
            return CandidateBody(model, payload)
        return None


def rare_byte_index(needle: bytes) -> int:
    """The position in ``needle`` of its byte least likely to be common in a body."""
    if not needle:
        return 0

    def rank(index: int) -> int:
        byte = needle[index]
        return next((r for r, common in enumerate(_COMMON) if byte in common), len(_COMMON))

    return max(range(len(needle)), key=rank)


def contains_anchored(body: bytes, needle: bytes, anchor: int) -> bool:
    """``needle in body``, looked for from ``needle[anchor]`` at memchr speed.

    CPython's substring search steps byte by byte through prose-like text
    (a 200 KB body: ~60 µs per member id here); a one-byte ``find`` is a
    ``memchr`` (~3 µs). Each occurrence of the anchor byte is checked in place,
    up to ``_ANCHOR_TRIES`` of them; then the plain search finishes the job, so
    a body full of that byte costs little more than before.
    """
    byte = needle[anchor : anchor + 1]
    find = body.find
    at = find(byte, anchor)
    for _ in range(_ANCHOR_TRIES):
        if at < 0:
            return False
        if body.startswith(needle, at - anchor):
            return True
        at = find(byte, at + 1)
    return at >= 0 and find(needle, at - anchor) >= 0


def _has_escape(body: bytes) -> bool:
    """True when ``body`` holds a ``\\u`` or ``\\/`` escape.

    A one-byte search runs at memchr speed, a two-byte one byte by byte (over
    200 KB, 0.3 µs against 250 µs each): most bodies have no backslash at all.
    """
    return b"\\" in body and any(e in body for e in _ESCAPES)
