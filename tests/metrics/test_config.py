"""The backend is chosen by configuration alone: one application, every backend."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client.parser import text_string_to_metric_families

from kitobs import contract
from kitobs.config import load
from kitobs.errors import ConfigError
from kitobs.metrics import Provider, discard, expvar, memory, multi, prometheus
from kitobs.metrics.config import provider_from_settings
from tests.support import servers

DURATIONS = (0.004, 0.02, 0.3, 0.3, 6.0)


def application(provider: Provider) -> None:
    """The application under test: the same code whatever the backend."""
    duration = provider.declare(contract.HTTP_SERVER_REQUEST_DURATION)
    orders = provider.counter("orders", help="Orders placed.", labels=("shop",))
    ok = duration.labels("GET", "/users/{id}", "200", "https", "")
    for seconds in DURATIONS:
        ok.observe(seconds)
    orders.labels("east").add(3)


def _settings(env: Mapping[str, str]) -> Any:
    return load(env=dict(env), search=False)


def _prometheus_reader(p: Any, _env: Mapping[str, str]) -> tuple[float, int]:
    fams = {f.name: f for f in text_string_to_metric_families(p.exposition().decode())}
    orders = fams["orders"].samples[0].value
    count = next(
        s.value
        for s in fams["http_server_request_duration_seconds"].samples
        if s.name.endswith("_count")
    )
    return orders, int(count)


def _expvar_reader(p: Any, _env: Mapping[str, str]) -> tuple[float, int]:
    page = json.loads(p.page())["metrics"]
    return (
        page["orders_total"]["series"][0]["value"],
        page["http_server_request_duration_seconds"]["series"][0]["count"],
    )


def _memory_reader(p: Any, _env: Mapping[str, str]) -> tuple[float, int]:
    labels = {
        "http_request_method": "GET",
        "http_route": "/users/{id}",
        "http_response_status_code": "200",
        "url_scheme": "https",
    }
    return p.value("orders", shop="east"), len(
        p.observations(contract.HTTP_SERVER_REQUEST_DURATION.name, **labels)
    )


def _pushgateway_reader(p: Any, env: Mapping[str, str]) -> tuple[float, int]:
    assert p.push()
    job = env["KITOBS_METRICS_PUSHGATEWAY_JOB"]
    try:
        group = next(
            g
            for g in servers.pushgateway_metrics(env["KITOBS_METRICS_PUSHGATEWAY_ADDRESS"])
            if g["labels"].get("job") == job
        )
    finally:
        servers.pushgateway_delete(
            env["KITOBS_METRICS_PUSHGATEWAY_ADDRESS"],
            job,
            {"instance": env["KITOBS_METRICS_PUSHGATEWAY_INSTANCE"]},
        )
    orders = float(group["orders_total"]["metrics"][0]["value"])
    count = int(group["http_server_request_duration_seconds"]["metrics"][0]["count"])
    return orders, count


def _statsd_reader(p: Any, env: Mapping[str, str]) -> tuple[float, int]:
    flush_file = servers.require_env("KITOBSTEST_STATSD_FLUSH_FILE")
    prefix = env["KITOBS_METRICS_STATSD_PREFIX"]
    p.close()  # flushes
    c = servers.wait_for_statsd_key(flush_file, "counters", f"{prefix}.orders.east", timeout=20)
    # Timer names carry label values in the etsy flavour: count every series of the metric.
    timers = [
        v
        for f in servers.read_statsd_flushes(flush_file)
        for k, v in f.get("timer_counters", {}).items()
        if k.startswith(f"{prefix}.http.server.request.duration")
    ]
    return float(c["counters"][f"{prefix}.orders.east"]), int(sum(timers))


BACKENDS: dict[
    str, tuple[dict[str, str], Callable[[Any, Mapping[str, str]], tuple[float, int]]]
] = {
    "prometheus": ({}, _prometheus_reader),
    "expvar": ({}, _expvar_reader),
    "memory": ({}, _memory_reader),
    "pushgateway": ({"KITOBS_METRICS_PUSHGATEWAY_PUSH_ON_EXIT": "false"}, _pushgateway_reader),
    "statsd": ({"KITOBS_METRICS_STATSD_FLUSH_INTERVAL": "0.1"}, _statsd_reader),
}


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_one_application_every_backend_by_config_only(backend: str) -> None:
    extra, read = BACKENDS[backend]
    env = {"KITOBS_METRICS_BACKEND": backend, "KITOBS_METRICS_PROCESS_METRICS": "false", **extra}
    if backend == "pushgateway":
        env["KITOBS_METRICS_PUSHGATEWAY_ADDRESS"] = servers.require_env("KITOBSTEST_PUSHGATEWAY")
        env["KITOBS_METRICS_PUSHGATEWAY_JOB"] = f"swap_{uuid.uuid4().hex[:8]}"
        env["KITOBS_METRICS_PUSHGATEWAY_INSTANCE"] = "i"
    if backend == "statsd":
        env["KITOBS_METRICS_STATSD_ADDRESS"] = servers.require_env("KITOBSTEST_STATSD_ADDR")
        env["KITOBS_METRICS_STATSD_PREFIX"] = f"swap{uuid.uuid4().hex[:8]}"
    provider = provider_from_settings(_settings(env))
    try:
        application(provider)
        orders, count = read(provider, env)
    finally:
        provider.close()
    assert orders == 3
    assert count == len(DURATIONS)


def test_otel_backend_by_config_with_the_apps_meter_provider() -> None:
    reader = InMemoryMetricReader()
    settings = _settings({"KITOBS_METRICS_BACKEND": "otel"})
    provider = provider_from_settings(
        settings, meter_provider=MeterProvider(metric_readers=[reader])
    )
    application(provider)
    data = reader.get_metrics_data()
    assert data is not None
    got = {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert got["orders"].data.data_points[0].value == 3
    assert got["http.server.request.duration"].data.data_points[0].count == len(DURATIONS)


def test_list_of_backends_fans_out_and_discard_alone_discards() -> None:
    p = provider_from_settings(_settings({"KITOBS_METRICS_BACKEND": "prometheus,expvar,memory"}))
    assert isinstance(p, multi.Provider)
    assert [type(m) for m in p.members] == [prometheus.Provider, expvar.Provider, memory.Provider]
    application(p)
    assert _prometheus_reader(p.members[0], {}) == (3.0, 5)
    assert _expvar_reader(p.members[1], {}) == (3.0, 5)
    p.close()
    assert isinstance(
        provider_from_settings(_settings({"KITOBS_METRICS_BACKEND": "discard"})), discard.Provider
    )
    only = provider_from_settings(_settings({"KITOBS_METRICS_BACKEND": "memory,discard"}))
    assert isinstance(only, memory.Provider)


def test_common_labels_max_label_sets_and_process_metrics_come_from_config() -> None:
    env = {
        "KITOBS_METRICS_BACKEND": "memory",
        "KITOBS_SERVICE_LABELS": "env=prod",
        "KITOBS_METRICS_MAX_LABEL_SETS": "2",
        "KITOBS_METRICS_PROCESS_METRICS": "true",
    }
    p = provider_from_settings(_settings(env))
    assert isinstance(p, memory.Provider)
    c = p.counter("hits", help="Hits.", labels=("user",))
    for user in "abcd":
        c.labels(user).add()
    assert p.value("hits", user="_overflow") == 2
    assert p.value("process_open_fds") > 0
    q = provider_from_settings(_settings({**env, "KITOBS_METRICS_BACKEND": "prometheus"}))
    q.counter("hits", help="Hits.").add()
    assert b'hits_total{env="prod"} 1.0' in q.exposition()  # type: ignore[attr-defined]
    assert b"process_cpu_seconds_total" in q.exposition()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"KITOBS_METRICS_PROMETHEUS_LISTEN": "nine"}, "metrics.prometheus.listen"),
        (
            {"KITOBS_METRICS_BACKEND": "expvar", "KITOBS_METRICS_EXPVAR_LISTEN": "h:99999"},
            "metrics.expvar.listen",
        ),
        (
            {
                "KITOBS_METRICS_BACKEND": "prometheus,expvar",
                "KITOBS_METRICS_PROMETHEUS_LISTEN": "127.0.0.1:9464",
                "KITOBS_METRICS_EXPVAR_LISTEN": "127.0.0.1:9464",
            },
            "metrics.expvar.listen",
        ),
        (
            {
                "KITOBS_METRICS_BACKEND": "prometheus,expvar",
                "KITOBS_METRICS_EXPVAR_PATH": "/metrics",
            },
            "metrics.expvar.path",
        ),
        ({"KITOBS_METRICS_PROMETHEUS_PATH": "metrics"}, "metrics.prometheus.path"),
        (
            {
                "KITOBS_METRICS_BACKEND": "pushgateway",
                "KITOBS_METRICS_PUSHGATEWAY_ADDRESS": "ftp://x",
            },
            "metrics.pushgateway.address",
        ),
    ],
)
def test_checks_the_loader_cannot_do_name_the_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        provider_from_settings(_settings(env))
    assert err.value.key == key or key in str(err.value)


def test_unknown_backend_is_rejected_by_the_loader_naming_allowed_values() -> None:
    with pytest.raises(ConfigError) as err:
        _settings({"KITOBS_METRICS_BACKEND": "graphite"})
    assert "KITOBS_METRICS_BACKEND" in str(err.value)
    assert "statsd" in str(err.value)
