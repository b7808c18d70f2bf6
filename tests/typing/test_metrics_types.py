"""mypy-only proofs that every metrics backend matches the kitobs.metrics Protocols."""

from __future__ import annotations

from kitobs import contract, metrics
from kitobs.metrics import (
    discard,
    expvar,
    memory,
    multi,
    multiprocess,
    otel,
    prometheus,
    pushgateway,
    statsd,
)
from kitobs.metrics.config import Backend


def _prometheus(p: prometheus.Provider) -> metrics.Provider:
    return p


def _pushgateway(p: pushgateway.Provider) -> metrics.Provider:
    return p


def _expvar(p: expvar.Provider) -> metrics.Provider:
    return p


def _otel(p: otel.Provider) -> metrics.Provider:
    return p


def _memory(p: memory.Provider) -> metrics.Provider:
    return p


def _discard(p: discard.Provider) -> metrics.Provider:
    return p


def _multi(p: multi.Provider) -> metrics.Provider:
    return p


def _multiprocess(p: multiprocess.Provider) -> metrics.Provider:
    return p


def _instruments(
    c: prometheus.Counter,
    g: prometheus.Gauge,
    h: prometheus.Histogram,
    ec: expvar.Counter,
    eh: expvar.Histogram,
    oc: otel.Counter,
    og: otel.Gauge,
    oh: otel.Histogram,
    mh: memory.Histogram,
    dc: discard.Counter,
    dh: discard.Histogram,
    xc: multi.Counter,
    xh: multi.Histogram,
    pc: multiprocess.Counter,
    pg: multiprocess.Gauge,
    ph: multiprocess.Histogram,
) -> tuple[metrics.Counter | metrics.Gauge | metrics.Histogram, ...]:
    counters: tuple[metrics.Counter, ...] = (c, ec, oc, dc, xc, pc, c.labels("a"), oc.labels("a"))
    gauges: tuple[metrics.Gauge, ...] = (g, og, pg, g.labels("a"), g.with_labels(a="b"))
    histograms: tuple[metrics.Histogram, ...] = (h, eh, oh, mh, dh, xh, ph, h.labels("a"))
    return (*counters, *gauges, *histograms)


def _declare_is_typed(p: metrics.Provider) -> None:
    duration: metrics.Histogram = p.declare(contract.HTTP_SERVER_REQUEST_DURATION)
    active: metrics.Gauge = p.declare(contract.HTTP_SERVER_ACTIVE_REQUESTS)
    dropped: metrics.Counter = p.declare(contract.TELEMETRY_DROPPED)
    duration.labels("GET", "/", "200", "https", "").observe(0.1)
    active.with_labels(url_scheme="https").add(-1)
    dropped.add()
    with metrics.timer(duration):
        pass


def _backends() -> list[Backend]:
    # Each module of kitobs.metrics.config.BACKENDS provides what a backend must.
    return [prometheus, statsd, expvar, otel, pushgateway, memory, discard]
