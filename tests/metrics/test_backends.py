"""Backend specifics: expvar's page, OpenTelemetry names and buckets, memory helpers, discard."""

from __future__ import annotations

import json
import urllib.request

import pytest
from opentelemetry import metrics as otel_api
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from kitobs import contract
from kitobs.errors import ConfigError
from kitobs.metrics import discard, expvar, memory, multi, otel, prometheus
from tests.support import servers


def test_expvar_page_redacts_cmdline_and_nests_labels() -> None:
    argv = [
        "app",
        "--db-password=hunter2",
        "--token",
        "abc123",
        "--name",
        "shop",
        "--dsn=postgres://u:s3cret@db/x",
        "API_KEY=zz",
    ]
    p = expvar.Provider(argv=argv, quantiles=(0.5,), common_labels={"env": "t"})
    p.counter("jobs", help="Jobs.", labels=("queue",)).labels("fast").add(2)
    h = p.histogram("work", help="Work.", unit="seconds", labels=("kind",))
    for v in (1.0, 2.0, 3.0):
        h.labels("a").observe(v)
    page = json.loads(p.page())
    text = json.dumps(page)
    for secret in ("hunter2", "abc123", "s3cret", "zz"):
        assert secret not in text
    assert page["cmdline"][4:6] == ["--name", "shop"]
    assert page["process"]["pid"] > 0
    assert page["metrics"]["jobs_total"]["series"] == [
        {"labels": {"env": "t", "queue": "fast"}, "value": 2.0}
    ]
    work = page["metrics"]["work_seconds"]["series"][0]
    assert work["count"] == 3
    assert work["sum"] == 6.0
    assert work["cumulative"] is True
    assert work["quantiles"]["0.5"] == pytest.approx(2.0, rel=0.01)


def test_expvar_served_standalone_and_bad_quantile_rejected() -> None:
    port = servers.free_port()
    p = expvar.Provider(listen=f"127.0.0.1:{port}", process_metrics=True)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/debug/vars", timeout=5) as resp:
            page = json.load(resp)
        assert page["metrics"]["process_open_fds"]["series"][0]["value"] > 0
    finally:
        p.close()
    with pytest.raises(ConfigError, match="quantiles"):
        expvar.Provider(quantiles=(1.5,))


def test_sketch_quantiles_of_skewed_data_within_one_percent() -> None:
    p = expvar.Provider()
    h = p.histogram("size", help="Sizes.", unit="bytes", buckets=(1.0,))
    values = [float(i * i) for i in range(1, 2001)] + [0.0, -5.0]
    for v in values:
        h.observe(v)
    child = h.default()
    ordered = sorted(values)
    for q in (0.5, 0.9, 0.99):
        want = ordered[round(q * (len(ordered) - 1))]
        assert child.quantile(q) == pytest.approx(want, rel=0.01)
    assert child.quantile(0.0) == pytest.approx(-5.0, rel=0.01)


def test_otel_uses_semconv_names_units_attributes_and_second_buckets() -> None:
    reader = InMemoryMetricReader()
    p = otel.Provider(metric_readers=[reader], common_labels={"env": "t"})
    h = p.declare(contract.HTTP_SERVER_REQUEST_DURATION)
    h.labels("GET", "/users/{id}", "200", "https", "").observe(0.2)
    g = p.declare(contract.HTTP_SERVER_ACTIVE_REQUESTS)
    g.labels("GET", "https").add(2)
    g.labels("GET", "https").add(-1)
    data = reader.get_metrics_data()
    assert data is not None
    got = {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    dur = got["http.server.request.duration"]
    assert dur.unit == "s"
    point = dur.data.data_points[0]
    assert dict(point.attributes) == {
        "env": "t",
        "http.request.method": "GET",
        "http.route": "/users/{id}",
        "http.response.status_code": "200",
        "url.scheme": "https",
    }
    assert tuple(point.explicit_bounds) == contract.HTTP_SERVER_REQUEST_DURATION.buckets
    assert point.bucket_counts[6] == 1  # 0.2 falls in (0.1, 0.25]
    active = got["http.server.active_requests"].data.data_points[0]
    assert active.value == 1
    assert "kitobs.telemetry.dropped" in got
    p.close()


def test_otel_never_touches_the_global_unless_asked() -> None:
    before = otel_api.get_meter_provider()
    p = otel.Provider()
    assert p.meter_provider is not before
    assert isinstance(p.meter_provider, MeterProvider)
    p.close()
    g = otel.Provider(use_global=True)
    assert g.meter_provider is before


def test_memory_assertion_helpers_fail_with_want_and_have() -> None:
    p = memory.Provider()
    p.counter("jobs", help="Jobs.", labels=("queue",)).labels("a").add(2)
    p.histogram("d", help="D.").observe(0.5)
    p.assert_counter("jobs", 2, queue="a")
    with pytest.raises(AssertionError, match=r"want 3, have 2\.0"):
        p.assert_counter("jobs", 3, queue="a")
    p.assert_histogram("d", count=1, sum=0.5)
    with pytest.raises(AssertionError, match="want count 2"):
        p.assert_histogram("d", count=2)
    with pytest.raises(AssertionError, match="no metric"):
        p.value("nope")
    with pytest.raises(AssertionError, match="no label"):
        p.value("jobs", color="red")


def test_discard_records_nothing_but_still_checks_binding() -> None:
    p = discard.Provider()
    c = p.counter("jobs", help="Jobs.", labels=("queue",))
    c.labels("a").add()
    p.dropped("spans", "queue_full").add()
    with pytest.raises(ConfigError, match="expected labels"):
        c.labels("a", "b")


def test_multi_fans_out_and_merges_routes() -> None:
    prom, exp, mem = prometheus.Provider(), expvar.Provider(), memory.Provider()
    p = multi.Provider(prom, exp, mem)
    p.counter("jobs", help="Jobs.", labels=("queue",)).with_labels(queue="a").add(4)
    p.dropped("logs", "queue_full").add()
    assert b'jobs_total{queue="a"} 4.0' in prom.exposition()
    assert json.loads(exp.page())["metrics"]["jobs_total"]["series"][0]["value"] == 4.0
    mem.assert_counter("jobs", 4, queue="a")
    mem.assert_counter("kitobs_telemetry_dropped", 1, signal="logs", reason="queue_full")
    assert sorted(p.wsgi_routes()) == ["/debug/vars", "/metrics"]
    assert sorted(p.asgi_routes()) == ["/debug/vars", "/metrics"]
    p.close()
