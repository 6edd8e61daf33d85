"""Incremental server-sent-events parser, sans-I/O.

Feed it upstream chunks as they arrive (split anywhere, even inside a ``\\r\\n``);
it returns the events completed so far. Each event keeps its exact original
bytes in ``raw`` so a proxy can forward it unchanged, and::

    b"".join(e.raw for e in events) + parser.flush() == everything fed

Decisions (the WHATWG dispatch rules are relaxed so no byte is ever lost):

* Every block terminated by a blank line yields one :class:`SSEEvent`, including
  blocks with no ``data:`` line (comment-only keep-alives such as ``: ping``, or
  an ``event:`` alone). Such an event has ``data == b""``; consumers that follow
  the spec's "no data, no dispatch" rule skip events with empty data.
* Stray blank lines between events are kept: one is the start of the next
  event's ``raw`` (and otherwise ignored), a run of them a data-less event.
* Multi-line ``data`` is joined with ``\\n``; one space after the colon is
  stripped; ``id:``, ``retry:`` and unknown fields are kept in ``raw`` only.
* Lines may end with ``\\n``, ``\\r\\n`` or ``\\r``, mixed freely.

Speed: the common stream (LF only) is split with ``bytes.find(b"\\n\\n")``, and a
single-line ``data:`` event is decoded by slicing, with no per-line Python work.
A search resumes where the previous one stopped, so an event arriving in many
small chunks is scanned once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["SSEEvent", "SSEParser", "parse_block"]

# End of a line followed by an empty line. A lone "\r" must not be the first half
# of a "\r\n", or "a\r\nb" would look like two line endings.
_BLOCK_END_RE = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r|\n)")
_BOM = b"\xef\xbb\xbf"


@dataclass(slots=True)
class SSEEvent:
    event: bytes | None  # the last ``event:`` field, None when absent
    data: bytes  # ``data:`` lines joined with b"\n"; b"" when there are none
    raw: bytes  # the complete original bytes, including the terminating blank line


def parse_block(raw: bytes) -> SSEEvent:
    """Decode one event block (``raw`` as it appeared on the wire)."""
    # Fast path: b"data: <payload>\n\n" with no other line.
    if raw.startswith(b"data:") and raw.find(b"\n") == len(raw) - 2 and raw[-1:] == b"\n":
        data = raw[5:-2]
        if b"\r" not in data:
            return SSEEvent(None, data[1:] if data[:1] == b" " else data, raw)
    event: bytes | None = None
    data_lines: list[bytes] = []
    for line in raw.splitlines():
        if not line or line[:1] == b":":
            continue
        name, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            data_lines.append(value)
        elif name == b"event":
            event = value
    return SSEEvent(event, b"\n".join(data_lines), raw)


class SSEParser:
    """Splits a byte stream into :class:`SSEEvent` objects; holds at most one partial event."""

    __slots__ = ("_held", "_held_size", "_scan_from", "_started")

    def __init__(self) -> None:
        # The incomplete trailing event, as the chunks it arrived in (joined only
        # when a chunk may complete it, so a large event is not copied per chunk).
        self._held: list[bytes] = []
        self._held_size = 0
        self._scan_from = 0  # no block end starts before this offset of the held bytes
        self._started = False  # a UTF-8 BOM is only meaningful at the very start

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Add ``chunk``; return the events it completed, in order."""
        if not chunk:
            return []
        held = self._held
        if held:
            if b"\n" not in chunk and b"\r" not in chunk and held[-1][-1:] != b"\r":
                # No line ending in it, and no block end waiting on a b"\r\n": cannot
                # complete the event.
                held.append(chunk)
                self._held_size += len(chunk)
                return []
            held.append(chunk)
            buffer = b"".join(held)
        else:
            buffer = chunk
        events: list[SSEEvent] = []
        if b"\r" in buffer:
            start = self._split_any(buffer, events)
        else:
            start = self._split_lf(buffer, events)
        tail = buffer[start:]
        self._held = [tail] if tail else []
        self._held_size = len(tail)
        # Back off one byte: the first half of a block end may be the last byte seen.
        self._scan_from = max(len(tail) - 1, 0)
        return events

    def _split_lf(self, buffer: bytes, events: list[SSEEvent]) -> int:
        """Split a buffer without b"\r"; returns where the unconsumed tail starts."""
        start = 0
        find = buffer.find
        pos = find(b"\n\n", self._scan_from)
        if pos >= 0 and not self._started:
            events.append(self._parse_first(buffer[: pos + 2]))
            start = pos + 2
            pos = find(b"\n\n", start)
        append = events.append
        while pos >= 0:
            end = pos + 2
            append(parse_block(buffer[start:end]))
            start = end
            pos = find(b"\n\n", end)
        return start

    def _split_any(self, buffer: bytes, events: list[SSEEvent]) -> int:
        """Split with any line ending; returns where the unconsumed tail starts."""
        start = 0
        size = len(buffer)
        # Line endings are at most two bytes, so a block end is at most four; back
        # off three so one that began in the previous chunk is found again.
        scan = max(self._scan_from - 2, 0)
        search = _BLOCK_END_RE.search
        while (match := search(buffer, scan)) is not None:
            end = match.end()
            if end == size and buffer[end - 1 :] == b"\r":
                # b"\r" last: it may be the start of a b"\r\n" still on its way.
                break
            raw = buffer[start:end]
            events.append(parse_block(raw) if self._started else self._parse_first(raw))
            start = scan = end
        return start

    def _parse_first(self, raw: bytes) -> SSEEvent:
        self._started = True
        if raw.startswith(_BOM):
            event = parse_block(raw[len(_BOM) :])
            event.raw = raw
            return event
        return parse_block(raw)

    def skip_events(self) -> None:
        """Note that whole events went by without being fed (the stream has started).

        Only while nothing is held; from now on a leading BOM is ordinary data.
        """
        self._started = True

    def flush(self) -> bytes:
        """Return (and forget) the bytes of the incomplete event held back, if any."""
        tail = b"".join(self._held)
        self._held, self._held_size, self._scan_from = [], 0, 0
        return tail

    @property
    def pending(self) -> int:
        """Number of bytes held back (the incomplete trailing event)."""
        return self._held_size
