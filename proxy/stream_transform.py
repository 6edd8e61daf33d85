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
* ``events`` counts events with data (``data: [DONE]`` included; comment-only
  keep-alives are not counted).
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
_ERROR = b'"error"'
_ERROR_EVENTS = frozenset({b"error", b"response.failed"})
_ERROR_TYPES = frozenset({"error", "response.failed"})
# The character after ``"key"`` and its colon: tells a null value from a real one.
_VALUE_START_RE = re.compile(rb"\s*:\s*(.)", re.DOTALL)


def _has_non_null(data: bytes, key: bytes) -> bool:
    """True when some ``key`` member in the JSON ``data`` has a non-null value."""
    start = data.find(key)
    while start >= 0:
        match = _VALUE_START_RE.match(data, start + len(key))
        if match is not None and match.group(1) != b"n":
            return True
        start = data.find(key, start + len(key))
    return False


class StreamTransformer:
    """One upstream SSE stream of ``api_kind`` on its way to the client."""

    __slots__ = (
        "_api_kind",
        "_blinder",
        "_drop_usage_chunk",
        "_parser",
        "events",
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
        self.events = 0

    def feed(self, chunk: bytes) -> bytes:
        """Return the blinded bytes to forward now (complete events only; may be b"")."""
        events = self._parser.feed(chunk)
        if not events:
            return b""
        if len(events) == 1:
            raw = events[0].raw if self._keep(events[0]) else b""
        else:
            raw = b"".join([event.raw for event in events if self._keep(event)])
        return self._blinder.blind(raw) if raw else b""

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
        self.events += 1
        # OpenAI sends "usage": null on every chunk once include_usage is on: those
        # are not parsed. "error" only occurs in error events and in the few
        # Responses lifecycle events ("error": null inside the response).
        if _ERROR not in data and not (_USAGE in data and _has_non_null(data, _USAGE)):
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
