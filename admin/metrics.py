"""Prometheus metrics of the admin app. Labels are route templates, never raw paths."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = ["PUBLISHES", "PUBLISH_FAILURES", "REQUESTS", "REQUEST_DURATION", "method_label"]

REQUESTS = Counter(
    "abgate_admin_requests_total",
    "Admin API requests by route template, method and status code",
    ["route", "method", "code"],
)
REQUEST_DURATION = Histogram(
    "abgate_admin_request_duration_seconds",
    "Admin API request duration by route template",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
PUBLISHES = Counter(
    "abgate_admin_publishes_total",
    "Routing invalidations published to Redis after a commit",
)
PUBLISH_FAILURES = Counter(
    "abgate_admin_publish_failures_total",
    "Routing invalidations that could not be published (proxies catch up by polling)",
)

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    """Bound the label's values: arbitrary method tokens become OTHER."""
    return method if method in _METHODS else "OTHER"
