"""Prometheus metrics of the proxy. Labels never carry user ids, keys or hosts.

In multi-worker mode ``PROMETHEUS_MULTIPROC_DIR`` is set by ``abgate proxy``
before this module is imported, so every metric here aggregates across workers.

The per-request metrics go through :data:`PER_REQUEST` (a :class:`Batch`):
prometheus_client takes a lock for every increment and walks a histogram's
buckets in Python for every observation, 13 locked updates per experimented
request. A request only adds to plain dicts; :meth:`Batch.flush` hands the sums
to prometheus_client once a second and before this process answers a scrape,
so a single-process scrape is exact and, with several workers, another worker's
numbers are at most a second old.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "CONFIG_LOOKUPS",
    "CONFIG_VERSION",
    "FLUSH_INTERVAL_S",
    "IN_FLIGHT",
    "OVERHEAD",
    "PER_REQUEST",
    "PROMPTS_SHED",
    "RECORDER_QUEUE_DEPTH",
    "RECORDER_ROWS",
    "REQUESTS",
    "REQUEST_DURATION",
    "TOKENS",
    "UPSTREAM_TTFT",
    "Batch",
]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_OVERHEAD_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
)

# route: passthrough | chat_completions | responses | messages | feedback
REQUESTS = Counter(
    "abgate_requests_total",
    "Requests handled, by route, public model id (experiments only), variant label and status code",
    ["route", "public_model_id", "variant", "code"],
)
REQUEST_DURATION = Histogram(
    "abgate_request_duration_seconds",
    "Time from request received to response finished",
    ["route"],
    buckets=_LATENCY_BUCKETS,
)
UPSTREAM_TTFT = Histogram(
    "abgate_upstream_ttft_seconds",
    "Time from sending upstream to the first response byte, experiment routes",
    ["public_model_id", "variant"],
    buckets=_LATENCY_BUCKETS,
)
OVERHEAD = Histogram(
    "abgate_overhead_seconds",
    "Time spent in the proxy itself, excluding waiting for the upstream",
    ["route"],
    buckets=_OVERHEAD_BUCKETS,
)
IN_FLIGHT = Gauge(
    "abgate_in_flight_requests", "Requests currently being served", multiprocess_mode="livesum"
)
TOKENS = Counter(
    "abgate_tokens_total",
    "Tokens reported by upstreams, kind: input | output | cache_read | cache_write",
    ["public_model_id", "variant", "kind"],
)
# tier: local | redis | postgres ; result: hit | miss | stale | error
CONFIG_LOOKUPS = Counter(
    "abgate_config_lookups_total", "Config snapshot lookups by tier and result", ["tier", "result"]
)
CONFIG_VERSION = Gauge(
    "abgate_config_version",
    "Highest routing config version this process has seen",
    multiprocess_mode="max",
)
# result: written | spilled | replayed | dropped
RECORDER_ROWS = Counter(
    "abgate_recorder_rows_total", "Recorder rows by outcome", ["result"]
)
RECORDER_QUEUE_DEPTH = Gauge(
    "abgate_recorder_queue_depth",
    "Records waiting to be written",
    multiprocess_mode="livesum",
)
PROMPTS_SHED = Counter(
    "abgate_recorder_prompts_shed_total",
    "Records queued without their prompt content because the evidence store fell behind",
)


# How often the per-request sums reach prometheus_client (and other workers' scrapes).
FLUSH_INTERVAL_S = 1.0


class _HistogramSums:
    """Observations of one histogram child since the last flush: a count per bucket."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, child: Histogram) -> None:
        # The child's own bounds (the last one is +Inf), so a value lands where
        # Histogram.observe() would put it: the first bound >= the value.
        self.bounds: list[float] = list(child._upper_bounds)
        self.counts = [0] * len(self.bounds)
        self.total = 0.0

    def flush_into(self, child: Histogram) -> None:
        # Histogram children keep one value per bucket (not cumulative) and a sum;
        # there is no public bulk observe. tests/proxy_unit/test_metrics_batch.py
        # checks the exposition equals observe() one value at a time.
        for bucket, count in zip(child._buckets, self.counts, strict=True):
            if count:
                bucket.inc(count)
        child._sum.inc(self.total)


class Batch:
    """Counter increments and histogram observations kept as plain numbers until flushed.

    Keys are prometheus_client label children (``Counter.labels(...)``), so a
    flush is one ``inc`` per child that changed. Not thread-safe: use it from
    the event loop only.
    """

    __slots__ = ("_counts", "_histograms", "in_flight")

    def __init__(self) -> None:
        self._counts: dict[Any, float] = {}
        self._histograms: dict[Any, _HistogramSums] = {}
        #: Requests being served now; flushed into IN_FLIGHT.
        self.in_flight = 0

    def inc(self, counter: Any, amount: float = 1) -> None:
        counts = self._counts
        counts[counter] = counts.get(counter, 0) + amount

    def observe(self, histogram: Any, value: float) -> None:
        sums = self._histograms.get(histogram)
        if sums is None:
            sums = self._histograms[histogram] = _HistogramSums(histogram)
        sums.counts[bisect_left(sums.bounds, value)] += 1
        sums.total += value

    def flush(self) -> None:
        """Hand everything gathered since the last flush to prometheus_client."""
        counts, self._counts = self._counts, {}
        histograms, self._histograms = self._histograms, {}
        for counter, amount in counts.items():
            counter.inc(amount)
        for histogram, sums in histograms.items():
            sums.flush_into(histogram)
        IN_FLIGHT.set(self.in_flight)


#: The proxy's per-request metrics (requests, durations, TTFT, tokens, in flight).
PER_REQUEST = Batch()
