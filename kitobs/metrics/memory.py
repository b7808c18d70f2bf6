"""memory: metrics kept in process, with assertion helpers for your own tests.

Like markus's MetricsMock: build a `Provider`, hand it to the code under test, then assert on
what was recorded. Every observation of a histogram is kept (quantiles are exact).

Example::

    >>> provider = Provider()
    >>> jobs = provider.counter("jobs", help="Jobs run.", labels=("queue",))
    >>> jobs.with_labels(queue="fast").add(2)
    >>> provider.assert_counter("jobs", 2, queue="fast")
    >>> provider.value("jobs_total", queue="fast")
    2.0
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from typing import TYPE_CHECKING

from kitobs.errors import ConfigError
from kitobs.metrics._declare import (
    LOCK_FREE,
    Bound,
    Core,
    CounterFamily,
    Declaration,
    Declaring,
    Family,
    GaugeFamily,
    HistogramFamily,
    Logger,
)
from kitobs.metrics._store import CounterValue, GaugeValue, LockedCounterValue, LockedGaugeValue
from kitobs.metrics.process import Collector as ProcessCollector

if TYPE_CHECKING:
    from kitobs.config import Settings
    from kitobs.metrics import ASGIApp, WSGIApp
    from kitobs.metrics.config import BuildContext

__all__ = ["Provider", "from_settings", "Counter", "Gauge", "Histogram", "HistogramValue"]


class HistogramValue(Bound):
    """HistogramValue keeps every observation of one series, e.g. ``observations``."""

    __slots__ = ("_family", "observations", "values")

    def __init__(self, family: Family[HistogramValue], values: tuple[str, ...]) -> None:
        self._family = family
        self.values = values
        self.observations: list[float] = []

    def observe(self, value: float) -> None:
        """observe keeps *value* (list.append is atomic, so no lock is needed).

        A value that is not a finite number is dropped and counted, as on every backend.
        """
        try:
            if value - value == 0.0:
                self.observations.append(float(value))
                return
        except Exception:  # not a number: dropped below, never raised
            pass
        self._family.reject(value)


#: Counter is a memory counter.
Counter = CounterFamily[CounterValue]
#: Gauge is a memory gauge.
Gauge = GaugeFamily[GaugeValue]
#: Histogram is a memory histogram.
Histogram = HistogramFamily[HistogramValue]


class Provider(Declaring):
    """Provider records in memory, e.g. ``memory.Provider()`` in a test.

    A gauge's callback is read by `value`; every histogram observation is kept.

    Args:
        common_labels: labels added to every series; assertions ignore them.
        max_label_sets: distinct label sets per metric before folding.
        logger: where the cardinality guard warns.
        process_metrics: make process metrics readable through `value`.
    """

    def __init__(
        self,
        *,
        common_labels: Mapping[str, str] | None = None,
        max_label_sets: int = 2000,
        logger: Logger | None = None,
        process_metrics: bool = False,
    ) -> None:
        self._core = Core(common_labels=common_labels, max_label_sets=max_label_sets, logger=logger)
        self._counter_cls = CounterValue if LOCK_FREE else LockedCounterValue
        self._gauge_cls = GaugeValue if LOCK_FREE else LockedGaugeValue
        self._process = ProcessCollector() if process_metrics else None
        self._dropped_family = self._core.declare_self_metrics(self.declare)

    def wsgi_routes(self) -> dict[str, WSGIApp]:
        """wsgi_routes is empty: this backend serves no page."""
        return {}

    def asgi_routes(self) -> dict[str, ASGIApp]:
        """asgi_routes is empty: this backend serves no page."""
        return {}

    def close(self) -> None:
        """close does nothing: there is nothing to release."""

    def _make(self, decl: Declaration) -> Counter | Gauge | Histogram:
        def make(d: Declaration) -> Counter | Gauge | Histogram:
            if d.kind == "counter":
                cc = self._counter_cls
                return CounterFamily(d, self._core, lambda f, v: cc(f, v, ""))
            if d.kind == "gauge":
                gc = self._gauge_cls
                return GaugeFamily(d, self._core, lambda f, v: gc(f, v, ""))
            return HistogramFamily(d, self._core, HistogramValue)

        return self._core.declare(decl, make)

    # --- reading back -----------------------------------------------------------------------

    def _find(self, name: str) -> tuple[Declaration, Family[object]]:
        found = self._core.lookup(name)
        if found is None or not isinstance(found[1], Family):
            known = sorted(d.name for d, _ in self._core.metrics())
            raise AssertionError(f"no metric {name!r}; declared: {known}")
        return found[0], found[1]

    def _key(self, decl: Declaration, labels: Mapping[str, str]) -> tuple[str, ...]:
        unknown = set(labels) - set(decl.labels)
        if unknown:
            raise AssertionError(f"metric {decl.name!r} has no label(s) {sorted(unknown)}")
        return tuple(str(labels.get(n, "")) for n in decl.labels)

    def value(self, name: str, /, **labels: str) -> float:
        """value reads a counter or gauge series (0 when never recorded), e.g. ``value("jobs")``."""
        if self._process is not None:
            for decl, samples in self._process.collect():
                if name in (decl.name, decl.prometheus_name):
                    key = self._key(decl, labels)
                    return dict(samples).get(key, 0.0)
        decl, fam = self._find(name)
        key = self._key(decl, labels)
        if fam.callback is not None:
            got = fam.callback()
            if isinstance(got, Mapping):
                return float(got.get(key, 0.0))
            return float(got)
        child = fam.series.get(key)
        if child is None:
            return 0.0
        if isinstance(child, CounterValue | GaugeValue):
            return child.value
        raise AssertionError(f"metric {name!r} is a histogram; use observations()")

    def observations(self, name: str, /, **labels: str) -> list[float]:
        """observations gives every value a histogram series observed, in order."""
        decl, fam = self._find(name)
        child = fam.series.get(self._key(decl, labels))
        if child is None:
            return []
        if not isinstance(child, HistogramValue):
            raise AssertionError(f"metric {name!r} is not a histogram")
        return list(child.observations)

    def series(self, name: str) -> list[dict[str, str]]:
        """series lists the label sets recorded on a metric, e.g. ``[{"queue": "fast"}]``."""
        decl, fam = self._find(name)
        return [dict(zip(decl.labels, values, strict=True)) for values in fam.series]

    def assert_counter(self, name: str, value: float, /, **labels: str) -> None:
        """assert_counter raises AssertionError unless the series' value is *value*."""
        have = self.value(name, **labels)
        if not math.isclose(have, value, rel_tol=1e-9, abs_tol=1e-12):
            raise AssertionError(f"{name}{labels}: want {value}, have {have}")

    def assert_gauge(self, name: str, value: float, /, **labels: str) -> None:
        """assert_gauge raises AssertionError unless the series' value is *value*."""
        self.assert_counter(name, value, **labels)

    def assert_histogram(
        self,
        name: str,
        /,
        *,
        count: int | None = None,
        sum: float | None = None,
        **labels: str,
    ) -> None:
        """assert_histogram checks a histogram series' count and/or sum, e.g. ``count=3``."""
        seen = self.observations(name, **labels)
        if count is not None and len(seen) != count:
            raise AssertionError(f"{name}{labels}: want count {count}, have {len(seen)}")
        if sum is not None and not math.isclose(math.fsum(seen), sum, rel_tol=1e-9):
            raise AssertionError(f"{name}{labels}: want sum {sum}, have {math.fsum(seen)}")

    def quantile(self, name: str, q: float, /, **labels: str) -> float:
        """quantile gives the exact *q* quantile of a histogram series, e.g. ``0.99``."""
        seen = sorted(self.observations(name, **labels))
        if not seen:
            raise ConfigError(f"metric {name!r}: no observations")
        if len(seen) == 1:
            return seen[0]
        return statistics.quantiles(seen, n=1000, method="inclusive")[round(q * 1000) - 1]


def from_settings(settings: Settings, context: BuildContext) -> Provider:
    """from_settings builds a memory provider with the ``[metrics]`` and service labels."""
    m = settings.metrics
    return Provider(
        common_labels=settings.service.labels,
        max_label_sets=m.max_label_sets,
        logger=context.logger,
        process_metrics=m.process_metrics,
    )
