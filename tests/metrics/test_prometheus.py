"""The Prometheus backend: exposition formats, serving, exemplars, the prometheus_client adapter."""

from __future__ import annotations

import asyncio
import socket
import urllib.request

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse
from prometheus_client.parser import text_string_to_metric_families

from kitobs import contract
from kitobs.errors import ConfigError
from kitobs.metrics import prometheus
from tests.support import servers


def _every_kind(p: prometheus.Provider) -> None:
    c = p.counter("jobs", help='Jobs run, with "quotes" and \\ backslash.', labels=("queue",))
    c.labels('we"ird\\value\n').add(2)
    c.labels("fast").add()
    g = p.gauge("queue_depth", help="Items waiting.", labels=("queue",))
    g.labels("fast").set(4)
    p.gauge("memory_in_use", help="Memory.", unit="bytes").set(1024)
    h = p.declare(contract.HTTP_SERVER_REQUEST_DURATION)
    h.labels("GET", "/users/{id}", "200", "https", "").observe(0.03)
    h.with_labels(
        http_request_method="GET",
        http_route="/",
        http_response_status_code="500",
        url_scheme="http",
        error_type="ValueError",
    ).observe(2)
    p.histogram("payload", help="Sizes.", unit="bytes", buckets=(100, 1000)).observe(10)


def test_promtool_accepts_every_metric_type_with_labels_and_help() -> None:
    promtool = servers.require_env("KITOBSTEST_PROMTOOL")
    p = prometheus.Provider(process_metrics=True, common_labels={"env": "test"})
    _every_kind(p)
    text = p.exposition().decode()
    done = servers.promtool_check_metrics(promtool, text)
    assert done.returncode == 0, done.stderr
    # And promtool does catch a bad exposition, so the check above can fail.
    bad = servers.promtool_check_metrics(promtool, "# TYPE jobs counter\njobs 1\n")
    assert bad.returncode != 0


def test_text_parses_with_prometheus_client_and_escapes_values() -> None:
    p = prometheus.Provider()
    _every_kind(p)
    fams = {f.name: f for f in text_string_to_metric_families(p.exposition().decode())}
    jobs = {s.labels["queue"]: s.value for s in fams["jobs"].samples}
    assert jobs == {'we"ird\\value\n': 2.0, "fast": 1.0}
    assert fams["jobs"].documentation == 'Jobs run, with "quotes" and \\ backslash.'
    hist = fams["http_server_request_duration_seconds"]
    buckets = [
        s for s in hist.samples if s.name.endswith("_bucket") and s.labels["http_route"] == "/"
    ]
    assert [s.labels["le"] for s in buckets][-1] == "+Inf"
    assert [s.value for s in buckets if s.labels["le"] in ("1.0", "2.5")] == [0.0, 1.0]
    assert not any(s.name.endswith("_created") for f in fams.values() for s in f.samples)


def test_created_series_only_when_asked() -> None:
    p = prometheus.Provider(created_series=True)
    p.counter("jobs", help="Jobs.").add()
    p.histogram("d", help="D.", buckets=(1.0,)).observe(0.5)
    text = p.exposition().decode()
    assert "jobs_created " in text
    assert "d_created " in text
    assert "_created" not in prometheus.Provider().exposition().decode()


def test_openmetrics_carries_exemplars_of_sampled_spans() -> None:
    current: list[tuple[str, str] | None] = [
        ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    ]
    p = prometheus.Provider(exemplar_context=lambda: current[0])
    h = p.histogram("work", help="Work.", unit="seconds", buckets=(0.1, 1.0))
    h.observe(0.05)
    current[0] = None  # an unsampled request leaves the bucket's exemplar alone
    h.observe(0.06)
    text = p.exposition(openmetrics=True).decode()
    assert text.endswith("# EOF\n")
    samples = [s for f in om_parse(text) for s in f.samples if s.name == "work_seconds_bucket"]
    first = next(s for s in samples if s.labels["le"] == "0.1")
    assert first.value == 2
    assert first.exemplar is not None
    assert first.exemplar.labels == {
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "span_id": "b7ad6b7169203331",
    }
    assert first.exemplar.value == 0.05
    assert all(s.exemplar is None for s in samples if s.labels["le"] != "0.1")
    assert "# {" not in p.exposition().decode()  # text 0.0.4 has no exemplars


