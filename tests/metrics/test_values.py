"""Every value recorded right: what a drop looks like beyond the shared suite.

`tests/metrics/test_conformance.py` holds every backend to the policy (a non-finite or
non-number value, a negative counter delta or a recording without its labels is dropped and
counted; a process metric name is refused). Here: the one warning per metric and reason, the
expvar page staying strict JSON, and the exposition with process metrics passing the parsers
Prometheus and promtool use.
"""

from __future__ import annotations

import math
import subprocess

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse
from prometheus_client.parser import text_string_to_metric_families as text_parse

from kitobs import contract
from kitobs.errors import ConfigError
from kitobs.metrics import expvar, memory, multi, prometheus, statsd
from kitobs.metrics.process import DECLARATIONS
from tests.metrics.harnesses import strict_json
from tests.support import servers


class Capture:
    """A logger keeping each event as a dict."""

    def __init__(self) -> None:
        self.events: list[dict[str, object]] = []

    def log(self, *keyvals: object) -> None:
        self.events.append(dict(zip(keyvals[::2], keyvals[1::2], strict=True)))


class Broken:
    """A logger that fails: recording must not notice."""

    def log(self, *keyvals: object) -> None:
        raise RuntimeError("logger down")


def test_each_drop_warns_once_per_metric_and_reason() -> None:
    log = Capture()
    p = memory.Provider(logger=log)
    c = p.counter("jobs", help="Jobs.", labels=("queue",))
    for _ in range(3):
        c.add()
        c.labels("a").add(math.inf)
    p.histogram("work", help="Work.").observe(math.nan)
    p.assert_counter("kitobs_telemetry_dropped", 3, signal="metrics", reason="unbound_labels")
    p.assert_counter("kitobs_telemetry_dropped", 4, signal="metrics", reason="invalid_value")
    got = sorted((str(e["metric"]), str(e["reason"])) for e in log.events)
    assert got == [
        ("jobs_total", "invalid_value"),
        ("jobs_total", "unbound_labels"),
        ("work", "invalid_value"),
    ]
    unbound = next(e for e in log.events if e["reason"] == "unbound_labels")
    assert unbound["level"] == "warn"
    assert "labels(...)" in str(unbound["msg"])
    assert unbound["labels"] == ("queue",)
    invalid = next(e for e in log.events if e["metric"] == "jobs_total" and e is not unbound)
    assert invalid["value"] == "inf"


def test_a_broken_logger_does_not_reach_the_caller() -> None:
    p = prometheus.Provider(logger=Broken())
    c = p.counter("jobs", help="Jobs.", labels=("queue",))
    c.add()
    c.labels("a").add("x")  # type: ignore[arg-type]
    text = p.exposition().decode()
    assert 'kitobs_telemetry_dropped_total{signal="metrics",reason="unbound_labels"} 1.0' in text
    assert 'kitobs_telemetry_dropped_total{signal="metrics",reason="invalid_value"} 1.0' in text


def test_multi_counts_a_binding_mistake_once_on_every_member() -> None:
    a, b = memory.Provider(), memory.Provider()
    p = multi.Provider(a, b)
    p.counter("jobs", help="Jobs.", labels=("queue",)).add()
    for member in (a, b):
        member.assert_counter(
            "kitobs_telemetry_dropped", 1, signal="metrics", reason="unbound_labels"
        )


def test_expvar_page_is_strict_json_with_non_finite_gauges() -> None:
    p = expvar.Provider(process_metrics=True)
    readings = {("nan",): math.nan, ("up",): math.inf, ("down",): -math.inf, ("ok",): 2.5}
    p.gauge("reading", help="R.", labels=("kind",), callback=lambda: readings)
    p.gauge("single", help="S.", callback=lambda: math.nan)
    g = p.gauge("set", help="Set.")
    g.set(math.nan)  # dropped: the gauge keeps its value
    h = p.histogram("work", help="W.", buckets=(1.0,))
    h.observe(math.inf)
    page = strict_json(p.page())
    series = {s["labels"]["kind"]: s["value"] for s in page["metrics"]["reading"]["series"]}
    assert series == {"nan": "NaN", "up": "+Inf", "down": "-Inf", "ok": 2.5}
    assert page["metrics"]["single"]["series"] == [{"labels": {}, "value": "NaN"}]
    assert page["metrics"]["set"]["series"] == [{"labels": {}, "value": 0.0}]
    assert page["metrics"]["work"]["series"][0]["count"] == 0
    assert float(series["up"]) == math.inf  # the strings read back with float()


def test_prometheus_text_keeps_a_non_finite_gauge_callback() -> None:
    p = prometheus.Provider()
    p.gauge("reading", help="R.", callback=lambda: math.nan)
    p.gauge("limit", help="L.", callback=lambda: math.inf)
    samples = {s.name: s.value for f in text_parse(p.exposition().decode()) for s in f.samples}
    assert math.isnan(samples["reading"])
    assert samples["limit"] == math.inf


def test_process_families_are_the_collectors_names() -> None:
    families = {
        d.prometheus_name.removesuffix("_total") if d.kind == "counter" else d.prometheus_name
        for d in DECLARATIONS
    }
    assert families == contract.PROCESS_FAMILIES


def test_process_metrics_still_build_on_statsd() -> None:
    # statsd declares the collector's metrics itself: they are not a user's clash.
    p = statsd.Provider(None, process_metrics=True)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="process metric"):
        p.gauge("process_open_fds", help="Mine.")
    p.close()


@pytest.mark.parametrize("openmetrics", [False, True])
def test_exposition_with_process_metrics_parses_whole(openmetrics: bool) -> None:
    p = prometheus.Provider(process_metrics=True)
    with pytest.raises(ConfigError, match="'process_open_fds' is a process metric"):
        p.gauge("process_open_fds", help="Mine.")
    p.gauge("app_open_fds", help="Mine.").set(3)
    text = p.exposition(openmetrics=openmetrics).decode()
    parse = om_parse if openmetrics else text_parse
    names = [f.name for f in parse(text)]
    assert len(names) == len(set(names))
    assert "process_open_fds" in names
    assert "app_open_fds" in names


def test_promtool_accepts_the_exposition_with_process_metrics() -> None:
    promtool = servers.require_env("KITOBSTEST_PROMTOOL")  # it reads text 0.0.4 only
    p = prometheus.Provider(process_metrics=True)
    p.gauge("app_open_fds", help="Mine.").set(3)
    p.counter("jobs", help="Jobs.", labels=("queue",)).labels(None).add(1)  # type: ignore[arg-type]
    text = p.exposition().decode()
    done: subprocess.CompletedProcess[str] = servers.promtool_check_metrics(promtool, text)
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'queue="None"' not in text
