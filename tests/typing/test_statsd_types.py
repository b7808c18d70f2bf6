"""mypy-only checks: the statsd backend matches the kitobs.metrics Protocols."""

from kitobs import metrics
from kitobs.metrics import statsd


def _provider(p: statsd.Provider) -> metrics.Provider:
    return p


def _counter(c: statsd.Counter) -> metrics.Counter:
    return c


def _gauge(g: statsd.Gauge) -> metrics.Gauge:
    return g


def _histogram(h: statsd.Histogram) -> metrics.Histogram:
    return h
