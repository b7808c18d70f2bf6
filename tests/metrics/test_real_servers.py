"""The real Prometheus scrapes kitobs; the real Pushgateway receives a push (scripts/test)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from kitobs import contract
from kitobs.errors import ConfigError
from kitobs.metrics import prometheus, pushgateway
from tests.support import servers

pytestmark = pytest.mark.integration


def _serve(app_port: int, **options: Any) -> prometheus.Provider:
    """A provider served on the port Prometheus scrapes (retrying while another test holds it)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return prometheus.Provider(listen=f"127.0.0.1:{app_port}", **options)
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture
def scraped(app_port: int) -> Iterator[prometheus.Provider]:
    """A provider served on the port Prometheus scrapes."""
    p = _serve(app_port)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def scraped_with_exemplars(
    app_port: int,
) -> Iterator[tuple[prometheus.Provider, list[tuple[str, str]]]]:
    """As `scraped`, with exemplars: the context returns the list's last pair of ids."""
    current: list[tuple[str, str]] = []
    p = _serve(app_port, exemplar_context=lambda: current[-1] if current else None)
    try:
        yield p, current
    finally:
        p.close()


def test_prometheus_scrape_gives_exact_counter_and_buckets(
    scraped: prometheus.Provider, prometheus_url: str
) -> None:
    run = uuid.uuid4().hex[:12]  # this run's series only, whatever else was scraped before
    jobs = scraped.counter("kitobs_it_jobs", help="Jobs.", labels=("run",))
    jobs.labels(run).add(7)
    jobs.labels(run).add(0.5)
    h = scraped.declare(contract.ENDPOINT_DURATION)
    child = h.labels(run, "success")
    for value in (0.003, 0.02, 0.02, 0.3, 4.0, 11.0):
        child.observe(value)
    got = servers.wait_for_prometheus(
        prometheus_url, f'kitobs_it_jobs_total{{run="{run}"}}', timeout=60
    )
    assert [float(r["value"][1]) for r in got] == [7.5]
    sel = f'kitobs_endpoint_duration_seconds_bucket{{endpoint="{run}",outcome="success"}}'
    got = servers.wait_for_prometheus(prometheus_url, sel, lambda r: len(r) == 15, timeout=60)
    buckets = {r["metric"]["le"]: float(r["value"][1]) for r in got}
    assert buckets["0.005"] == 1
    assert buckets["0.025"] == 3
    assert buckets["0.5"] == 4
    assert buckets["5.0"] == 5
    assert buckets["10.0"] == 5
    assert buckets["+Inf"] == 6
    count = servers.prometheus_query(
        prometheus_url, f'kitobs_endpoint_duration_seconds_count{{endpoint="{run}"}}'
    )
    assert [float(r["value"][1]) for r in count] == [6]


def test_scrape_with_process_metrics_is_whole_as_a_process_name_is_refused(
    app_port: int, prometheus_url: str
) -> None:
    """A user metric named like a process metric would make Prometheus reject the whole scrape
    (two families of one name): it is refused at declaration, and the scrape arrives."""
    run = uuid.uuid4().hex[:12]
    p = _serve(app_port, process_metrics=True)
    try:
        for kind, name in (("gauge", "process_open_fds"), ("gauge", "python_info")):
            with pytest.raises(ConfigError, match="is a process metric kitobs exports"):
                getattr(p, kind)(name, help="Mine.")
        p.gauge("kitobs_it_open_fds", help="Mine.", labels=("run",)).labels(run).set(3)
        got = servers.wait_for_prometheus(
            prometheus_url, f'kitobs_it_open_fds{{run="{run}"}}', timeout=60
        )
        assert [float(r["value"][1]) for r in got] == [3.0]
        instance = got[0]["metric"]["instance"]
        fds = servers.prometheus_query(prometheus_url, f'process_open_fds{{instance="{instance}"}}')
        assert fds
        assert float(fds[0]["value"][1]) > 0
    finally:
        p.close()


def test_exemplars_reach_prometheus(app_port: int, prometheus_url: str) -> None:
    trace = uuid.uuid4().hex
    p = prometheus.Provider(
        listen=f"127.0.0.1:{app_port}", exemplar_context=lambda: (trace, trace[:16])
    )
    try:
        p.histogram("kitobs_it_exemplar", help="x", unit="seconds", buckets=(1.0,)).observe(0.5)
        found = servers.wait_for_exemplars(
            prometheus_url,
            "kitobs_it_exemplar_seconds_bucket",
            lambda got: any(e["labels"].get("trace_id") == trace for e in got),
        )
        mine = [e for e in found if e["labels"].get("trace_id") == trace]
        assert mine[0]["labels"]["span_id"] == trace[:16]
        assert float(mine[0]["value"]) == 0.5
    finally:
        p.close()


