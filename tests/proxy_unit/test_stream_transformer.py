"""proxy.stream_transform: streams are forwarded event by event, blinded, with usage read."""

from __future__ import annotations

import re
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.blinding import Blinder
from proxy.sse import SSEEvent, SSEParser
from proxy.stream_transform import StreamTransformer
from proxy.usage import Usage

PUBLIC = "partner/preview-foo"
INTERNAL = "acme-ckpt-7"
BLINDER = Blinder(PUBLIC, INTERNAL, "https://api.acme-labs.ai/v1")


def sse(payload: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + orjson.dumps(payload) + b"\n\n"


def chat_chunk(content: str) -> bytes:
    return sse(
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "model": INTERNAL,
            "choices": [{"index": 0, "delta": {"content": content}}],
            "usage": None,
        }
    )


CHAT_USAGE = {
    "prompt_tokens": 40,
    "completion_tokens": 7,
    "prompt_tokens_details": {"cached_tokens": 10},
}
CHAT_USAGE_CHUNK = sse({"id": "c1", "model": INTERNAL, "choices": [], "usage": CHAT_USAGE})
CHAT_STREAM = chat_chunk("Hel") + chat_chunk("lo") + CHAT_USAGE_CHUNK + b"data: [DONE]\n\n"

MESSAGES_STREAM = (
    sse(
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "model": INTERNAL,
                "usage": {
                    "input_tokens": 25,
                    "output_tokens": 1,
                    "cache_read_input_tokens": 100,
                    "cache_creation_input_tokens": 8,
                },
            },
        },
        "message_start",
    )
    + sse({"type": "content_block_start", "index": 0}, "content_block_start")
    + sse(
        {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "Hi"}},
        "content_block_delta",
    )
    + sse({"type": "ping"}, "ping")
    + sse(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 15},
        },
        "message_delta",
    )
    + sse({"type": "message_stop"}, "message_stop")
)


def response_object(status: str, usage: dict[str, Any] | None) -> dict[str, Any]:
    return {"id": "resp_1", "model": INTERNAL, "status": status, "error": None, "usage": usage}


RESPONSES_STREAM = (
    sse(
        {"type": "response.created", "response": response_object("in_progress", None)},
        "response.created",
    )
    + sse(
        {"type": "response.in_progress", "response": response_object("in_progress", None)},
        "response.in_progress",
    )
    + sse({"type": "response.output_text.delta", "delta": "Hi"}, "response.output_text.delta")
    + sse(
        {
            "type": "response.completed",
            "response": response_object(
                "completed",
                {
                    "input_tokens": 60,
                    "input_tokens_details": {"cached_tokens": 20},
                    "output_tokens": 5,
                },
            ),
        },
        "response.completed",
    )
)


def run(kind: str, chunks: list[bytes], *, drop: bool = False) -> tuple[bytes, StreamTransformer]:
    transformer = StreamTransformer(kind, BLINDER, drop_usage_chunk=drop)
    out = b"".join(transformer.feed(chunk) for chunk in chunks) + transformer.finish()
    return out, transformer


def test_chat_stream_usage_comes_from_the_final_usage_chunk() -> None:
    _, t = run("chat_completions", [CHAT_STREAM])
    assert t.usage == Usage(30, 7, 10, 0)


def test_chat_stream_says_the_public_id_in_every_chunk() -> None:
    out, _ = run("chat_completions", [CHAT_STREAM])
    assert INTERNAL.encode() not in out
    assert out.count(f'"model":"{PUBLIC}"'.encode()) == 3


def test_chat_done_marker_passes_through() -> None:
    out, _ = run("chat_completions", [CHAT_STREAM])
    assert out.endswith(b"data: [DONE]\n\n")


def test_forced_usage_chunk_is_dropped_but_still_counted() -> None:
    out, t = run("chat_completions", [CHAT_STREAM], drop=True)
    assert out == BLINDER.blind(chat_chunk("Hel") + chat_chunk("lo") + b"data: [DONE]\n\n")
    assert t.usage == Usage(30, 7, 10, 0)


def test_usage_chunk_is_forwarded_when_the_client_asked_for_it() -> None:
    out, _ = run("chat_completions", [CHAT_STREAM], drop=False)
    assert b'"choices":[]' in out


