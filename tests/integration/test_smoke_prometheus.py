"""Smoke tests: Prometheus scrapes a real prometheus_client server, promtool lints expositions."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, start_http_server

from tests.support import servers

pytestmark = pytest.mark.integration


@pytest.fixture
def app_registry(app_port: int) -> Iterator[CollectorRegistry]:
    """A private registry served on 127.0.0.1:$KITOBSTEST_APP_PORT, where job ``app`` scrapes."""
    registry = CollectorRegistry()
    server, thread = start_http_server(app_port, addr="127.0.0.1", registry=registry)
    try:
        yield registry
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_prometheus_scrapes_exact_values(
    prometheus_url: str, app_port: int, app_registry: CollectorRegistry
) -> None:
    run = uuid.uuid4().hex  # a fresh series per run: the dev Prometheus keeps older runs' data
    requests = Counter("kitobs_smoke_requests", "Smoke requests.", ["run"], registry=app_registry)
    requests.labels(run=run).inc(3)
    requests.labels(run=run).inc(4)
    temperature = Gauge("kitobs_smoke_temperature", "Smoke gauge.", ["run"], registry=app_registry)
    temperature.labels(run=run).set(-2.5)

    result = servers.wait_for_prometheus(
        prometheus_url, f'kitobs_smoke_requests_total{{run="{run}"}}'
    )
    assert len(result) == 1
    assert result[0]["metric"] == {
        "__name__": "kitobs_smoke_requests_total",
        "instance": f"127.0.0.1:{app_port}",
        "job": "app",
        "run": run,
    }
    assert result[0]["value"][1] == "7"
    gauge = servers.prometheus_query(prometheus_url, f'kitobs_smoke_temperature{{run="{run}"}}')
    assert [sample["value"][1] for sample in gauge] == ["-2.5"]


def test_prometheus_stores_exemplars(prometheus_url: str, app_registry: CollectorRegistry) -> None:
    # Prometheus runs with --enable-feature=exemplar-storage and negotiates OpenMetrics, which
    # is what carries exemplars (trace ids on metrics, for the tracing work).
    run = uuid.uuid4().hex
    trace_id = uuid.uuid4().hex
    counter = Counter("kitobs_smoke_traced", "Smoke exemplars.", ["run"], registry=app_registry)
    counter.labels(run=run).inc(2, exemplar={"trace_id": trace_id})
    promql = f'kitobs_smoke_traced_total{{run="{run}"}}'
    servers.wait_for_prometheus(prometheus_url, promql)

    deadline = time.monotonic() + 30
    query = urllib.parse.urlencode(
        {"query": promql, "start": time.time() - 600, "end": time.time() + 600}
    )
    while True:
        url = f"{prometheus_url}/api/v1/query_exemplars?{query}"
        with urllib.request.urlopen(url, timeout=5) as response:
            data = json.load(response)["data"]
        if data or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    exemplars = [e for series in data for e in series["exemplars"]]
    assert exemplars, f"no exemplar for {promql}"
    assert exemplars[0]["labels"] == {"trace_id": trace_id}
    assert exemplars[0]["value"] == "2"


def test_promtool_accepts_clean_exposition(promtool: str) -> None:
    registry = CollectorRegistry()
    Counter("kitobs_smoke_jobs", "Jobs done.", ["queue"], registry=registry).labels("a").inc()
    Gauge("kitobs_smoke_queue_depth", "Jobs waiting.", registry=registry).set(3)

    checked = servers.promtool_check_metrics(promtool, generate_latest(registry).decode())

    assert (checked.returncode, checked.stdout, checked.stderr) == (0, "", "")


def test_promtool_rejects_lint_problems(promtool: str) -> None:
    exposition = "# TYPE smokeRequests counter\nsmokeRequests 1\n"

    checked = servers.promtool_check_metrics(promtool, exposition)

    assert checked.returncode == 3, checked
    assert "no help text" in checked.stderr
    assert "snake_case" in checked.stderr
    assert '"_total" suffix' in checked.stderr


def test_promtool_rejects_unparsable_exposition(promtool: str) -> None:
    checked = servers.promtool_check_metrics(promtool, "kitobs_smoke{ 1\n")

    assert checked.returncode == 1, checked
    assert "parsing error" in checked.stdout + checked.stderr
