"""In-process value children: counters, gauges and bucket histograms kept in memory.

The prometheus, pushgateway and expvar backends keep their values in these. Each child caches
its rendered label block (``key``) so an exposition is string joins, not formatting.

Recording never raises and never poisons a series: a value that is not a finite number (NaN,
an infinity, a string, None) or a negative counter delta is dropped and counted through
`kitobs.metrics._declare.Family.reject` (``reason="invalid_value"``). The checks are short:
``delta >= 0.0 and delta < 1e999`` (``1e999`` is the constant +inf; two plain comparisons cost
less than a chained one) is False for negatives, infinities and NaN; ``value - value == 0.0`` is
False for infinities and NaN; anything that is not a number raises inside the ``try``, which
costs nothing when nothing is raised.

Updates are lock-free where `kitobs.metrics._declare.LOCK_FREE` holds (see there why that is
safe) and take a per-child lock otherwise; `children` picks the classes once, at construction.
"""

from __future__ import annotations

import math
import threading
import time
from bisect import bisect_left  # a module global: one look-up less per observe
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kitobs.metrics._declare import LOCK_FREE, Bound

if TYPE_CHECKING:
    from kitobs.metrics import ExemplarContext
    from kitobs.metrics._declare import Family

__all__ = [
    "CounterValue",
    "GaugeValue",
    "HistogramValue",
    "ExemplarHistogramValue",
    "LockedCounterValue",
    "LockedGaugeValue",
    "LockedHistogramValue",
    "Exemplar",
    "Kinds",
    "children",
    "fmt",
]


@dataclass(frozen=True, slots=True)
class Exemplar:
    """Exemplar ties one observation to a trace, e.g. the latest one in a bucket."""

    trace_id: str
    span_id: str
    value: float
    timestamp: float


class CounterValue(Bound):
    """CounterValue is a counter child kept in memory, e.g. ``requests{method="GET"}``."""

    __slots__ = ("_family", "created", "key", "value", "values")

    def __init__(self, family: Family[CounterValue], values: tuple[str, ...], key: str) -> None:
        self._family = family
        self.values = values
        self.key = key
        self.value = 0.0
        self.created = time.time()

    def add(self, delta: float = 1.0) -> None:
        """add increases the value; a negative or non-finite delta is dropped and counted."""
        try:
            if delta >= 0.0 and delta < 1e999:
                # Lock-free: see _declare.LOCK_FREE.
                self.value += delta
                return
        except Exception:  # not a number: dropped below, never raised
            pass
        self._family.reject(delta)


class LockedCounterValue(CounterValue):
    """LockedCounterValue is `CounterValue` with a lock, for free-threaded builds."""

    __slots__ = ("_lock",)

    def __init__(self, family: Family[CounterValue], values: tuple[str, ...], key: str) -> None:
        super().__init__(family, values, key)
        self._lock = threading.Lock()

    def add(self, delta: float = 1.0) -> None:
        """add increases the value under the child's lock."""
        try:
            if delta >= 0.0 and delta < 1e999:
                with self._lock:
                    self.value += delta
                return
        except Exception:  # likewise
            pass
        self._family.reject(delta)


class GaugeValue(Bound):
    """GaugeValue is a gauge child kept in memory, e.g. ``active_requests{method="GET"}``."""

    __slots__ = ("_family", "created", "key", "value", "values")

    def __init__(self, family: Family[GaugeValue], values: tuple[str, ...], key: str) -> None:
        self._family = family
        self.values = values
        self.key = key
        self.value = 0.0
        self.created = time.time()

    def set(self, value: float) -> None:
        """set replaces the value; a non-finite one is dropped and counted."""
        try:
            if value - value == 0.0:
                self.value = value + 0.0  # a float, and cheaper than float(value)
                return
        except Exception:  # not a number: dropped below, never raised
            pass
        self._family.reject(value)

    def add(self, delta: float = 1.0) -> None:
        """add changes the value by *delta*; a non-finite one is dropped and counted."""
        try:
            if delta - delta == 0.0:
                self.value += delta
                return
        except Exception:  # likewise
            pass
        self._family.reject(delta)


class LockedGaugeValue(GaugeValue):
    """LockedGaugeValue is `GaugeValue` with a lock, for free-threaded builds."""

    __slots__ = ("_lock",)

    def __init__(self, family: Family[GaugeValue], values: tuple[str, ...], key: str) -> None:
        super().__init__(family, values, key)
        self._lock = threading.Lock()

    def set(self, value: float) -> None:
        """set replaces the value under the child's lock."""
        try:
            if value - value == 0.0:
                value = value + 0.0
                with self._lock:
                    self.value = value
                return
        except Exception:  # likewise
            pass
        self._family.reject(value)

    def add(self, delta: float = 1.0) -> None:
        """add changes the value under the child's lock."""
        try:
            if delta - delta == 0.0:
                with self._lock:
                    self.value += delta
                return
        except Exception:  # likewise
            pass
        self._family.reject(delta)


