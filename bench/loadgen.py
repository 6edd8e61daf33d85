"""Closed-loop HTTP load generator for chat completions (one process, uvloop).

``--concurrency`` workers each send one request after another for
``--warmup`` + ``--duration`` seconds; only requests started after the warm-up
are measured. Every answer is checked: status 200, the expected content in
order, every SSE event well formed with ``[DONE]`` last, and (optionally) the
``model`` of every body or event equal to ``--expect-model`` (blinding). A
failed check is an error; the harness fails the benchmark on any error.

Prints one JSON object (see :class:`LoadResult`) on stdout:

    python -m bench.loadgen --url http://127.0.0.1:9100/v1/chat/completions \\
        --model m --duration 10 --concurrency 16 --body-bytes 1024 --stream
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import aiohttp
import orjson
import uvloop

__all__ = [
    "CheckFailed",
    "LoadResult",
    "LoadSpec",
    "build_body",
    "check_json",
    "check_sse",
    "expected_text",
    "parse_result",
    "percentile",
    "run_load",
]

_MAX_ERROR_SAMPLES = 5
_DEFAULT_WORDING = "Hello from the mock upstream"


@dataclass(frozen=True)
class LoadSpec:
    url: str
    model: str
    duration_s: float
    concurrency: int
    body_bytes: int = 1024
    stream: bool = False
    warmup_s: float = 0.0
    expect_text: str | None = None
    expect_model: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 120.0


@dataclass
class LoadResult:
    """What one load run measured. Latencies and gaps are in milliseconds."""

    requests: int  # measured: started after the warm-up
    total_requests: int  # everything sent, warm-up included (what the server served)
    errors: int
    error_samples: list[str]
    elapsed_s: float  # measured window
    throughput_rps: float
    latency_ms: dict[str, float]
    ttft_ms: dict[str, float] | None
    gap_ms: dict[str, float] | None
    max_inflight: int

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))


def parse_result(raw: bytes | str) -> LoadResult:
    """A :class:`LoadResult` from the loadgen's stdout (its last non-empty line)."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError("load generator printed no result")
    try:
        data = orjson.loads(lines[-1])
    except orjson.JSONDecodeError:
        raise ValueError(f"load generator result is not JSON: {lines[-1][:200]!r}") from None
    if not isinstance(data, dict):
        raise ValueError("load generator result is not a JSON object")
    try:
        return LoadResult(**data)
    except TypeError as exc:
        raise ValueError(f"load generator result has the wrong fields: {exc}") from None


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in 0..100) of already sorted values."""
    if not sorted_values:
        return math.nan
    rank = (len(sorted_values) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def summarize(values_s: list[float]) -> dict[str, float]:
    """p50/p90/p99/mean/max of seconds, reported in milliseconds."""
    ordered = sorted(values_s)
    if not ordered:
        return {"p50": math.nan, "p90": math.nan, "p99": math.nan, "mean": math.nan,
                "max": math.nan}
    return {
        "p50": percentile(ordered, 50) * 1000,
        "p90": percentile(ordered, 90) * 1000,
        "p99": percentile(ordered, 99) * 1000,
        "mean": sum(ordered) / len(ordered) * 1000,
        "max": ordered[-1] * 1000,
    }


def build_body(model: str, size: int, stream: bool) -> bytes:
    """A chat request of about ``size`` bytes: a long system prompt plus one user turn."""
    def encode(prompt: str) -> bytes:
        return orjson.dumps({
            "model": model,
            "stream": stream,
            "messages": [{"role": "system", "content": prompt},
                         {"role": "user", "content": "Say hello."}],
        })

    base = len(encode(""))
    sentence = "You are a careful assistant; answer briefly and cite nothing. "
    filler = (sentence * (max(size - base, 0) // len(sentence) + 1))[: max(size - base, 0)]
    return encode(filler)


def expected_text(chunks: int, wording: str = _DEFAULT_WORDING) -> str:
    """The content the mock upstream answers with ``chunks`` chunks (one word each)."""
    words = wording.split()
    return "".join((" " if i else "") + words[i % len(words)] for i in range(chunks))


class CheckFailed(Exception):
    """An answer is not what the mock sent (content, order, model or framing)."""


def check_json(data: bytes, spec: LoadSpec) -> None:
    """A non-streamed chat completion with the expected content and model."""
    try:
        payload = orjson.loads(data)
        content = payload["choices"][0]["message"]["content"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        raise CheckFailed(f"not a chat completion: {data[:120]!r}") from None
    if spec.expect_model is not None and payload.get("model") != spec.expect_model:
        raise CheckFailed(f"model {payload.get('model')!r} != {spec.expect_model!r}")
    if spec.expect_text is not None and content != spec.expect_text:
        raise CheckFailed(f"content {content[:60]!r} is not the expected text")


def check_sse(data: bytes, spec: LoadSpec) -> None:
    """A chat stream: JSON events, the expected content in order, ``[DONE]`` last."""
    events = [e for e in data.replace(b"\r\n", b"\n").split(b"\n\n") if e.strip()]
    if not events or events[-1].strip() != b"data: [DONE]":
        raise CheckFailed("stream did not end with data: [DONE]")
    parts: list[str] = []
    for event in events[:-1]:
        lines = [line for line in event.split(b"\n") if line.startswith(b"data:")]
        if not lines:
            continue  # a comment (keep-alive) or an event without data
        try:
            payload = orjson.loads(b"".join(line[5:] for line in lines))
        except orjson.JSONDecodeError:
            raise CheckFailed(f"SSE event is not JSON: {event[:120]!r}") from None
        if spec.expect_model is not None and payload.get("model") != spec.expect_model:
            raise CheckFailed(f"event model {payload.get('model')!r} != {spec.expect_model!r}")
        for choice in payload.get("choices") or ():
            piece = (choice.get("delta") or {}).get("content")
            if piece:
                parts.append(piece)
    if spec.expect_text is not None and "".join(parts) != spec.expect_text:
        raise CheckFailed("stream content is not the expected text in order")


@dataclass
class _Tally:
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    completed_in_window: int = 0
    total: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    inflight: int = 0
    max_inflight: int = 0

    def error(self, message: str) -> None:
        self.errors += 1
        if len(self.error_samples) < _MAX_ERROR_SAMPLES:
            self.error_samples.append(message)


async def _one(session: aiohttp.ClientSession, spec: LoadSpec, body: bytes,
               headers: dict[str, str], tally: _Tally, measured: bool) -> None:
    started = time.perf_counter()
    ttft: float | None = None
    gaps: list[float] = []
    async with session.post(spec.url, data=body, headers=headers) as resp:
        if spec.stream:
            pieces: list[bytes] = []
            previous = started
            async for piece in resp.content.iter_any():
                now = time.perf_counter()
                if ttft is None:
                    ttft = now - started
                else:
                    gaps.append(now - previous)
                    # Events that arrived in the same read were 0 s apart.
                    gaps.extend([0.0] * max(piece.count(b"\n\n") - 1, 0))
                previous = now
                pieces.append(piece)
            data = b"".join(pieces)
        else:
            data = await resp.read()
        status = resp.status
    latency = time.perf_counter() - started
    if status != 200:
        raise CheckFailed(f"status {status}: {data[:160]!r}")
    (check_sse if spec.stream else check_json)(data, spec)
    if measured:
        tally.latencies.append(latency)
        if ttft is not None:
            tally.ttfts.append(ttft)
            tally.gaps.extend(gaps)


async def _worker(index: int, session: aiohttp.ClientSession, spec: LoadSpec, body: bytes,
                  tally: _Tally, warm_end: float, deadline: float) -> None:
    # Distinct subjects so the experiment route buckets workers across variants.
    headers = {"content-type": "application/json", "x-machine-id": f"bench-{index}",
               **spec.headers}
    while time.perf_counter() < deadline:
        measured = time.perf_counter() >= warm_end
        tally.inflight += 1
        tally.max_inflight = max(tally.max_inflight, tally.inflight)
        try:
            await _one(session, spec, body, headers, tally, measured)
        except CheckFailed as exc:
            tally.error(str(exc))
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            tally.error(f"{type(exc).__name__}: {exc}")
        finally:
            tally.inflight -= 1
            tally.total += 1
        if measured and time.perf_counter() <= deadline:
            tally.completed_in_window += 1


async def run_load(spec: LoadSpec) -> LoadResult:
    """Run the load described by ``spec`` and summarize it."""
    body = build_body(spec.model, spec.body_bytes, spec.stream)
    tally = _Tally()
    connector = aiohttp.TCPConnector(limit=0, force_close=False, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=spec.timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                     skip_auto_headers=("User-Agent",)) as session:
        start = time.perf_counter()
        warm_end = start + spec.warmup_s
        deadline = warm_end + spec.duration_s
        await asyncio.gather(*(
            _worker(i, session, spec, body, tally, warm_end, deadline)
            for i in range(spec.concurrency)
        ))
    elapsed = max(min(time.perf_counter(), deadline) - warm_end, 1e-9)
    return LoadResult(
        requests=len(tally.latencies),
        total_requests=tally.total,
        errors=tally.errors,
        error_samples=tally.error_samples,
        elapsed_s=elapsed,
        throughput_rps=tally.completed_in_window / elapsed,
        latency_ms=summarize(tally.latencies),
        ttft_ms=summarize(tally.ttfts) if spec.stream else None,
        gap_ms=summarize(tally.gaps) if spec.stream else None,
        max_inflight=tally.max_inflight,
    )


def _parse_args(argv: Sequence[str] | None) -> LoadSpec:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--duration", type=float, required=True, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=0.0, help="unmeasured seconds first")
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--body-bytes", type=int, default=1024)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--expect-chunks", type=int, default=None,
                        help="check the mock's content of this many chunks")
    parser.add_argument("--expect-model", default=None, help="every model field must be this")
    parser.add_argument("--header", action="append", default=[], metavar="NAME:VALUE")
    parser.add_argument("--timeout", type=float, default=120.0, help="per request, seconds")
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.duration <= 0 or args.warmup < 0 or args.body_bytes < 0:
        parser.error("--concurrency >= 1, --duration > 0, --warmup >= 0, --body-bytes >= 0")
    headers = {}
    for item in args.header:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            parser.error(f"--header must be NAME:VALUE, got {item!r}")
        headers[name.strip()] = value.strip()
    return LoadSpec(
        url=args.url, model=args.model, duration_s=args.duration, warmup_s=args.warmup,
        concurrency=args.concurrency, body_bytes=args.body_bytes, stream=args.stream,
        expect_text=None if args.expect_chunks is None else expected_text(args.expect_chunks),
        expect_model=args.expect_model, headers=headers, timeout_s=args.timeout,
    )


def main(argv: Sequence[str] | None = None) -> int:
    spec = _parse_args(argv)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(run_load(spec))
    sys.stdout.buffer.write(result.to_json() + b"\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