def test_usage_riding_on_a_content_chunk_is_never_dropped() -> None:
    chunk = sse({"model": INTERNAL, "choices": [{"delta": {"content": "x"}}], "usage": CHAT_USAGE})
    out, t = run("chat_completions", [chunk], drop=True)
    assert out == BLINDER.blind(chunk)
    assert t.usage == Usage(30, 7, 10, 0)


def test_drop_usage_chunk_only_applies_to_chat() -> None:
    out, _ = run("messages", [MESSAGES_STREAM], drop=True)
    assert out == BLINDER.blind(MESSAGES_STREAM)


def test_messages_usage_combines_message_start_and_message_delta() -> None:
    out, t = run("messages", [MESSAGES_STREAM])
    assert t.usage == Usage(25, 15, 100, 8)
    assert INTERNAL.encode() not in out


def test_responses_usage_comes_from_response_completed() -> None:
    out, t = run("responses", [RESPONSES_STREAM])
    assert t.usage == Usage(40, 5, 20, 0)
    assert out.count(f'"model":"{PUBLIC}"'.encode()) == 3


def test_responses_null_usage_does_not_reset_earlier_usage() -> None:
    late = sse({"type": "response.in_progress", "response": response_object("x", None)})
    _, t = run("responses", [RESPONSES_STREAM + late])
    assert t.usage == Usage(40, 5, 20, 0)


def test_partial_event_is_held_until_complete() -> None:
    t = StreamTransformer("chat_completions", BLINDER, drop_usage_chunk=False)
    event = chat_chunk("x")
    assert t.feed(event[:20]) == b""
    assert t.feed(event[20:]) == BLINDER.blind(event)


def test_internal_id_split_across_chunks_is_still_blinded() -> None:
    event = sse({"choices": [{"delta": {"content": f"I am {INTERNAL}"}}]})
    cut = event.index(INTERNAL.encode()) + 4
    out, _ = run("chat_completions", [event[:cut], event[cut:]])
    assert INTERNAL.encode() not in out
    assert PUBLIC.encode() in out


def test_keep_alive_comments_pass_through() -> None:
    out, _ = run("chat_completions", [b": OPENROUTER PROCESSING\n\n", chat_chunk("a")])
    assert out == b": OPENROUTER PROCESSING\n\n" + BLINDER.blind(chat_chunk("a"))


def test_unterminated_final_event_is_forwarded_and_accounted() -> None:
    out, t = run("chat_completions", [CHAT_USAGE_CHUNK[:-2]])
    assert out == BLINDER.blind(CHAT_USAGE_CHUNK[:-2])
    assert t.usage == Usage(30, 7, 10, 0)


def test_unterminated_usage_only_chunk_is_dropped_when_forced() -> None:
    out, _ = run("chat_completions", [CHAT_USAGE_CHUNK[:-1]], drop=True)
    assert out == b""


def test_malformed_json_with_usage_is_forwarded_untouched() -> None:
    bad = b'data: {"usage": {"prompt_tokens": 3, \n\n'
    out, t = run("chat_completions", [bad])
    assert out == bad
    assert t.usage == Usage()


def test_error_event_is_detected() -> None:
    error = sse(
        {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}, "error"
    )
    _, t = run("messages", [MESSAGES_STREAM[:200], MESSAGES_STREAM[200:], error])
    assert t.saw_error_event


def test_responses_failed_event_is_an_error() -> None:
    failed = sse(
        {"type": "response.failed", "response": response_object("failed", None)}, "response.failed"
    )
    _, t = run("responses", [failed])
    assert t.saw_error_event


def test_responses_error_event_without_event_line_is_detected() -> None:
    _, t = run("responses", [sse({"type": "error", "code": "server_error", "message": "x"})])
    assert t.saw_error_event


def test_chat_chunk_with_an_error_member_is_an_error() -> None:
    _, t = run("chat_completions", [chat_chunk("a"), sse({"error": {"message": "boom"}})])
    assert t.saw_error_event


def test_clean_streams_have_no_error() -> None:
    for kind, stream in (
        ("chat_completions", CHAT_STREAM),
        ("messages", MESSAGES_STREAM),
        ("responses", RESPONSES_STREAM),
    ):
        assert not run(kind, [stream])[1].saw_error_event