class HistogramValue(Bound):
    """HistogramValue keeps bucket counts and a sum, e.g. request durations for one route.

    ``key`` holds the exposition line prefixes: one per bucket (``+Inf`` last), then ``_sum``
    and ``_count``. ``counts[i]`` counts values ``<= bounds[i]`` and ``> bounds[i-1]`` (not
    cumulative); the last slot counts values above every bound (``+Inf``).
    """

    __slots__ = ("_family", "bounds", "counts", "created", "key", "sum", "values")

    def __init__(
        self,
        family: Family[HistogramValue],
        values: tuple[str, ...],
        key: tuple[str, ...],
        bounds: tuple[float, ...],
    ) -> None:
        self._family = family
        self.values = values
        self.key = key
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        """observe counts *value* in its bucket and adds it to the sum.

        A non-finite value is dropped and counted: +Inf then -Inf would leave the sum NaN.
        """
        try:
            if value - value == 0.0:
                # Lock-free: see _declare.LOCK_FREE; list item and attribute += are C operations.
                # The sum first: if it raises (a number float cannot add), nothing is counted.
                self.sum += value
                self.counts[bisect_left(self.bounds, value)] += 1
                return
        except Exception:  # not a number: dropped below, never raised
            pass
        self._family.reject(value)

    def snapshot(self) -> tuple[list[int], float]:
        """snapshot gives the bucket counts (not cumulative) and the sum."""
        return list(self.counts), self.sum


class LockedHistogramValue(HistogramValue):
    """LockedHistogramValue is `HistogramValue` with a lock, for free-threaded builds."""

    __slots__ = ("_lock",)

    def __init__(
        self,
        family: Family[HistogramValue],
        values: tuple[str, ...],
        key: tuple[str, ...],
        bounds: tuple[float, ...],
    ) -> None:
        super().__init__(family, values, key, bounds)
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        """observe counts *value* under the child's lock."""
        try:
            if value - value == 0.0:
                i = bisect_left(self.bounds, value)
                with self._lock:
                    self.sum += value
                    self.counts[i] += 1
                return
        except Exception:  # likewise
            pass
        self._family.reject(value)

    def snapshot(self) -> tuple[list[int], float]:
        """snapshot gives a consistent copy of counts and sum."""
        with self._lock:
            return list(self.counts), self.sum


class ExemplarHistogramValue(HistogramValue):
    """ExemplarHistogramValue also keeps the latest exemplar of each bucket, e.g. a trace id."""

    __slots__ = ("_context", "_locked", "exemplars")

    def __init__(
        self,
        family: Family[HistogramValue],
        values: tuple[str, ...],
        key: tuple[str, ...],
        bounds: tuple[float, ...],
        context: ExemplarContext,
    ) -> None:
        super().__init__(family, values, key, bounds)
        self._context = context
        self._locked = threading.Lock() if not LOCK_FREE else None
        self.exemplars: list[Exemplar | None] = [None] * (len(bounds) + 1)

    def observe(self, value: float) -> None:
        """observe counts *value* and keeps the current span as the bucket's exemplar."""
        try:
            if not value - value == 0.0:
                raise ValueError(value)
            i = bisect_left(self.bounds, value)
            lock = self._locked
            if lock is None:
                self.sum += value
                self.counts[i] += 1
            else:
                with lock:
                    self.sum += value
                    self.counts[i] += 1
        except Exception:  # not a finite number: dropped and counted, never raised
            self._family.reject(value)
            return
        try:
            ids = self._context()
        except Exception:  # a broken context function must not break recording
            ids = None
        if ids is not None:
            self.exemplars[i] = Exemplar(ids[0], ids[1], value, time.time())


@dataclass(frozen=True, slots=True)
class Kinds:
    """Kinds are the child classes one provider uses, chosen once by `children`."""

    counter: type[CounterValue]
    gauge: type[GaugeValue]
    histogram: Callable[
        [Family[HistogramValue], tuple[str, ...], tuple[str, ...], tuple[float, ...]],
        HistogramValue,
    ]


def children(
    exemplar_context: ExemplarContext | None = None, *, lock_free: bool = LOCK_FREE
) -> Kinds:
    """children picks lock-free or locked child classes, e.g. ``children().counter``."""
    histogram: Callable[
        [Family[HistogramValue], tuple[str, ...], tuple[str, ...], tuple[float, ...]],
        HistogramValue,
    ]
    if exemplar_context is not None:
        ctx = exemplar_context

        def histogram(
            family: Family[HistogramValue],
            values: tuple[str, ...],
            key: tuple[str, ...],
            b: tuple[float, ...],
        ) -> HistogramValue:
            return ExemplarHistogramValue(family, values, key, b, ctx)

    else:
        histogram = HistogramValue if lock_free else LockedHistogramValue
    if lock_free:
        return Kinds(CounterValue, GaugeValue, histogram)
    return Kinds(LockedCounterValue, LockedGaugeValue, histogram)


def fmt(value: float) -> str:
    """fmt renders a sample value as Prometheus does, e.g. ``1.0``, ``+Inf``, ``NaN``."""
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if value != value:
        return "NaN"
    return repr(float(value))
