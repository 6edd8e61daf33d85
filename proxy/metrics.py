"""Prometheus metrics of the proxy. Labels never carry user ids, keys or hosts.

In multi-worker mode ``PROMETHEUS_MULTIPROC_DIR`` is set by ``abgate proxy``
before this module is imported, so every metric here aggregates across workers.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "CONFIG_LOOKUPS",
    "CONFIG_VERSION",
    "IN_FLIGHT",
    "OVERHEAD",
    "PROMPTS_SHED",
    "RECORDER_QUEUE_DEPTH",
    "RECORDER_ROWS",
    "REQUESTS",
    "REQUEST_DURATION",
    "TOKENS",
    "UPSTREAM_TTFT",
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