def test_content_that_mentions_error_is_not_an_error() -> None:
    _, t = run("chat_completions", [chat_chunk('{"error": "not really"}')])
    assert not t.saw_error_event


def test_empty_stream() -> None:
    out, t = run("chat_completions", [b""])
    assert (out, t.usage, t.saw_error_event) == (b"", Usage(), False)


# --- fuzzing -----------------------------------------------------------------

_TEXT = st.text(max_size=20) | st.builds(
    lambda a, b: a + INTERNAL + b, st.text(max_size=5), st.text(max_size=5)
)
_COUNT = st.integers(0, 10**6)


@st.composite
def generated_streams(draw: st.DrawFn) -> tuple[str, bytes, Usage]:
    """A stream of ``kind`` with generated content and counts, and the usage it reports."""
    kind = draw(st.sampled_from(["chat_completions", "messages", "responses"]))
    texts = draw(st.lists(_TEXT, max_size=6))
    inp, out, cached = draw(_COUNT), draw(_COUNT), draw(_COUNT)
    if kind == "chat_completions":
        stream = b"".join(chat_chunk(t) for t in texts)
        usage = {
            "prompt_tokens": inp + cached,
            "completion_tokens": out,
            "prompt_tokens_details": {"cached_tokens": cached},
        }
        stream += sse({"model": INTERNAL, "choices": [], "usage": usage}) + b"data: [DONE]\n\n"
        expected = Usage(inp, out, cached, 0)
    elif kind == "messages":
        start = {
            "type": "message_start",
            "message": {
                "model": INTERNAL,
                "usage": {
                    "input_tokens": inp,
                    "output_tokens": 1,
                    "cache_read_input_tokens": cached,
                },
            },
        }
        stream = sse(start, "message_start") + b"".join(
            sse(
                {"type": "content_block_delta", "delta": {"type": "text_delta", "text": t}},
                "content_block_delta",
            )
            for t in texts
        )
        stream += sse({"type": "message_delta", "usage": {"output_tokens": out}}, "message_delta")
        expected = Usage(inp, out, cached, 0)
    else:
        stream = sse(
            {"type": "response.created", "response": response_object("x", None)}, "response.created"
        )
        stream += b"".join(
            sse({"type": "response.output_text.delta", "delta": t}, "response.output_text.delta")
            for t in texts
        )
        usage = {
            "input_tokens": inp + cached,
            "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": out,
        }
        stream += sse(
            {"type": "response.completed", "response": response_object("completed", usage)},
            "response.completed",
        )
        expected = Usage(inp, out, cached, 0)
    if draw(st.booleans()):
        stream = stream.replace(b"\n", b"\r\n")
    if draw(st.booleans()):
        stream = b": keep-alive\n\n" + stream
    return kind, stream, expected


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    chunks, start = [], 0
    for cut in sorted(min(c, len(data)) for c in cuts):
        chunks.append(data[start:cut])
        start = cut
    chunks.append(data[start:])
    return chunks


@settings(deadline=None)  # CI machines are shared: no per-example timing
@given(generated_streams(), st.lists(st.integers(0, 3000), max_size=25), st.booleans())
def test_any_chunking_gives_the_same_bytes_and_usage(
    case: tuple[str, bytes, Usage], cuts: list[int], drop: bool
) -> None:
    kind, stream, expected = case
    whole_out, whole = run(kind, [stream], drop=drop)
    out, split = run(kind, split_at(stream, cuts), drop=drop)
    assert out == whole_out
    assert (split.usage, split.saw_error_event) == (whole.usage, whole.saw_error_event)
    assert split.usage == expected
    assert not split.saw_error_event
    assert INTERNAL.encode() not in out


@settings(deadline=None)  # CI machines are shared: no per-example timing
@given(generated_streams(), st.lists(st.integers(0, 3000), max_size=25), st.booleans())
def test_never_holds_more_than_one_partial_event(
    case: tuple[str, bytes, Usage], cuts: list[int], drop: bool
) -> None:
    kind, stream, _ = case
    t = StreamTransformer(kind, BLINDER, drop_usage_chunk=drop)
    longest_event = max(len(e) for e in re.split(rb"\r\n\r\n|\n\n", stream)) + 4
    for chunk in split_at(stream, cuts):
        t.feed(chunk)
        assert t.pending <= longest_event
    t.finish()
    assert t.pending == 0


