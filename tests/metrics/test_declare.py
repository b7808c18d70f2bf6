"""Declaration, binding, the cardinality guard, common labels and self-metrics."""

from __future__ import annotations

import doctest
import importlib

import pytest

from kitobs import contract
from kitobs.errors import ConfigError, DuplicateMetricError
from kitobs.metrics import memory, prometheus, timer


class Capture:
    """A kitobs logger that keeps every event."""

    def __init__(self) -> None:
        self.events: list[dict[object, object]] = []

    def log(self, *keyvals: object) -> None:
        self.events.append(dict(zip(keyvals[::2], keyvals[1::2], strict=True)))


def test_positional_and_keyword_binding_give_the_same_cached_child() -> None:
    p = prometheus.Provider()
    c = p.counter("jobs", help="Jobs.", labels=("method", "code"))
    a = c.labels("GET", "200")
    assert c.labels("GET", "200") is a
    assert c.with_labels(method="GET", code="200") is a
    assert c.with_labels(code="200", method="GET") is a
    assert c.with_labels(method="GET").labels("200") is a
    a.add()
    c.labels("GET", 200).add()  # type: ignore[arg-type]  # a non-string value is stringified
    assert b'jobs_total{method="GET",code="200"} 2.0' in p.exposition()


@pytest.mark.parametrize(
    ("bind", "needle"),
    [
        (lambda c: c.labels("GET"), "1 label value(s) given for 2 label(s)"),
        (lambda c: c.labels("a", "b", "c"), "3 label value(s) given for 2 label(s)"),
        (lambda c: c.with_labels(path="/"), "unknown label(s) path"),
        (lambda c: c.labels("GET", "200").with_labels(method="x"), "already bound"),
        (lambda c: c.labels("GET", "200").labels("x"), "already bound"),
        (lambda c: c.with_labels(method="GET").with_labels(method="PUT"), "already bound"),
        (lambda c: c.with_labels(method="GET").labels("1", "2"), "2 label value(s) given"),
    ],
)
def test_bad_binding_names_metric_expected_and_given(bind: object, needle: str) -> None:
    c = memory.Provider().counter("jobs", help="Jobs.", labels=("method", "code"))
    with pytest.raises(ConfigError) as err:
        bind(c)  # type: ignore[operator]
    text = str(err.value)
    assert needle in text
    assert "'jobs'" in text
    assert "(method, code)" in text


def test_unbound_labels_record_empty_and_are_absent_in_prometheus() -> None:
    p = prometheus.Provider()
    h = p.declare(contract.ENDPOINT_DURATION)
    h.with_labels(endpoint="get_user").observe(0.2)
    text = p.exposition().decode()
    assert 'kitobs_endpoint_duration_seconds_count{endpoint="get_user"} 1' in text


