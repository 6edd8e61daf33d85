"""proxy.sse: incremental SSE parsing that never loses or reorders a byte."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.sse import SSEEvent, SSEParser, parse_block


def feed_all(chunks: list[bytes]) -> tuple[list[SSEEvent], SSEParser]:
    parser = SSEParser()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    return events, parser


def test_single_data_line_event() -> None:
    events, parser = feed_all([b'data: {"a":1}\n\n'])
    assert events == [SSEEvent(None, b'{"a":1}', b'data: {"a":1}\n\n')]
    assert parser.flush() == b""


def test_event_name_and_data() -> None:
    [event], _ = feed_all([b"event: message_start\ndata: {}\n\n"])
    assert event.event == b"message_start"
    assert event.data == b"{}"


def test_multi_line_data_is_joined_with_newline() -> None:
    [event], _ = feed_all([b"data: one\ndata: two\ndata:three\n\n"])
    assert event.data == b"one\ntwo\nthree"


def test_only_one_space_after_the_colon_is_stripped() -> None:
    [spaced, bare], _ = feed_all([b"data:  x\n\ndata:x\n\n"])
    assert spaced.data == b" x"
    assert bare.data == b"x"


def test_field_without_colon_is_an_empty_value() -> None:
    [event], _ = feed_all([b"data\n\n"])
    assert event.data == b""


def test_comment_only_block_is_an_event_without_data() -> None:
    [event], _ = feed_all([b": keep-alive\n\n"])
    assert event == SSEEvent(None, b"", b": keep-alive\n\n")


def test_comment_lines_inside_an_event_stay_in_raw_only() -> None:
    raw = b": note\ndata: x\n: another\n\n"
    [event], _ = feed_all([raw])
    assert event.data == b"x"
    assert event.raw == raw


def test_id_and_retry_fields_stay_in_raw_only() -> None:
    raw = b"id: 7\nretry: 100\ndata: x\n\n"
    [event], _ = feed_all([raw])
    assert (event.event, event.data, event.raw) == (None, b"x", raw)


def test_last_event_field_wins() -> None:
    [event], _ = feed_all([b"event: a\nevent: b\ndata: x\n\n"])
    assert event.event == b"b"


def test_crlf_line_endings() -> None:
    [event], _ = feed_all([b"event: e\r\ndata: x\r\n\r\n"])
    assert (event.event, event.data) == (b"e", b"x")


def test_cr_line_endings() -> None:
    events, parser = feed_all([b"data: a\r\rdata: b\r\rdata: c"])
    assert [e.data for e in events] == [b"a", b"b"]
    assert parser.flush() == b"data: c"


def test_mixed_line_endings() -> None:
    events, _ = feed_all([b"data: a\r\n\ndata: b\n\r\ndata: c\r\r\n"])
    assert [e.data for e in events] == [b"a", b"b", b"c"]


def test_crlf_split_between_chunks_is_one_line_ending() -> None:
    events, parser = feed_all([b"data: a\r", b"\ndata: b\r\n\r\n"])
    assert [e.data for e in events] == [b"a\nb"]
    assert parser.flush() == b""


def test_trailing_cr_waits_for_the_next_byte() -> None:
    # b"\r\r" could be "\r" + the start of "\r\n": the event is not dispatched yet.
    parser = SSEParser()
    assert parser.feed(b"data: a\r\r") == []
    first, second = parser.feed(b"\ndata: b\r\n\r\n")
    assert first.raw == b"data: a\r\r\n"
    assert second.raw == b"data: b\r\n\r\n"
    assert parser.flush() == b""


def test_trailing_cr_is_returned_by_flush_when_the_stream_ends() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\r\r") == []
    assert parser.flush() == b"data: a\r\r"


def test_incomplete_event_is_held_until_complete() -> None:
    parser = SSEParser()
    assert parser.feed(b'data: {"par') == []
    assert parser.pending == len(b'data: {"par')
    [event] = parser.feed(b'tial":1}\n\n')
    assert event.data == b'{"partial":1}'
    assert parser.pending == 0


def test_flush_returns_the_incomplete_tail_once() -> None:
    parser = SSEParser()
    parser.feed(b"data: a\n\ndata: unterminated")
    assert parser.flush() == b"data: unterminated"
    assert parser.flush() == b""


def test_event_spread_over_many_chunks_without_newlines() -> None:
    payload = b"x" * 10_000
    chunks = [b"data: "] + [payload[i : i + 7] for i in range(0, len(payload), 7)] + [b"\n\n"]
    events, parser = feed_all(chunks)
    assert [e.data for e in events] == [payload]
    assert parser.flush() == b""


def test_one_stray_blank_line_is_kept_at_the_start_of_the_next_raw() -> None:
    events, _ = feed_all([b"data: a\n\n\ndata: b\n\n"])
    assert [(e.data, e.raw) for e in events] == [
        (b"a", b"data: a\n\n"),
        (b"b", b"\ndata: b\n\n"),
    ]


def test_a_run_of_blank_lines_is_an_event_without_data() -> None:
    events, _ = feed_all([b"data: a\n\n\n\ndata: b\n\n"])
    assert [e.data for e in events] == [b"a", b"", b"b"]
    assert b"".join(e.raw for e in events) == b"data: a\n\n\n\ndata: b\n\n"


def test_utf8_bom_at_stream_start_is_ignored_but_kept() -> None:
    [event], _ = feed_all([b"\xef\xbb\xbfdata: x\n\n"])
    assert event.data == b"x"
    assert event.raw == b"\xef\xbb\xbfdata: x\n\n"


def test_bom_later_in_the_stream_is_not_special() -> None:
    [_, event], _ = feed_all([b"data: a\n\n\xef\xbb\xbfdata: x\n\n"])
    assert event.data == b""


def test_parse_block_handles_a_block_without_terminator() -> None:
    assert parse_block(b"event: e\ndata: x").data == b"x"


# --- fuzzing -----------------------------------------------------------------

_ENDINGS = st.sampled_from([b"\n", b"\r\n", b"\r"])
_VALUE = st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b""))


@st.composite
def sse_streams(draw: st.DrawFn) -> tuple[bytes, list[tuple[bytes | None, bytes]]]:
    """A serialised stream and the (event, data) each of its blocks must decode to."""
    out = bytearray()
    expected: list[tuple[bytes | None, bytes]] = []
    for _ in range(draw(st.integers(0, 6))):
        eol = draw(_ENDINGS)
        name = draw(st.none() | st.from_regex(rb"\A[a-z_.]{1,12}\Z"))
        datas = draw(st.lists(_VALUE, max_size=3))
        if draw(st.booleans()):
            out += b": comment" + eol
        if name is not None:
            out += b"event: " + name + eol
        for data in datas:
            out += b"data: " + data + eol
        if name is None and not datas:
            out += b":" + eol  # a block needs at least one line
        # A blank line; after a "\r" it must not be "\n" (that would make one "\r\n").
        out += draw(st.sampled_from([b"\r", b"\r\n"])) if eol == b"\r" else draw(_ENDINGS)
        expected.append((name, b"\n".join(datas)))
    return bytes(out), expected


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    pieces, start = [], 0
    for point in points:
        pieces.append(data[start:point])
        start = point
    pieces.append(data[start:])
    return pieces


@settings(deadline=None)  # CI machines are shared: no per-example timing
@given(sse_streams(), st.lists(st.integers(0, 400), max_size=12))
def test_any_chunking_yields_the_same_events_and_loses_no_byte(
    stream: tuple[bytes, list[tuple[bytes | None, bytes]]], cuts: list[int]
) -> None:
    data, expected = stream
    events, parser = feed_all(split(data, cuts))
    tail = parser.flush()
    assert b"".join(e.raw for e in events) + tail == data
    whole_events, _ = feed_all([data])
    assert events == whole_events
    # A final "\r"-terminated block may be held back (its "\n" might still come).
    decoded = [(e.event, e.data) for e in events]
    if tail:
        decoded.append((parse_block(tail).event, parse_block(tail).data))
    assert decoded == expected


@settings(deadline=None)  # CI machines are shared: no per-example timing
@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=8))
def test_arbitrary_bytes_never_crash_and_are_all_returned(data: bytes, cuts: list[int]) -> None:
    events, parser = feed_all(split(data, cuts))
    assert b"".join(e.raw for e in events) + parser.flush() == data