def test_exemplar_ids_are_escaped_and_overlong_ones_left_out() -> None:
    """Ids from a user's context function: quoted safely, and never past OpenMetrics' limit.

    (A ``"`` in an id is checked against the real Prometheus in test_real_servers: the
    prometheus_client parser used here does not handle ``\\"`` inside exemplar labels.)
    """
    current = ("tr\\ace", "sp\nan")
    p = prometheus.Provider(exemplar_context=lambda: current)
    h = p.histogram("work", help="Work.", unit="seconds", buckets=(0.1, 1.0))
    h.observe(0.05)
    current = ("t" * 100, "s" * 14)  # 8 + 7 + 114 = 129 code points: one too many
    h.observe(0.5)
    text = p.exposition(openmetrics=True).decode()
    assert 'trace_id="tr\\\\ace",span_id="sp\\nan"' in text
    samples = [s for f in om_parse(text) for s in f.samples if s.name == "work_seconds_bucket"]
    by_le = {s.labels["le"]: s for s in samples}
    assert by_le["0.1"].exemplar is not None
    assert by_le["0.1"].exemplar.labels == {"trace_id": "tr\\ace", "span_id": "sp\nan"}
    assert by_le["1.0"].exemplar is None
    assert by_le["1.0"].value == 2


def test_collector_adapter_matches_own_exposition() -> None:
    registry = CollectorRegistry()
    p = prometheus.Provider(registry=registry, common_labels={"env": "x"})
    _every_kind(p)
    assert registry.get_sample_value("jobs_total", {"env": "x", "queue": "fast"}) == 1.0
    assert registry.get_sample_value("memory_in_use_bytes", {"env": "x"}) == 1024
    labels = {
        "env": "x",
        "http_request_method": "GET",
        "http_route": "/users/{id}",
        "http_response_status_code": "200",
        "url_scheme": "https",
        "le": "0.05",
    }
    assert registry.get_sample_value("http_server_request_duration_seconds_bucket", labels) == 1
    ours = {
        (f.name, s.name, tuple(sorted(s.labels.items())), s.value)
        for f in text_string_to_metric_families(p.exposition().decode())
        for s in f.samples
    }
    theirs = {
        (f.name, s.name, tuple(sorted(s.labels.items())), s.value)
        for f in text_string_to_metric_families(generate_latest(registry).decode())
        for s in f.samples
    }
    assert ours == theirs
    p.close()
    assert registry.get_sample_value("jobs_total", {"env": "x", "queue": "fast"}) is None


def _get(url: str, accept: str = "") -> tuple[str, str]:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.headers["Content-Type"], resp.read().decode()


def test_standalone_server_serves_negotiates_and_frees_its_port() -> None:
    port = servers.free_port()
    p = prometheus.Provider(listen=f"127.0.0.1:{port}")
    try:
        p.counter("jobs", help="Jobs.").add(5)
        assert p.address == ("127.0.0.1", port)
        ctype, body = _get(f"http://127.0.0.1:{port}/metrics")
        assert ctype.startswith("text/plain; version=0.0.4")
        assert "jobs_total 5.0" in body
        accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        ctype, body = _get(f"http://127.0.0.1:{port}/metrics", accept)
        assert ctype.startswith("application/openmetrics-text")
        assert body.endswith("# EOF\n")
    finally:
        p.close()
    again = prometheus.Provider(listen=f"127.0.0.1:{port}")  # the port is free at once
    try:
        assert "jobs_total" not in _get(f"http://127.0.0.1:{port}/metrics")[1]
    finally:
        again.close()
    with socket.create_server(("127.0.0.1", port)):  # and free again after the second close
        pass


def test_listen_address_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"metrics\.prometheus\.listen"):
        prometheus.Provider(listen="localhost")
    with pytest.raises(ConfigError, match="every interface"):
        prometheus.Provider(listen="0.0.0.0:9464")
    with socket.create_server(("127.0.0.1", 0)) as busy:
        taken = busy.getsockname()[1]
        with pytest.raises(ConfigError, match="cannot listen"):
            prometheus.Provider(listen=f"127.0.0.1:{taken}")


def test_wsgi_and_asgi_routes_serve_the_exposition() -> None:
    p = prometheus.Provider()
    p.counter("jobs", help="Jobs.").add(1)
    wsgi = p.wsgi_routes()["/metrics"]
    seen: list[str] = []
    body = b"".join(wsgi({"HTTP_ACCEPT": ""}, lambda status, headers: seen.append(status)))
    assert seen == ["200 OK"]
    assert b"jobs_total 1.0" in body

    async def fetch() -> httpx.Response:
        transport = httpx.ASGITransport(app=p.asgi_routes()["/metrics"])
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return await client.get("/metrics", headers={"Accept": "application/openmetrics-text"})

    resp = asyncio.run(fetch())
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/openmetrics-text")
    assert "jobs_total 1.0" in resp.text
