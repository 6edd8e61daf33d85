"""Blinds an upstream SSE stream event by event and reads its usage, sans-I/O.

The I/O layer feeds each upstream chunk to :meth:`StreamTransformer.feed` and
writes what it returns to the client at once; at the end of the stream it writes
:meth:`StreamTransformer.finish`. Only complete events are forwarded, so a model
id split across two chunks is still rewritten; at most one incomplete event is
held back.

Per event, JSON is parsed only when the data can matter: a non-null ``"usage"``
(token accounting, the usage-only chat chunk) or an ``"error"`` (error
detection), found with ``bytes.find`` and one anchored regex match.
Everything else is forwarded as its original bytes, blinded in one pass per chunk.
While no partial event is held, the run of whole events at the start of a chunk
that needs none of this (a chat stream's ``"usage": null`` chunks: no ``"error"``,
no ``event:`` field, no ``"usage"`` but a null one) skips the event split too: it
is blinded and forwarded as it is, and parsing starts at the first event that
matters. A fast upstream's whole stream in one read is parsed from its usage chunk.

* usage: chat takes the last chunk's ``usage``; messages takes ``message_start``'s
  ``message.usage`` and then each ``message_delta``'s cumulative ``usage``;
  responses takes ``response.usage`` of any event that carries one (in practice
  ``response.completed``, ``response.incomplete`` or ``response.failed``).
* ``saw_error_event``: an ``event: error`` line, a ``response.failed`` event, or a
  JSON payload with a top-level ``"error"`` (a chat chunk) or ``"type": "error"``.
* ``drop_usage_chunk`` (chat only): the proxy forced ``include_usage`` upstream
  although the client did not ask for it, so the usage-only chunk
  (``"choices": []``) is dropped; usage that rides on a chunk with choices is
  forwarded with it.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from proxy.blinding import Blinder
from proxy.sse import SSEEvent, SSEParser, parse_block
from proxy.usage import Usage, merge_messages_delta, usage_from_object

__all__ = ["StreamTransformer"]

_USAGE = b'"usage"'
_NULL_USAGE = b'"usage":null'
_ERROR = b'"error"'
_ERROR_EVENTS = frozenset({b"error", b"response.failed"})
_ERROR_TYPES = frozenset({"error", "response.failed"})
_EVENT_FIELD = b"event:"
# A "usage" key not followed by ": null" on the same line: a usage that may be
# non-null. Conservative on purpose: a key whose value a line break separates
# from it (multi-line data, joined by the parser) counts as one.
_NON_NULL_USAGE_RE = re.compile(rb'"usage"(?![ \t]*:[ \t]*null)')


def _first_non_null_usage(data: bytes, start: int = 0, end: int | None = None) -> int:
    """Where the first ``"usage"`` that may hold a non-null value starts in ``data``, or -1."""
    match = _NON_NULL_USAGE_RE.search(data, start, len(data) if end is None else end)
    return -1 if match is None else match.start()


def _first_non_null_usage_of(chunk: bytes, end: int, others: int) -> int:
    """``_first_non_null_usage(chunk, 0, end)``, knowing ``others`` keys are not ``"usage":null``.

    A chat stream's one usage chunk comes last: when it is the only such key and
    the last one, it is found from the end instead of by a regex over the chunk.
    """
    if others == 1:
        last = chunk.rfind(_USAGE, 0, end)
        if _NON_NULL_USAGE_RE.match(chunk, last, end):
            return last
    return _first_non_null_usage(chunk, 0, end)


def _plain_head_end(chunk: bytes) -> int:
    """Where the run of events that need no parsing, at the start of ``chunk``, ends.

    The first event that may need parsing holds the first ``"error"``, the first
    ``event:`` field (an ``error`` event is named there) or the first ``"usage"``
    that may be non-null, or is the incomplete tail. The head ends at the blank
    line (``\\n\\n``) before it: in SSE a blank line always ends an event.
    Returns 0 when there is no such head.
    """
    end = len(chunk)
    for marker in (_ERROR, _EVENT_FIELD):
        at = chunk.find(marker, 0, end)
        if at >= 0:
            end = at
    # Every "usage":null holds one "usage", so equal counts leave no other key
    # (a "usage" overlapping another is followed by "u": invalid JSON, no usage).
    keys = chunk.count(_USAGE, 0, end)
    if keys:
        others = keys - chunk.count(_NULL_USAGE, 0, end)
        if others:
            usage = _first_non_null_usage_of(chunk, end, others)
            if usage >= 0:
                end = usage
    if end == len(chunk) and chunk.endswith(b"\n\n"):
        return end
    blank = chunk.rfind(b"\n\n", 0, end)
    return 0 if blank < 0 else blank + 2


class StreamTransformer:
    """One upstream SSE stream of ``api_kind`` on its way to the client."""

    __slots__ = (
        "_api_kind",
        "_blinder",
        "_drop_usage_chunk",
        "_parser",
        "saw_error_event",
        "usage",
    )

    def __init__(self, api_kind: str, blinder: Blinder, *, drop_usage_chunk: bool) -> None:
        self._api_kind = api_kind
        self._blinder = blinder
        self._drop_usage_chunk = drop_usage_chunk and api_kind == "chat_completions"
        self._parser = SSEParser()
        self.usage = Usage()
        self.saw_error_event = False

    def feed(self, chunk: bytes) -> bytes:
        """Return the blinded bytes to forward now (complete events only; may be b"")."""
        # While the parser holds nothing, a chunk starts at an event boundary and
        # its plain head is forwarded as it came: _keep would keep each of its
        # events and change nothing else. (Raw bytes are forwarded on either path,
        # a leading BOM included.)
        # (Blinding runs once per chunk: head and parsed events together.)
        if not self._parser.pending:
            cut = _plain_head_end(chunk)
            if cut:
                self._parser.skip_events()
                if cut == len(chunk):
                    return self._blinder.blind(chunk)
                return self._blinder.blind(chunk[:cut] + self._kept_events(chunk[cut:]))
        kept = self._kept_events(chunk)
        return self._blinder.blind(kept) if kept else b""

    def _kept_events(self, chunk: bytes) -> bytes:
        """The raw bytes of the events ``chunk`` completes that reach the client."""
        events = self._parser.feed(chunk)
        if not events:
            return b""
        if len(events) == 1:
            return events[0].raw if self._keep(events[0]) else b""
        return b"".join([event.raw for event in events if self._keep(event)])

    def finish(self) -> bytes:
        """Return the blinded bytes held back at the end of the stream (may be b"").

        A final event the upstream did not terminate with a blank line is still
        accounted for (usage, errors) and forwarded as it came.
        """
        tail = self._parser.flush()
        if not tail:
            return b""
        event = parse_block(tail)
        return self._blinder.blind(tail) if self._keep(event) else b""

    @property
    def pending(self) -> int:
        """Bytes held back: the start of the next event, not yet complete."""
        return self._parser.pending

    def _keep(self, event: SSEEvent) -> bool:
        """Account for ``event``; False when it must not reach the client."""
        if event.event in _ERROR_EVENTS:
            self.saw_error_event = True
        data = event.data
        if not data:
            return True
        # OpenAI sends "usage": null on every chunk once include_usage is on: those
        # are not parsed. "error" only occurs in error events and in the few
        # Responses lifecycle events ("error": null inside the response).
        if _ERROR not in data and not (_USAGE in data and _first_non_null_usage(data) >= 0):
            return True
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            return True
        if not isinstance(payload, dict):
            return True
        if payload.get("error") is not None or payload.get("type") in _ERROR_TYPES:
            self.saw_error_event = True
        return self._account_usage(payload)

    def _account_usage(self, payload: dict[str, Any]) -> bool:
        kind = self._api_kind
        if kind == "chat_completions":
            usage = payload.get("usage")
            if isinstance(usage, dict):
                self.usage = usage_from_object(kind, usage)
                if self._drop_usage_chunk and payload.get("choices") == []:
                    return False
        elif kind == "messages":
            event_type = payload.get("type")
            if event_type == "message_start":
                message = payload.get("message")
                if isinstance(message, dict) and isinstance(message.get("usage"), dict):
                    self.usage = usage_from_object(kind, message["usage"])
            elif event_type == "message_delta":
                merge_messages_delta(self.usage, payload.get("usage"))
        elif kind == "responses":
            response = payload.get("response")
            if isinstance(response, dict) and isinstance(response.get("usage"), dict):
                self.usage = usage_from_object(kind, response["usage"])
        return True
