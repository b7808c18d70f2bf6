"""harnesses: every metrics backend with a reader of its own output, for the conformance suite.

A harness builds a fresh provider and reads values back offline through that backend's own
output: the Prometheus exposition parsed by prometheus_client's parsers, the expvar JSON page, the
OpenTelemetry in-memory reader, the memory backend's assertion API. Names given to a harness
are base names (``jobs``); each harness maps them to its backend's names.

`HARNESSES` maps a backend name to a harness factory; the statsd harnesses live in
``harness_statsd.py`` as ``CONFORMANCE`` (same shape) and are merged in here.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable
from typing import Any, Protocol

from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as om_families,
)
from prometheus_client.parser import text_string_to_metric_families

from kitobs import contract
from kitobs.metrics import Provider, teststat
from kitobs.metrics import expvar as expvar_backend
from kitobs.metrics import memory as memory_backend
from kitobs.metrics import multi as multi_backend
from kitobs.metrics import multiprocess as multiprocess_backend
from kitobs.metrics import otel as otel_backend
from kitobs.metrics import prometheus as prometheus_backend
from kitobs.metrics import pushgateway as pushgateway_backend
from tests.metrics import harness_statsd as statsd_harnesses

__all__ = ["HARNESSES", "Harness", "names", "strict_json"]


class Harness(Protocol):
    """Harness is a fresh provider plus readers of its output."""

    provider: Provider

    def counter(self, name: str, **labels: str) -> float:
        """counter reads the counter series of base name *name*."""
        ...

    def gauge(self, name: str, **labels: str) -> float:
        """gauge reads the gauge series of base name *name*."""
        ...

    def histogram(self, name: str, **labels: str) -> teststat.HistogramReading:
        """histogram reads the histogram series of base name *name* (unit seconds)."""
        ...

    def close(self) -> None:
        """close releases the provider."""


def names(name: str, kind: str, unit: str = "") -> str:
    """names gives the Prometheus name, e.g. ``jobs`` counter → ``jobs_total``."""
    return contract.prometheus_name(name, unit, kind)  # type: ignore[arg-type]


def _refuse_constant(token: str) -> float:
    raise AssertionError(f"not strict JSON: {token}")


def strict_json(text: str | bytes) -> Any:
    """strict_json parses JSON, failing on the ``NaN``/``Infinity`` tokens json.dumps allows."""
    return json.loads(text, parse_constant=_refuse_constant)


def _match(sample_labels: dict[str, str], want: dict[str, str], ignore: set[str]) -> bool:
    rest = {k: v for k, v in sample_labels.items() if k not in ignore}
    return rest == want


class _Exposition:
    """Reads a Prometheus exposition through prometheus_client's own parser."""

    def __init__(self, provider: Any, render: Callable[[], bytes], openmetrics: bool) -> None:
        self.provider = provider
        self._render = render
        self._om = openmetrics

    def _samples(self) -> list[Any]:
        text = self._render().decode()
        parse = om_families if self._om else text_string_to_metric_families
        return [s for fam in parse(text) for s in fam.samples]

    def _value(self, sample_name: str, labels: dict[str, str]) -> float:
        for s in self._samples():
            if s.name == sample_name and _match(s.labels, labels, set()):
                return float(s.value)
        return math.nan

    def counter(self, name: str, **labels: str) -> float:
        return self._value(names(name, "counter"), labels)

    def gauge(self, name: str, **labels: str) -> float:
        return self._value(name, labels)

    def histogram(self, name: str, **labels: str) -> teststat.HistogramReading:
        full = names(name, "histogram", "seconds")
        buckets: dict[float, int] = {}
        count, total = 0, math.nan
        for s in self._samples():
            if s.name == full + "_bucket" and _match(s.labels, labels, {"le"}):
                buckets[float(s.labels["le"])] = int(s.value)
            elif s.name == full + "_count" and _match(s.labels, labels, set()):
                count = int(s.value)
            elif s.name == full + "_sum" and _match(s.labels, labels, set()):
                total = float(s.value)
        return teststat.HistogramReading(count=count, sum=total, buckets=buckets)

    def close(self) -> None:
        self.provider.close()


def prometheus_text() -> Harness:
    """prometheus_text reads the text 0.0.4 exposition."""
    p = prometheus_backend.Provider()
    return _Exposition(p, p.exposition, openmetrics=False)


def prometheus_openmetrics() -> Harness:
    """prometheus_openmetrics reads the OpenMetrics exposition."""
    p = prometheus_backend.Provider()
    return _Exposition(p, lambda: p.exposition(openmetrics=True), openmetrics=True)