def test_exemplar_ids_with_quotes_reach_prometheus_intact(
    scraped_with_exemplars: tuple[prometheus.Provider, list[tuple[str, str]]],
    prometheus_url: str,
) -> None:
    """An id from a user's context function may hold ``"`` or ``\\``: escaped, scrape intact."""
    p, current = scraped_with_exemplars
    run = uuid.uuid4().hex[:12]
    current.append((f'{run}"q\\b', "s1"))
    p.histogram("kitobs_it_quoted", help="x", buckets=(1.0,), labels=("run",)).labels(run).observe(
        0.5
    )
    found = servers.wait_for_exemplars(
        prometheus_url,
        f'kitobs_it_quoted_bucket{{run="{run}"}}',
        lambda got: any(e["labels"]["trace_id"].startswith(run) for e in got),
    )
    # The scrape was whole: the series is there with its count. Prometheus keeps an exemplar's
    # label values as the exposition spells them (escapes included) where it unescapes a
    # series' labels; either way it is this id, and nothing else.
    got = servers.wait_for_prometheus(prometheus_url, f'kitobs_it_quoted_count{{run="{run}"}}')
    assert [float(r["value"][1]) for r in got] == [1]
    assert {e["labels"]["trace_id"] for e in found} == {f'{run}\\"q\\\\b'}


def test_push_reaches_the_pushgateway(pushgateway_addr: str) -> None:
    job = f"kitobs_it_{uuid.uuid4().hex[:8]}"
    p = pushgateway.Provider(pushgateway_addr, job=job, instance="i1", push_on_exit=False)
    try:
        p.counter("rows", help="Rows copied.", labels=("table",)).labels("users").add(42)
        p.histogram("batch", help="Batch.", unit="seconds", buckets=(1.0, 10.0)).observe(3)
        assert p.push()
        groups = [
            g
            for g in servers.pushgateway_metrics(pushgateway_addr)
            if g["labels"].get("job") == job
        ]
        assert len(groups) == 1
        assert groups[0]["labels"]["instance"] == "i1"
        rows = groups[0]["rows_total"]["metrics"]
        assert [(m["labels"]["table"], m["value"]) for m in rows] == [("users", "42")]
        batch = groups[0]["batch_seconds"]["metrics"][0]
        assert batch["count"] == "1"
        assert batch["buckets"] == {"1": "0", "10": "1", "+Inf": "1"}
    finally:
        servers.pushgateway_delete(pushgateway_addr, job, {"instance": "i1"})
        p.close()


def test_push_on_close_and_failed_push_is_counted(pushgateway_addr: str) -> None:
    job = f"kitobs_it_{uuid.uuid4().hex[:8]}"
    p = pushgateway.Provider(pushgateway_addr, job=job, instance="i2")
    p.counter("done", help="Done.").add()
    p.close()  # pushes once more
    try:
        groups = [
            g
            for g in servers.pushgateway_metrics(pushgateway_addr)
            if g["labels"].get("job") == job
        ]
        assert groups[0]["done_total"]["metrics"][0]["value"] == "1"
    finally:
        servers.pushgateway_delete(pushgateway_addr, job, {"instance": "i2"})
    dead = pushgateway.Provider(
        f"127.0.0.1:{servers.free_port()}", job=job, push_on_exit=False, timeout=2
    )
    assert dead.push() is False
    assert (
        b'kitobs_telemetry_dropped_total{signal="metrics",reason="push_failed"} 1.0'
        in dead.payload()
    )


def test_push_at_interpreter_exit(pushgateway_addr: str) -> None:
    import subprocess
    import sys

    job = f"kitobs_it_{uuid.uuid4().hex[:8]}"
    script = (
        "from kitobs.metrics import pushgateway\n"
        f"p = pushgateway.Provider({pushgateway_addr!r}, job={job!r}, instance='exit')\n"
        "p.counter('exited_jobs', help='Jobs.').add(9)\n"
    )  # no push() and no close(): the exit hook pushes
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    try:
        groups = [
            g
            for g in servers.pushgateway_metrics(pushgateway_addr)
            if g["labels"].get("job") == job
        ]
        assert groups[0]["exited_jobs_total"]["metrics"][0]["value"] == "9"
    finally:
        servers.pushgateway_delete(pushgateway_addr, job, {"instance": "exit"})
