"""The load generator's pieces: body builder, answer checks, percentiles, result parsing."""

from __future__ import annotations

import math

import orjson
import pytest

from abgate.mock_upstream import MockConfig, start_mock
from bench.loadgen import (
    CheckFailed,
    LoadResult,
    LoadSpec,
    build_body,
    check_json,
    check_sse,
    expected_text,
    parse_result,
    percentile,
    run_load,
)

SPEC = LoadSpec(url="http://unused", model="m", duration_s=1, concurrency=1,
                expect_text=expected_text(3), expect_model="m")


def _event(payload: dict) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _chunk(content: str, model: str = "m") -> bytes:
    return _event({"model": model, "choices": [{"index": 0, "delta": {"content": content}}]})


def _stream(*pieces: str, model: str = "m") -> bytes:
    return b"".join(_chunk(p, model) for p in pieces) + b"data: [DONE]\n\n"


def _result(**overrides: object) -> LoadResult:
    values: dict = {
        "requests": 10, "total_requests": 12, "errors": 0, "error_samples": [],
        "elapsed_s": 1.0, "throughput_rps": 10.0,
        "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": 3.0, "mean": 1.5, "max": 4.0},
        "ttft_ms": None, "gap_ms": None, "max_inflight": 1,
    }
    values.update(overrides)
    return LoadResult(**values)


@pytest.mark.parametrize("size", [0, 1024, 200 * 1024])
def test_body_is_a_chat_request_of_about_the_requested_size(size: int) -> None:
    body = build_body("bench/model", size, stream=True)
    payload = orjson.loads(body)
    assert payload["model"] == "bench/model"
    assert payload["stream"] is True
    assert [m["role"] for m in payload["messages"]] == ["system", "user"]
    assert len(body) == max(size, len(build_body("bench/model", 0, stream=True)))


def test_expected_text_cycles_through_the_wording_one_word_per_chunk() -> None:
    assert expected_text(5, "a b c") == "a b c a b"
    assert expected_text(0) == ""


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 100) == 4.0
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))


def test_result_survives_a_round_trip_through_the_printed_json() -> None:
    result = _result(ttft_ms={"p50": 1.0}, error_samples=["x"])
    assert parse_result(b"some log line\n" + result.to_json() + b"\n") == result


@pytest.mark.parametrize("output", [b"", b"\n\n", b"not json", b"[1, 2]", b'{"requests": 1}'])
def test_unparseable_loadgen_output_is_a_clear_error(output: bytes) -> None:
    with pytest.raises(ValueError, match="load generator"):
        parse_result(output)


def test_a_correct_json_answer_passes_the_check() -> None:
    body = orjson.dumps({"model": "m", "choices": [{"message": {"content": expected_text(3)}}]})
    check_json(body, SPEC)


@pytest.mark.parametrize("body", [
    b"<html>",
    orjson.dumps({"model": "m", "choices": []}),
    orjson.dumps({"model": "partner/internal", "choices": [{"message": {"content":
                  expected_text(3)}}]}),
    orjson.dumps({"model": "m", "choices": [{"message": {"content": "other"}}]}),
])
def test_a_wrong_json_answer_fails_the_check(body: bytes) -> None:
    with pytest.raises(CheckFailed):
        check_json(body, SPEC)


def test_a_correct_stream_passes_the_check() -> None:
    words = expected_text(3).split(" ")
    check_sse(_stream(words[0], " " + words[1], " " + words[2]), SPEC)


def test_a_stream_with_chunks_out_of_order_fails_the_check() -> None:
    words = expected_text(3).split(" ")
    with pytest.raises(CheckFailed, match="order"):
        check_sse(_stream(" " + words[1], words[0], " " + words[2]), SPEC)


def test_a_stream_without_done_fails_the_check() -> None:
    with pytest.raises(CheckFailed, match="DONE"):
        check_sse(_chunk(expected_text(3)), SPEC)


def test_a_stream_that_names_another_model_fails_the_check() -> None:
    with pytest.raises(CheckFailed, match="model"):
        check_sse(_stream(expected_text(3), model="partner/internal"), SPEC)


def test_a_stream_with_a_broken_event_fails_the_check() -> None:
    with pytest.raises(CheckFailed, match="JSON"):
        check_sse(b"data: {oops\n\n" + _stream(expected_text(3)), SPEC)


async def test_a_load_run_against_the_mock_checks_every_answer() -> None:
    async with await start_mock(MockConfig(chunks=4)) as mock:
        good = await run_load(LoadSpec(
            url=f"{mock.url}/v1/chat/completions", model="m", duration_s=0.3, concurrency=2,
            stream=True, expect_text=expected_text(4), expect_model="m"))
        bad = await run_load(LoadSpec(
            url=f"{mock.url}/v1/chat/completions", model="m", duration_s=0.3, concurrency=2,
            expect_text=expected_text(5)))
    assert good.errors == 0 and good.total_requests > 0
    assert good.ttft_ms is not None and good.max_inflight == 2
    assert bad.errors == bad.total_requests > 0
    assert "expected text" in bad.error_samples[0]
