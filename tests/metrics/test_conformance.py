"""Every metrics backend passes kitobs.metrics.teststat, read back through its own output."""

from __future__ import annotations

import pytest

from kitobs.metrics import teststat
from tests.metrics.harnesses import Harness


def test_counter(harness: Harness) -> None:
    counter = harness.provider.counter("jobs", help="Jobs run.", labels=("method",))
    teststat.check_counter(
        counter.with_labels(method="GET"), lambda: harness.counter("jobs", method="GET")
    )


def test_counter_positional_binding(harness: Harness) -> None:
    counter = harness.provider.counter("jobs", help="Jobs run.", labels=("method", "queue"))
    teststat.check_counter(
        counter.labels("POST", "slow"),
        lambda: harness.counter("jobs", method="POST", queue="slow"),
        seed=3,
    )


def test_counter_without_labels(harness: Harness) -> None:
    counter = harness.provider.counter("jobs", help="Jobs run.")
    teststat.check_counter(counter, lambda: harness.counter("jobs"), seed=1)


def test_gauge(harness: Harness) -> None:
    gauge = harness.provider.gauge("queue_depth", help="Depth.", labels=("queue",))
    teststat.check_gauge(
        gauge.with_labels(queue="a"), lambda: harness.gauge("queue_depth", queue="a")
    )


def test_histogram(harness: Harness) -> None:
    histogram = harness.provider.histogram(
        "conformance_duration",
        help="Durations.",
        unit="seconds",
        labels=("route",),
        buckets=teststat.BUCKETS,
    )
    teststat.check_histogram(
        histogram.labels("/users"),
        lambda: harness.histogram("conformance_duration", route="/users"),
    )


def test_concurrent_adds(harness: Harness) -> None:
    counter = harness.provider.counter("jobs", help="Jobs run.", labels=("method",))
    teststat.check_concurrent_adds(
        counter.labels("GET"), lambda: harness.counter("jobs", method="GET")
    )


def test_concurrent_binding(harness: Harness) -> None:
    # Binding races on the slow path must still give one child per label set.
    counter = harness.provider.counter("jobs", help="Jobs run.", labels=("method",))

    class Rebinding:
        def add(self, delta: float = 1.0) -> None:
            counter.with_labels(method="PUT").add(delta)

    teststat.check_concurrent_adds(
        Rebinding(),  # type: ignore[arg-type]
        lambda: harness.counter("jobs", method="PUT"),
        adds=20_000,
    )


def test_checks_can_fail(harness: Harness) -> None:
    # The suite must catch a backend that loses an update: read one short.
    counter = harness.provider.counter("jobs", help="Jobs run.")
    with pytest.raises(AssertionError, match="want"):
        teststat.check_counter(counter, lambda: harness.counter("jobs") - 1.0)
