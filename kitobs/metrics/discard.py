"""discard: metrics that drop every observation, e.g. when metrics are turned off.

Declarations and bindings are still checked, so a wrong label shows up whatever the backend.

Example::

    >>> provider = Provider()
    >>> provider.counter("jobs", help="Jobs run.").add()
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from kitobs.contract import TELEMETRY_DROPPED
from kitobs.metrics._declare import (
    Bound,
    Core,
    CounterFamily,
    Declaration,
    Family,
    GaugeFamily,
    HistogramFamily,
    declaration,
    from_spec,
)

if TYPE_CHECKING:
    from kitobs.contract import MetricSpec
    from kitobs.metrics import ASGIApp, GaugeCallback, InstrumentT, WSGIApp
    from kitobs.metrics import Counter as CounterProtocol

__all__ = ["Provider", "Child", "Counter", "Gauge", "Histogram"]


class Child(Bound):
    """Child is a bound series that records nothing, e.g. ``counter.labels("x")``."""

    __slots__ = ("_family",)

    def __init__(self, family: Family[Child], values: tuple[str, ...]) -> None:
        self._family = family

    def add(self, delta: float = 1.0) -> None:
        """add does nothing."""

    def set(self, value: float) -> None:
        """set does nothing."""

    def observe(self, value: float) -> None:
        """observe does nothing."""


#: Counter is a discarding counter.
Counter = CounterFamily[Child]
#: Gauge is a discarding gauge.
Gauge = GaugeFamily[Child]
#: Histogram is a discarding histogram.
Histogram = HistogramFamily[Child]


class Provider:
    """Provider builds metrics that record nothing, e.g. ``discard.Provider()``."""

    def __init__(self, **_ignored: Any) -> None:
        # A low cap: the children are empty, but their cache should stay small anyway.
        self._core = Core(max_label_sets=100)

    def counter(
        self, name: str, *, help: str, unit: str = "", labels: Sequence[str] = ()
    ) -> Counter:
        """counter declares a counter that records nothing."""
        return cast(
            "Counter", self._make(declaration(name, "counter", help=help, unit=unit, labels=labels))
        )

    def gauge(
        self,
        name: str,
        *,
        help: str,
        unit: str = "",
        labels: Sequence[str] = (),
        callback: GaugeCallback | None = None,
    ) -> Gauge:
        """gauge declares a gauge that records nothing; the callback is never read."""
        return cast(
            "Gauge", self._make(declaration(name, "gauge", help=help, unit=unit, labels=labels))
        )

    def histogram(
        self,
        name: str,
        *,
        help: str,
        unit: str = "",
        labels: Sequence[str] = (),
        buckets: Sequence[float] | None = None,
    ) -> Histogram:
        """histogram declares a histogram that records nothing."""
        decl = declaration(name, "histogram", help=help, unit=unit, labels=labels, buckets=buckets)
        return cast("Histogram", self._make(decl))

    def declare(self, spec: MetricSpec[InstrumentT]) -> InstrumentT:
        """declare declares a contract metric that records nothing."""
        return cast("InstrumentT", self._make(from_spec(spec)))

    def dropped(self, signal: str, reason: str) -> CounterProtocol:
        """dropped gives a counter that records nothing."""
        return self.declare(TELEMETRY_DROPPED).labels(signal, reason)

    def wsgi_routes(self) -> dict[str, WSGIApp]:
        """wsgi_routes is empty: this backend serves no page."""
        return {}

    def asgi_routes(self) -> dict[str, ASGIApp]:
        """asgi_routes is empty: this backend serves no page."""
        return {}

    def close(self) -> None:
        """close does nothing."""

    def _make(self, decl: Declaration) -> Counter | Gauge | Histogram:
        def make(d: Declaration) -> Counter | Gauge | Histogram:
            if d.kind == "counter":
                return CounterFamily(d, self._core, Child)
            if d.kind == "gauge":
                return GaugeFamily(d, self._core, Child)
            return HistogramFamily(d, self._core, Child)

        return self._core.declare(decl, make)