@pytest.mark.parametrize(
    ("name", "unit", "needle"),
    [
        ("jobs_total", "", "already ends in '_total'"),
        ("latency_seconds", "seconds", "already ends in '_seconds'"),
        ("Jobs", "", "not snake_case"),
        ("jobs", "ms", "unknown unit"),
    ],
)
def test_bad_names_raise_at_declaration(name: str, unit: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        memory.Provider().counter(name, help="x", unit=unit)


def test_bad_label_names_and_buckets_raise() -> None:
    p = memory.Provider()
    with pytest.raises(ConfigError, match="label name 'le'"):
        p.histogram("h", help="x", labels=("le",))
    with pytest.raises(ConfigError, match="repeated"):
        p.counter("c", help="x", labels=("a", "a"))
    with pytest.raises(ConfigError, match="increase strictly"):
        p.histogram("h", help="x", buckets=(1.0, 0.5))
    with pytest.raises(ConfigError, match="not a string"):
        p.counter("c", help="x", labels="abc")
    with pytest.raises(ConfigError, match="help"):
        p.counter("c", help=" ")


def test_redeclaring_same_shape_returns_it_other_shape_raises() -> None:
    p = prometheus.Provider()
    c = p.counter("jobs", help="Jobs.", labels=("queue",))
    assert p.counter("jobs", help="Other help.", labels=("queue",)) is c
    with pytest.raises(DuplicateMetricError, match="already declared as counter"):
        p.counter("jobs", help="Jobs.", labels=("queue", "kind"))
    with pytest.raises(DuplicateMetricError):
        p.gauge("jobs", help="Jobs.", labels=("queue",))
    h = p.histogram("d", help="x", unit="seconds", buckets=(1.0, 2.0))
    assert p.histogram("d", help="x", unit="seconds", buckets=(1.0, 2.0)) is h
    with pytest.raises(DuplicateMetricError):
        p.histogram("d", help="x", unit="seconds", buckets=(1.0, 3.0))


def test_guard_folds_into_overflow_counts_and_warns_once() -> None:
    log = Capture()
    p = memory.Provider(max_label_sets=3, logger=log)
    c = p.counter("requests", help="Requests.", labels=("user",))
    for i in range(10):
        c.labels(f"u{i}").add()
    assert [s["user"] for s in p.series("requests")] == ["u0", "u1", "u2", "_overflow"]
    p.assert_counter("requests", 7, user="_overflow")
    p.assert_counter("kitobs_label_sets_folded", 7, metric="requests_total")
    assert len(log.events) == 1
    assert log.events[0]["metric"] == "requests_total"
    # Folded label sets are not cached: binding stays bounded.
    c.labels("u99").add()
    p.assert_counter("requests", 8, user="_overflow")


def test_self_metrics_exist_at_zero_and_dropped_counts() -> None:
    p = prometheus.Provider()
    text = p.exposition().decode()
    for signal in ("metrics", "spans", "logs"):
        line = f'kitobs_telemetry_dropped_total{{signal="{signal}",reason="queue_full"}} 0.0'
        assert line in text
    assert "# TYPE kitobs_label_sets_folded_total counter" in text
    p.dropped("spans", "queue_full").add(3)
    assert 'kitobs_telemetry_dropped_total{signal="spans",reason="queue_full"} 3.0' in (
        p.exposition().decode()
    )
    assert p.dropped("spans", "queue_full") is p.dropped("spans", "queue_full")


def test_common_labels_on_every_series_and_clash_rejected() -> None:
    p = prometheus.Provider(common_labels={"env": "prod", "region": "eu"})
    p.counter("jobs", help="Jobs.", labels=("queue",)).labels("a").add()
    text = p.exposition().decode()
    assert 'jobs_total{env="prod",region="eu",queue="a"} 1.0' in text
    assert all(
        'env="prod"' in line for line in text.splitlines() if line and not line.startswith("#")
    )
    with pytest.raises(ConfigError, match="common labels"):
        p.counter("other", help="x", labels=("env",))


def test_counter_ignores_negative_and_histogram_ignores_nan() -> None:
    p = memory.Provider()
    c = p.counter("jobs", help="Jobs.")
    c.add(2)
    c.add(-5)
    p.assert_counter("jobs", 2)
    q = prometheus.Provider()
    h = q.histogram("d", help="x", buckets=(1.0,))
    h.observe(float("nan"))
    h.observe(0.5)
    assert b"d_count 1" in q.exposition()


def test_timer_context_manager_and_decorator_observe_even_on_error() -> None:
    p = memory.Provider()
    h = p.histogram("work_duration", help="Work.", unit="seconds")
    with timer(h):
        pass

    @timer(h)
    def fails() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        fails()
    seen = p.observations("work_duration")
    assert len(seen) == 2
    assert all(v >= 0.0 for v in seen)


def test_gauge_callback_read_at_collection() -> None:
    depth = [3.0]
    p = prometheus.Provider()
    p.gauge("queue_depth", help="Depth.", callback=lambda: depth[0])
    assert b"queue_depth 3.0" in p.exposition()
    depth[0] = 7.0
    assert b"queue_depth 7.0" in p.exposition()
    p.gauge("per_queue", help="Depth.", labels=("queue",), callback=lambda: {("a",): 1.0})
    assert b'per_queue{queue="a"} 1.0' in p.exposition()


@pytest.mark.parametrize(
    "module",
    [
        "kitobs.metrics",
        "kitobs.metrics._declare",
        "kitobs.metrics.config",
        "kitobs.metrics.discard",
        "kitobs.metrics.expvar",
        "kitobs.metrics.memory",
        "kitobs.metrics.multi",
        "kitobs.metrics.multiprocess",
        "kitobs.metrics.otel",
        "kitobs.metrics.process",
        "kitobs.metrics.prometheus",
        "kitobs.metrics.pushgateway",
        "kitobs.metrics.teststat",
        "kitobs.contract",
    ],
)
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_locked_children_for_free_threaded_builds_lose_nothing() -> None:
    # The classes a free-threaded build gets (LOCK_FREE False), run on this interpreter.
    from kitobs.metrics import teststat
    from kitobs.metrics._store import LockedCounterValue, LockedHistogramValue, children

    kinds = children(lock_free=False)
    assert kinds.counter is LockedCounterValue
    p = prometheus.Provider()
    p._kinds = kinds
    c = p.counter("jobs", help="Jobs.", labels=("m",))
    h = p.histogram("d", help="D.", buckets=teststat.BUCKETS)
    assert isinstance(h.default(), LockedHistogramValue)

    def read() -> float:
        for line in p.exposition().decode().splitlines():
            if line.startswith('jobs_total{m="x"}'):
                return float(line.split()[-1])
        return float("nan")

    teststat.check_concurrent_adds(c.labels("x"), read, adds=20_000)
    teststat.check_gauge(p.gauge("g", help="G.").labels(), lambda: _gauge(p))


def _gauge(p: prometheus.Provider) -> float:
    for line in p.exposition().decode().splitlines():
        if line.startswith("g "):
            return float(line.split()[-1])
    return float("nan")
