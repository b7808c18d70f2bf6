"""Edges: the conformance checks' own failures, multi-process details, small backends."""

from __future__ import annotations

import asyncio
import json
import platform
import urllib.request
from pathlib import Path

import httpx
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse

from kitobs import contract
from kitobs.errors import ConfigError
from kitobs.metrics import discard, memory, multiprocess, pushgateway, teststat
from kitobs.metrics.process import Collector
from tests.support import servers


def test_teststat_catches_each_kind_of_wrong_reading() -> None:
    p = memory.Provider()
    g = p.gauge("g", help="G.")
    with pytest.raises(AssertionError, match="gauge: want"):
        teststat.check_gauge(g, lambda: 12345.0)
    sample = teststat.normal_sample()
    good_sum = sum(sample)
    cases = [
        (teststat.HistogramReading(count=1), "count"),
        (teststat.HistogramReading(count=len(sample), sum=good_sum + 1), "sum"),
        (teststat.HistogramReading(count=len(sample)), "neither"),
        (teststat.HistogramReading(count=len(sample), buckets={}), "want some"),
        (teststat.HistogramReading(count=len(sample), buckets={500.0: 1}), "le=500.0"),
        (teststat.HistogramReading(count=len(sample), quantiles={0.5: 500.0}), "quantile 0.9"),
        (
            teststat.HistogramReading(
                count=len(sample), quantiles={q: 400.0 for q in teststat.QUANTILES}
            ),
            "quantile 0.5: want",
        ),
    ]
    for reading, needle in cases:
        h = memory.Provider().histogram("h", help="H.")
        with pytest.raises(AssertionError, match=needle):
            teststat.check_histogram(h, lambda r=reading: r)  # type: ignore[misc]
    c = memory.Provider().counter("c", help="C.")
    with pytest.raises(AssertionError, match="concurrent adds"):
        teststat.check_concurrent_adds(c, lambda: 0.0, threads=2, adds=10)