# --- whole-chunk fast path -----------------------------------------------------

_EVENTS = st.sampled_from(
    [
        chat_chunk("plain"),
        chat_chunk(INTERNAL),
        b'data: {"choices":[{"delta":{"content":"x"}}],"usage": null}\n\n',
        b'data: {"choices":[],"usage":null,"x":{"usage":null}}\n\n',
        b'data: {"choices":[{"delta":{"content":"\\"usage"}}],"usage":null}\n\n',
        b'data: {"usage"usage":null}\n\n',
        b'data: {"content":"ends with key","usage"\n\n',
        b'data: {"usage"  :\n\n',
        CHAT_USAGE_CHUNK,
        sse({"choices": [{"delta": {"content": "u"}}], "usage": CHAT_USAGE}),
        sse({"error": {"message": "boom"}}),
        sse({"choices": [], "usage": None}, "error"),
        b"data:\n\n",
        b"data: \n\n",
        b"data:x\n\n",
        b": keep-alive\n\n",
        b"data: a\ndata: b\n\n",
        # A usage whose value a line break separates from its key: the parser
        # joins the lines into valid JSON, so the fast path must not skip it.
        b'data: {"choices":[],"usage"\ndata: :' + orjson.dumps(CHAT_USAGE) + b"}\n\n",
        b'data: {"choices":[],"usage"\ndata: : null}\n\n',
        sse({"type": "ping"}, "message"),
        b"data: [DONE]\n\n",
        b"\xef\xbb\xbfdata: after a BOM\n\n",  # a BOM only counts as one at the very start
    ]
)


class _CountingParser(SSEParser):
    calls = 0

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        self.calls += 1
        return super().feed(chunk)


def test_event_aligned_plain_chunks_bypass_the_parser() -> None:
    t = StreamTransformer("chat_completions", BLINDER, drop_usage_chunk=True)
    parser = t._parser = _CountingParser()
    chunks = [chat_chunk(f"w{i}") for i in range(5)]
    out = b"".join(t.feed(c) for c in chunks)
    assert parser.calls == 0
    assert out == b"".join(chunks).replace(INTERNAL.encode(), PUBLIC.encode())


class _RecordingParser(SSEParser):
    def __init__(self) -> None:
        super().__init__()
        self.fed: list[bytes] = []

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        self.fed.append(chunk)
        return super().feed(chunk)


def test_a_whole_stream_in_one_read_is_parsed_only_from_its_usage_chunk() -> None:
    t = StreamTransformer("chat_completions", BLINDER, drop_usage_chunk=True)
    parser = t._parser = _RecordingParser()
    plain = b"".join(chat_chunk(f"w{i}") for i in range(20))
    tail = CHAT_USAGE_CHUNK + b"data: [DONE]\n\n"
    out = t.feed(plain + tail)
    assert parser.fed == [tail]
    assert out == (plain + b"data: [DONE]\n\n").replace(INTERNAL.encode(), PUBLIC.encode())
    assert t.usage.output_tokens == CHAT_USAGE["completion_tokens"]


def test_a_bom_after_a_chunk_that_bypassed_the_parser_is_not_a_bom() -> None:
    later = b"\xef\xbb\xbfdata: x\n\n"  # its field name is "\ufeffdata": no data
    fast_out, fast = run("chat_completions", [chat_chunk("a"), later])
    slow_out, slow = run("chat_completions", [chat_chunk("a") + later])
    assert fast_out == slow_out
    assert fast.usage == slow.usage


@settings(deadline=None)  # CI machines are shared: no per-example timing
@given(st.lists(st.lists(_EVENTS, min_size=1, max_size=4), max_size=8), st.booleans())
def test_whole_chunks_and_byte_by_byte_feeding_agree(groups: list[list[bytes]], drop: bool) -> None:
    """Event-aligned chunks take the fast path where they can; single bytes never do."""
    chunks = [b"".join(group) for group in groups]
    fast_out, fast = run("chat_completions", chunks, drop=drop)
    stream = b"".join(chunks)
    slow_out, slow = run("chat_completions", [stream[i:i + 1] for i in range(len(stream))],
                         drop=drop)
    assert fast_out == slow_out
    assert (fast.usage, fast.saw_error_event) == (slow.usage, slow.saw_error_event)
