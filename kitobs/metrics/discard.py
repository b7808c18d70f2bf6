"""discard: metrics that drop every observation, e.g. when metrics are turned off.

Declarations and bindings are still checked, so a wrong label shows up whatever the backend.

Example::

    >>> provider = Provider()
    >>> provider.counter("jobs", help="Jobs run.").add()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kitobs.metrics._declare import (
    Bound,
    Core,
    CounterFamily,
    Declaration,
    Declaring,
    Family,
    GaugeFamily,
    HistogramFamily,
)
from kitobs.metrics.selfmetrics import TELEMETRY_DROPPED

if TYPE_CHECKING:
    from kitobs.config import Settings
    from kitobs.metrics import ASGIApp, WSGIApp
    from kitobs.metrics.config import BuildContext

__all__ = ["Provider", "from_settings", "Child", "Counter", "Gauge", "Histogram"]


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


class Provider(Declaring):
    """Provider builds metrics that record nothing, e.g. ``discard.Provider()``.

    Every instrument records nothing, a gauge's callback is never read, and ``dropped`` gives a
    counter that records nothing.
    """

    def __init__(self, **_ignored: Any) -> None:
        # A low cap: the children are empty, but their cache should stay small anyway.
        self._core = Core(max_label_sets=100)
        self._dropped_family = self.declare(TELEMETRY_DROPPED)

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


def from_settings(settings: Settings, context: BuildContext) -> Provider:
    """from_settings builds a discarding provider; it has no settings."""
    return Provider()
