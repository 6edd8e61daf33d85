"""proxy.metrics.Batch: per-request sums reach prometheus_client exactly as one-by-one updates."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from proxy import metrics
from proxy.metrics import Batch

_BUCKETS = (0.00005, 0.001, 0.25, 1, 30)


def _histogram(registry: CollectorRegistry) -> Histogram:
    return Histogram("h_seconds", "h", ["route"], buckets=_BUCKETS, registry=registry)


def _counter(registry: CollectorRegistry) -> Counter:
    return Counter("c_total", "c", ["route"], registry=registry)


def _without_created(exposition: bytes) -> list[str]:
    return [line for line in exposition.decode().splitlines() if "_created" not in line]


@given(
    st.lists(
        st.one_of(
            st.floats(min_value=0, max_value=100, allow_nan=False),
            st.sampled_from([0.0, *_BUCKETS]),  # exactly on a bound: that bucket, as observe()
        ),
        max_size=40,
    )
)
def test_a_flushed_histogram_reads_as_the_same_values_observed_one_by_one(
    values: list[float],
) -> None:
    direct, batched = CollectorRegistry(), CollectorRegistry()
    direct_child = _histogram(direct).labels("chat")
    batched_child = _histogram(batched).labels("chat")
    batch = Batch()
    for value in values:
        direct_child.observe(value)
        batch.observe(batched_child, value)
    batch.flush()
    assert _without_created(generate_latest(batched)) == _without_created(generate_latest(direct))


def test_counter_increments_are_summed_per_label_child() -> None:
    registry = CollectorRegistry()
    counter = _counter(registry)
    batch = Batch()
    for _ in range(3):
        batch.inc(counter.labels("chat"))
    batch.inc(counter.labels("passthrough"), 7)
    batch.flush()
    assert registry.get_sample_value("c_total", {"route": "chat"}) == 3
    assert registry.get_sample_value("c_total", {"route": "passthrough"}) == 7


def _chat_metrics() -> tuple[CollectorRegistry, Counter, Histogram, Batch]:
    registry = CollectorRegistry()
    return registry, _counter(registry).labels("chat"), _histogram(registry).labels("chat"), Batch()


def test_nothing_reaches_prometheus_before_a_flush() -> None:
    registry, counter, histogram, batch = _chat_metrics()
    batch.inc(counter)
    batch.observe(histogram, 0.5)
    assert registry.get_sample_value("c_total", {"route": "chat"}) == 0
    assert registry.get_sample_value("h_seconds_count", {"route": "chat"}) == 0


def test_a_second_flush_adds_only_what_came_after_the_first() -> None:
    registry, counter, histogram, batch = _chat_metrics()
    batch.inc(counter)
    batch.observe(histogram, 0.5)
    batch.flush()
    batch.flush()
    batch.inc(counter, 2)
    batch.flush()
    assert registry.get_sample_value("c_total", {"route": "chat"}) == 3
    assert registry.get_sample_value("h_seconds_count", {"route": "chat"}) == 1
    assert registry.get_sample_value("h_seconds_sum", {"route": "chat"}) == 0.5


def test_in_flight_is_set_on_the_gauge_at_each_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = CollectorRegistry()
    gauge = Gauge("in_flight", "g", registry=registry)
    monkeypatch.setattr(metrics, "IN_FLIGHT", gauge)
    batch = Batch()
    batch.in_flight += 2
    batch.flush()
    assert registry.get_sample_value("in_flight") == 2
    batch.in_flight -= 2
    batch.flush()
    assert registry.get_sample_value("in_flight") == 0