def _mp_families(text: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    return {f.name: [(s.name, s.labels, s.value) for s in f.samples] for f in om_parse(text)}


def test_multiprocess_openmetrics_callbacks_labels_and_growth(tmp_path: Path) -> None:
    p = multiprocess.Provider(tmp_path, common_labels={"env": "t"}, process_metrics=True, path="/m")
    h = p.declare(contract.ENDPOINT_DURATION)
    h.labels("get_user", "success").observe(0.2)
    p.gauge("depth", help="Depth.", callback=lambda: 4.0)
    many = p.counter("many", help="Many series.", labels=("key",))
    for i in range(3000):  # far more than the first file size holds: the file grows
        many.labels(f"key-{i:05d}-{'x' * 20}").add(i)
    p.gauge("active", help="Active.").add(2)
    p.counter("neg", help="N.").add(-1)
    fams = _mp_families(p.exposition(openmetrics=True).decode())
    assert sum(v for _, _, v in fams["many"]) == sum(range(3000))
    assert ("depth", {"env": "t"}, 4.0) in fams["depth"]
    assert ("active", {"env": "t"}, 2.0) in fams["active"]
    assert ("neg_total", {"env": "t"}, 0.0) in fams["neg"]
    counts = [s for s in fams["kitobs_endpoint_duration_seconds"] if s[0].endswith("_count")]
    assert counts == [
        (
            "kitobs_endpoint_duration_seconds_count",
            {"env": "t", "endpoint": "get_user", "outcome": "success"},
            1.0,
        )
    ]
    assert "process_cpu_seconds" in fams
    wsgi = p.wsgi_routes()["/m"]
    statuses: list[str] = []
    body = b"".join(wsgi({}, lambda s, h: statuses.append(s)))
    assert statuses == ["200 OK"]
    assert b'many_total{env="t",key="key-00002-' in body

    async def fetch() -> httpx.Response:
        transport = httpx.ASGITransport(app=p.asgi_routes()["/m"])
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return await client.get("/m")

    assert "many_total" in asyncio.run(fetch()).text
    p.close()
    p.close()


def test_multiprocess_standalone_server_and_bad_directory(tmp_path: Path) -> None:
    port = servers.free_port()
    p = multiprocess.Provider(tmp_path / "new", listen=f"127.0.0.1:{port}")
    try:
        p.counter("jobs", help="Jobs.").add(2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            assert b"jobs_total 2.0" in resp.read()
    finally:
        p.close()
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="multiprocess_dir"):
        multiprocess.Provider(blocker / "sub")


def test_memory_helpers_quantile_series_callbacks() -> None:
    p = memory.Provider(process_metrics=True)
    h = p.histogram("d", help="D.", labels=("k",))
    for v in range(1, 101):
        h.labels("a").observe(float(v))
    assert p.quantile("d", 0.5, k="a") == pytest.approx(50.5)
    with pytest.raises(ConfigError, match="no observations"):
        p.quantile("d", 0.5, k="b")
    assert p.observations("d", k="b") == []
    assert p.series("d") == [{"k": "a"}]
    p.gauge("cb", help="Cb.", labels=("q",), callback=lambda: {("x",): 5.0})
    assert p.value("cb", q="x") == 5.0
    p.gauge("one", help="One.", callback=lambda: 2.0)
    assert p.value("one") == 2.0
    major, minor, patch = platform.python_version_tuple()
    info = {
        "implementation": platform.python_implementation(),
        "major": major,
        "minor": minor,
        "patchlevel": patch,
        "version": platform.python_version(),
    }
    assert p.value("python_info", **info) == 1.0
    with pytest.raises(AssertionError, match="histogram"):
        p.value("d", k="a")
    p.counter("c", help="C.").add()
    with pytest.raises(AssertionError, match="not a histogram"):
        p.observations("c")
    assert p.wsgi_routes() == {}
    assert p.asgi_routes() == {}


def test_discard_accepts_every_kind_and_serves_nothing() -> None:
    p = discard.Provider()
    p.gauge("g", help="G.", callback=lambda: 1.0).set(3)
    p.histogram("h", help="H.").observe(1)
    p.declare(contract.HTTP_SERVER_ACTIVE_REQUESTS).labels("GET", "https").add(1)
    with pytest.raises(ConfigError):
        p.histogram("h", help="H.", buckets=())
    assert p.wsgi_routes() == {}
    assert p.asgi_routes() == {}
    p.close()


def test_pushgateway_grouping_path_and_bad_settings() -> None:
    assert pushgateway.grouping_path("a/b", {"instance": "h1"}) == (
        "/metrics/job@base64/YS9i/instance/h1"
    )
    assert pushgateway.grouping_path("j", {"instance": ""}) == "/metrics/job/j/instance@base64/="
    with pytest.raises(ConfigError, match="job"):
        pushgateway.Provider("127.0.0.1:9091", job="")
    with pytest.raises(ConfigError, match=r"metrics\.pushgateway\.address"):
        pushgateway.Provider("ftp://x", job="j")
    p = pushgateway.Provider("http://127.0.0.1:9091/", job="j", instance="i", push_on_exit=False)
    assert p.url == "http://127.0.0.1:9091/metrics/job/j/instance/i"
    assert p.wsgi_routes() == {}
    p.close()


def test_process_collector_reads_this_process() -> None:
    got = {d.prometheus_name: samples for d, samples in Collector().collect()}
    assert got["process_open_fds"][0][1] > 0
    assert got["process_resident_memory_bytes"][0][1] > 1_000_000
    assert got["python_info"][0][0][0] in ("CPython", "PyPy")
    missing = {d.prometheus_name for d, _ in Collector(pid=2**22 + 7).collect()}
    assert "process_open_fds" not in missing  # no such process: the /proc figures are left out
    assert "python_gc_collections_total" in missing


def test_expvar_json_numbers_are_plain() -> None:
    from kitobs.metrics import expvar

    p = expvar.Provider()
    p.histogram("empty", help="E.", labels=("k",)).labels("a")
    page = json.loads(p.page())
    assert page["metrics"]["empty"]["series"][0]["quantiles"] == {
        "0.5": None,
        "0.9": None,
        "0.95": None,
        "0.99": None,
    }


def test_expvar_asgi_and_config_built_multiprocess(tmp_path: Path) -> None:
    from kitobs.config import load
    from kitobs.metrics import expvar
    from kitobs.metrics.config import provider_from_settings

    p = expvar.Provider()
    p.counter("jobs", help="Jobs.").add(2)

    async def fetch() -> httpx.Response:
        transport = httpx.ASGITransport(app=p.asgi_routes()["/debug/vars"])
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return await client.get("/debug/vars")

    resp = asyncio.run(fetch())
    assert resp.headers["content-type"] == "application/json"
    assert resp.json()["metrics"]["jobs_total"]["series"][0]["value"] == 2.0
    env = {"KITOBS_METRICS_PROMETHEUS_MULTIPROCESS_DIR": str(tmp_path)}
    mp = provider_from_settings(load(env=env, search=False))
    assert isinstance(mp, multiprocess.Provider)
    mp.counter("jobs", help="Jobs.").add()
    assert len(list(tmp_path.glob("*.kitobs"))) == 1
    mp.close()


def test_locked_histogram_keeps_exact_buckets() -> None:
    from kitobs.metrics import prometheus
    from kitobs.metrics._store import children

    p = prometheus.Provider()
    p._kinds = children(lock_free=False)
    h = p.histogram("d", help="D.", unit="seconds", buckets=teststat.BUCKETS)

    def read() -> teststat.HistogramReading:
        buckets, count, total = {}, 0, 0.0
        for line in p.exposition().decode().splitlines():
            if line.startswith("d_seconds_bucket"):
                le = line.split('le="')[1].split('"')[0]
                buckets[float(le)] = int(line.split()[-1])
            elif line.startswith("d_seconds_count"):
                count = int(line.split()[-1])
            elif line.startswith("d_seconds_sum"):
                total = float(line.split()[-1])
        return teststat.HistogramReading(count=count, sum=total, buckets=buckets)

    teststat.check_histogram(h.labels(), read)