class _Registry(_Exposition):
    """Reads through a prometheus_client registry the collector adapter is registered on."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        p = prometheus_backend.Provider(registry=self.registry)
        super().__init__(p, lambda: b"", openmetrics=False)

    def _samples(self) -> list[Any]:
        return [s for fam in self.registry.collect() for s in fam.samples]


class _Memory:
    def __init__(self) -> None:
        self.provider = memory_backend.Provider()

    def counter(self, name: str, **labels: str) -> float:
        return self.provider.value(name, **labels)

    def gauge(self, name: str, **labels: str) -> float:
        return self.provider.value(name, **labels)

    def histogram(self, name: str, **labels: str) -> teststat.HistogramReading:
        seen = self.provider.observations(name, **labels)
        return teststat.HistogramReading(
            count=len(seen),
            sum=math.fsum(seen),
            quantiles={q: self.provider.quantile(name, q, **labels) for q in teststat.QUANTILES}
            if seen
            else {},
        )

    def close(self) -> None:
        self.provider.close()


class _Multi(_Exposition):
    """A fan-out to Prometheus and memory, read through the Prometheus member."""

    def __init__(self) -> None:
        self.prom = prometheus_backend.Provider()
        self.mem = memory_backend.Provider()
        super().__init__(multi_backend.Provider(self.prom, self.mem), self.prom.exposition, False)


class _Expvar:
    """Reads the expvar JSON page (the bytes it serves)."""

    def __init__(self, directory: str = "") -> None:
        self.provider = expvar_backend.Provider(quantiles=teststat.QUANTILES, directory=directory)

    def _series(self, full: str, labels: dict[str, str]) -> dict[str, Any] | None:
        page = strict_json(self.provider.page())
        for entry in page["metrics"].get(full, {}).get("series", []):
            if entry["labels"] == labels:
                return dict(entry)
        return None

    def counter(self, name: str, **labels: str) -> float:
        entry = self._series(names(name, "counter"), labels)
        return math.nan if entry is None else float(entry["value"])

    def gauge(self, name: str, **labels: str) -> float:
        entry = self._series(name, labels)
        return math.nan if entry is None else float(entry["value"])

    def histogram(self, name: str, **labels: str) -> teststat.HistogramReading:
        entry = self._series(names(name, "histogram", "seconds"), labels)
        if entry is None:
            return teststat.HistogramReading(count=0)
        return teststat.HistogramReading(
            count=entry["count"],
            sum=entry["sum"],
            quantiles={float(q): v for q, v in entry["quantiles"].items()},
        )

    def close(self) -> None:
        self.provider.close()


class _ExpvarShared(_Expvar):
    """Reads the expvar page built from a shared directory's totals (one process here)."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="kitobs-ev-")
        super().__init__(self._dir.name)

    def close(self) -> None:
        super().close()
        self._dir.cleanup()


class _Otel:
    """Reads through OpenTelemetry's InMemoryMetricReader."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = otel_backend.Provider(metric_readers=[self.reader])

    def _point(self, otel_name: str, labels: dict[str, str]) -> Any:
        data = self.reader.get_metrics_data()
        for rm in data.resource_metrics if data else []:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name != otel_name:
                        continue
                    want = {contract.otel_attribute(k): v for k, v in labels.items()}
                    for point in metric.data.data_points:
                        if dict(point.attributes or {}) == want:
                            return point
        return None

    def counter(self, name: str, **labels: str) -> float:
        point = self._point(contract.otel_name(name), labels)
        return math.nan if point is None else float(point.value)

    def gauge(self, name: str, **labels: str) -> float:
        return self.counter(name, **labels)

    def histogram(self, name: str, **labels: str) -> teststat.HistogramReading:
        point = self._point(contract.otel_name(name), labels)
        if point is None:
            return teststat.HistogramReading(count=0)
        running, buckets = 0, {}
        for bound, count in zip(point.explicit_bounds, point.bucket_counts, strict=False):
            running += count
            buckets[float(bound)] = running
        return teststat.HistogramReading(count=point.count, sum=point.sum, buckets=buckets)

    def close(self) -> None:
        self.provider.close()


class _Pushgateway(_Exposition):
    """Reads what a push would send (the payload), through prometheus_client's parser."""

    def __init__(self) -> None:
        p = pushgateway_backend.Provider("127.0.0.1:9", job="conformance", push_on_exit=False)
        super().__init__(p, p.payload, openmetrics=False)


class _Multiprocess(_Exposition):
    """Reads the summed exposition of a multi-process provider (one process here)."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="kitobs-mp-")
        p = multiprocess_backend.Provider(self._dir.name)
        super().__init__(p, p.exposition, openmetrics=False)

    def close(self) -> None:
        super().close()
        self._dir.cleanup()


HARNESSES: dict[str, Callable[[], Harness]] = {
    "expvar": _Expvar,
    "expvar-multiprocess": _ExpvarShared,
    "multiprocess": _Multiprocess,
    "otel": _Otel,
    "pushgateway": _Pushgateway,
    "prometheus": prometheus_text,
    "prometheus-openmetrics": prometheus_openmetrics,
    "prometheus-registry": _Registry,
    "memory": _Memory,
    "multi": _Multi,
}


def _dump(obj: object) -> str:
    return json.dumps(obj, sort_keys=True)


HARNESSES.update(statsd_harnesses.CONFORMANCE)
