"""multi: fan every metric out to several backends, e.g. Prometheus and statsd at once.

Each declaration is made on every member; binding labels binds each member once and caches the
bundle, so the hot path is one call per member. The members' routes (``/metrics``,
``/debug/vars``) are merged by `Provider.wsgi_routes` and `Provider.asgi_routes`.

Example::

    >>> from kitobs.metrics import memory
    >>> a, b = memory.Provider(), memory.Provider()
    >>> jobs = Provider(a, b).counter("jobs", help="Jobs run.")
    >>> jobs.add()
    >>> a.value("jobs"), b.value("jobs")
    (1.0, 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from kitobs.metrics._declare import (
    Bound,
    Core,
    CounterFamily,
    Declaration,
    Family,
    GaugeFamily,
    HistogramFamily,
    Logger,
    declaration,
    from_spec,
)
from kitobs.metrics.selfmetrics import LABEL_SETS_FOLDED

if TYPE_CHECKING:
    from kitobs.metrics import ASGIApp, GaugeCallback, InstrumentT, MetricSpec, WSGIApp
    from kitobs.metrics import Counter as CounterProtocol
    from kitobs.metrics import Gauge as GaugeProtocol
    from kitobs.metrics import Histogram as HistogramProtocol
    from kitobs.metrics import Provider as ProviderProtocol

__all__ = ["Provider", "Child", "Counter", "Gauge", "Histogram"]


class Child(Bound):
    """Child is one bound series on every member, e.g. ``counter.labels("GET")``."""

    __slots__ = ("_family", "_members")

    def __init__(self, family: Family[Child], members: tuple[Any, ...]) -> None:
        self._family = family
        self._members = members

    def add(self, delta: float = 1.0) -> None:
        """add adds on every member."""
        for m in self._members:
            m.add(delta)

    def set(self, value: float) -> None:
        """set sets on every member."""
        for m in self._members:
            m.set(value)

    def observe(self, value: float) -> None:
        """observe observes on every member."""
        for m in self._members:
            m.observe(value)


#: Counter is a fan-out counter.
Counter = CounterFamily[Child]
#: Gauge is a fan-out gauge.
Gauge = GaugeFamily[Child]
#: Histogram is a fan-out histogram.
Histogram = HistogramFamily[Child]


class Provider:
    """Provider fans out to *members*, e.g. ``multi.Provider(prom, statsd)``.

    The cardinality guard of this provider folds before the members' own guards would. Closing
    it closes every member.
    """

    def __init__(
        self,
        *members: ProviderProtocol,
        max_label_sets: int = 2000,
        logger: Logger | None = None,
    ) -> None:
        self.members: tuple[ProviderProtocol, ...] = members
        # Common labels are the members' business (each adds its own); none here.
        self._core = Core(max_label_sets=max_label_sets, logger=logger)
        # A binding mistake on this provider is counted once on every member.
        self._core.set_dropped(self.dropped)
        self._core.set_folded(self.declare(LABEL_SETS_FOLDED))

    def counter(
        self, name: str, *, help: str, unit: str = "", labels: Sequence[str] = ()
    ) -> Counter:
        """counter declares a counter on every member."""
        decl = declaration(name, "counter", help=help, unit=unit, labels=labels)
        made = [m.counter(name, help=help, unit=unit, labels=labels) for m in self.members]
        return cast("Counter", self._family(decl, made))

    def gauge(
        self,
        name: str,
        *,
        help: str,
        unit: str = "",
        labels: Sequence[str] = (),
        callback: GaugeCallback | None = None,
    ) -> Gauge:
        """gauge declares a gauge on every member (each reads the callback itself)."""
        decl = declaration(name, "gauge", help=help, unit=unit, labels=labels)
        made = [
            m.gauge(name, help=help, unit=unit, labels=labels, callback=callback)
            for m in self.members
        ]
        return cast("Gauge", self._family(decl, made))

    def histogram(
        self,
        name: str,
        *,
        help: str,
        unit: str = "",
        labels: Sequence[str] = (),
        buckets: Sequence[float] | None = None,
    ) -> Histogram:
        """histogram declares a histogram on every member."""
        decl = declaration(name, "histogram", help=help, unit=unit, labels=labels, buckets=buckets)
        made = [
            m.histogram(name, help=help, unit=unit, labels=labels, buckets=buckets)
            for m in self.members
        ]
        return cast("Histogram", self._family(decl, made))

    def declare(self, spec: MetricSpec[InstrumentT]) -> InstrumentT:
        """declare declares a contract metric on every member."""
        decl = from_spec(spec)
        made = [m.declare(spec) for m in self.members]
        return cast("InstrumentT", self._family(decl, made))

    def dropped(self, signal: str, reason: str) -> CounterProtocol:
        """dropped gives a child that counts the drop on every member."""
        return Child(
            cast("Family[Child]", None),
            tuple(m.dropped(signal, reason) for m in self.members),
        )

    def wsgi_routes(self) -> dict[str, WSGIApp]:
        """wsgi_routes merges the members' WSGI routes, e.g. ``/metrics`` and ``/debug/vars``."""
        routes: dict[str, WSGIApp] = {}
        for m in self.members:
            get = getattr(m, "wsgi_routes", None)
            if get is not None:
                routes.update(get())
        return routes

    def asgi_routes(self) -> dict[str, ASGIApp]:
        """asgi_routes merges the members' ASGI routes."""
        routes: dict[str, ASGIApp] = {}
        for m in self.members:
            get = getattr(m, "asgi_routes", None)
            if get is not None:
                routes.update(get())
        return routes

    def close(self) -> None:
        """close closes every member."""
        for m in self.members:
            m.close()

    def _family(
        self,
        decl: Declaration,
        made: list[CounterProtocol] | list[GaugeProtocol] | list[HistogramProtocol],
    ) -> Counter | Gauge | Histogram:
        members: tuple[Any, ...] = tuple(made)

        def child(family: Family[Child], values: tuple[str, ...]) -> Child:
            return Child(family, tuple(m.labels(*values) for m in members))

        def make(d: Declaration) -> Counter | Gauge | Histogram:
            if d.kind == "counter":
                return CounterFamily(d, self._core, child)
            if d.kind == "gauge":
                return GaugeFamily(d, self._core, child)
            return HistogramFamily(d, self._core, child)

        return self._core.declare(decl, make)
