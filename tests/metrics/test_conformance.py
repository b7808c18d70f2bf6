"""Every metrics backend passes kitobs.metrics.teststat, read back through its own output."""

from __future__ import annotations

import math
from typing import Any

import pytest

from kitobs import contract
from kitobs.errors import ConfigError
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


# --- every value recorded right: one policy on every backend -------------------------------

INF, NAN = math.inf, math.nan


def _dropped(harness: Harness, reason: str) -> float:
    return harness.counter("kitobs_telemetry_dropped", signal="metrics", reason=reason)


def test_record_drop_reasons_exist_at_zero(harness: Harness) -> None:
    for reason in contract.RECORD_DROP_REASONS:
        assert _dropped(harness, reason) == 0.0


def test_non_finite_values_are_dropped_counted_and_never_poison(harness: Harness) -> None:
    c = harness.provider.counter("jobs", help="Jobs run.", labels=("method",)).labels("GET")
    g = harness.provider.gauge("depth", help="Depth.", labels=("queue",)).labels("a")
    h = harness.provider.histogram(
        "work", help="Work.", unit="seconds", labels=("route",), buckets=teststat.BUCKETS
    ).labels("/")
    c.add(1.0)
    for bad in (INF, NAN, -INF, -1.0):  # a negative counter delta is dropped the same way
        c.add(bad)
    c.add(2.0)
    g.set(5.0)
    g.set(NAN)
    g.add(INF)
    g.add(-INF)
    g.add(1.0)
    h.observe(1.0)
    for bad in (INF, -INF, NAN):
        h.observe(bad)
    h.observe(2.0)
    assert harness.counter("jobs", method="GET") == 3.0
    assert harness.gauge("depth", queue="a") == 6.0
    reading = harness.histogram("work", route="/")
    assert reading.count == 2
    assert reading.sum == pytest.approx(3.0)
    assert _dropped(harness, "invalid_value") == 4 + 3 + 3


def test_values_that_are_not_numbers_are_dropped_and_counted(harness: Harness) -> None:
    c = harness.provider.counter("jobs", help="Jobs run.")
    g = harness.provider.gauge("depth", help="Depth.")
    h = harness.provider.histogram("work", help="Work.", unit="seconds", buckets=(1.0,))
    bad: list[Any] = ["3", None, b"1", object()]
    for value in bad:  # none of these raises into the caller
        c.add(value)
        g.set(value)
        g.add(value)
        h.observe(value)
    c.add(2)
    g.set(4)
    h.observe(0.5)
    assert harness.counter("jobs") == 2.0
    assert harness.gauge("depth") == 4.0
    assert harness.histogram("work").count == 1
    assert _dropped(harness, "invalid_value") == 4 * len(bad)


def test_recording_on_a_labelled_metric_without_its_labels_is_dropped(harness: Harness) -> None:
    c = harness.provider.counter("jobs", help="Jobs run.", labels=("method",))
    g = harness.provider.gauge("depth", help="Depth.", labels=("queue",))
    h = harness.provider.histogram(
        "work", help="Work.", unit="seconds", labels=("route",), buckets=(1.0,)
    )
    c.add(2.0)
    g.set(3.0)
    g.add(1.0)
    h.observe(0.5)
    c.labels("GET").add(1.0)
    assert _dropped(harness, "unbound_labels") == 4
    assert harness.counter("jobs", method="GET") == 1.0
    # Nothing reached a label-less series: absent (NaN) or zero, depending on the backend.
    assert not harness.counter("jobs") > 0.0
    assert not harness.gauge("depth") > 0.0
    assert harness.histogram("work").count == 0


def test_a_none_label_value_is_the_absent_label(harness: Harness) -> None:
    c = harness.provider.counter("jobs", help="Jobs run.", labels=("method", "error_type"))
    c.labels("GET", None).add(1.0)  # type: ignore[arg-type]
    c.with_labels(method="GET", error_type=None).add(2.0)  # type: ignore[arg-type]
    c.with_labels(method="GET").labels(None).add(4.0)  # type: ignore[arg-type]
    c.labels("GET", "").add(8.0)
    assert harness.counter("jobs", method="GET") == 15.0
    assert not harness.counter("jobs", method="GET", error_type="None") > 0.0


@pytest.mark.parametrize(
    ("kind", "name", "unit"),
    [
        ("gauge", "process_open_fds", ""),
        ("gauge", "python_info", ""),
        ("counter", "process_cpu", "seconds"),
        ("gauge", "process_cpu", "seconds"),  # the counter's family name, as a gauge
        ("counter", "python_gc_collections", ""),
        ("histogram", "process_resident_memory", "bytes"),
    ],
)
def test_a_process_metric_name_is_refused_at_declaration(
    harness: Harness, kind: str, name: str, unit: str
) -> None:
    declare = getattr(harness.provider, kind)
    with pytest.raises(ConfigError, match="process metric kitobs exports") as err:
        declare(name, help="Mine.", unit=unit)
    assert "another name" in str(err.value)
    harness.provider.gauge("process_jobs", help="A name of the user's own is fine.")
