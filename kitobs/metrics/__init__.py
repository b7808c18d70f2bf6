"""kitobs.metrics: one metrics interface; the backend is chosen by configuration.

A metric is declared once on a `Provider` (name, help, unit, label names, buckets) and recorded
through the small interfaces below. Each backend is one module beside this one and matches these
Protocols structurally: ``from kitobs.metrics import prometheus`` then ``prometheus.Provider()``.
`kitobs.metrics.config.provider_from_settings` builds the one the configuration names.

Example::

    >>> from kitobs.metrics import memory
    >>> provider = memory.Provider()
    >>> requests = provider.counter("jobs", help="Jobs run.", labels=("queue",))
    >>> fast = requests.labels("fast")  # bind once, reuse on the hot path
    >>> fast.add()
    >>> provider.assert_counter("jobs", 1.0, queue="fast")

Binding label values: ``with_labels(queue="fast")`` binds by name and may bind a subset (the rest
can be bound later; a label never bound is recorded as the empty string, which Prometheus treats
as absent: use it for optional labels such as ``error_type``). ``labels("fast")`` binds the
remaining labels by position. Binding an unknown name or the wrong number of values raises
`kitobs.errors.ConfigError` naming the metric, the expected labels and what was given, at bind
time. A ``None`` label value is the absent label. Binding is cached per tuple of values, so
``counter.labels("GET", "200").add()`` on the hot path costs a dict lookup. Declaring a metric
named like a process metric (``process_open_fds``, `kitobs.contract.PROCESS_FAMILIES`) raises
`kitobs.errors.ConfigError`.

Recording (``add``, ``set``, ``observe``) never raises. Every backend drops a value that is not a
finite number and a negative counter delta (``reason="invalid_value"``), and a recording on a
labelled metric whose labels were never bound (``reason="unbound_labels"``): each is counted in
``kitobs_telemetry_dropped_total{signal="metrics",reason}`` and warned once per metric.

Cardinality guard: past ``max_label_sets`` distinct label sets on one metric, new label sets fold
into one overflow series whose label values are all ``"_overflow"``; every fold is counted in
``kitobs_label_sets_folded_total{metric}`` and the first one per metric logs a warning.

Self-metrics: every provider declares ``kitobs_telemetry_dropped_total{signal,reason}`` and
``kitobs_label_sets_folded_total{metric}`` when built (present at zero), and
``provider.dropped(signal, reason)`` gives a bound counter other parts of kitobs use.

Backends and what they can do:

============  ======  ========  ==============================  ===========================
backend       labels  model     histogram                       output
============  ======  ========  ==============================  ===========================
prometheus    yes     pull      cumulative buckets (+exemplar)  text 0.0.4 / OpenMetrics
pushgateway   yes     push      cumulative buckets              text pushed at exit/demand
statsd        tags*   push      timer / histogram / distribution  UDP, TCP or Unix lines
expvar        yes     pull      count, sum, quantiles           JSON at /debug/vars
otel          yes     either    explicit buckets (advisory)     an OTel MeterProvider
memory        yes     in-proc   every observation kept          assertion helpers
discard       no      -         none                            nothing
multi         yes     fan-out   each backend's own              each backend's own
============  ======  ========  ==============================  ===========================

``*`` statsd: tags in the dogstatsd and telegraf flavours; with etsy, label values are appended
to the name in declared order or dropped, as configured.

Thread safety: no update is lost under concurrent use. On CPython with the GIL the bound
children update without a lock (see `kitobs.metrics._declare`); on a free-threaded build they
take a lock.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, ParamSpec, Protocol, TypeVar

from kitobs.metrics.naming import MetricKind, prometheus_name

__all__ = [
    "Counter",
    "Gauge",
    "Histogram",
    "Provider",
    "Instrument",
    "InstrumentT",
    "MetricSpec",
    "GaugeCallback",
    "ExemplarContext",
    "WSGIApp",
    "ASGIApp",
    "timer",
]

_P = ParamSpec("_P")
_R = TypeVar("_R")


class Counter(Protocol):
    """Counter accumulates monotonically, e.g. requests served: ``counter.add()``."""

    def add(self, delta: float = 1.0) -> None:
        """add increases the counter by *delta* (not negative), e.g. ``add(3)``."""

    def with_labels(self, **labels: str) -> Counter:
        """with_labels binds label values by name, e.g. ``with_labels(method="GET")``."""
        ...

    def labels(self, *values: str) -> Counter:
        """labels binds the remaining label values by position, e.g. ``labels("GET", "200")``."""
        ...


class Gauge(Protocol):
    """Gauge holds a value that goes up and down, e.g. requests in flight: ``gauge.add(-1)``."""

    def set(self, value: float) -> None:
        """set replaces the value, e.g. ``set(42)``."""

    def add(self, delta: float = 1.0) -> None:
        """add changes the value by *delta*, which may be negative, e.g. ``add(-1)``."""

    def with_labels(self, **labels: str) -> Gauge:
        """with_labels binds label values by name, e.g. ``with_labels(url_scheme="https")``."""
        ...

    def labels(self, *values: str) -> Gauge:
        """labels binds the remaining label values by position, e.g. ``labels("GET")``."""
        ...


class Histogram(Protocol):
    """Histogram records a distribution, e.g. request durations: ``histogram.observe(0.25)``."""

    def observe(self, value: float) -> None:
        """observe records one value, e.g. ``observe(0.031)`` seconds."""

    def with_labels(self, **labels: str) -> Histogram:
        """with_labels binds label values by name, e.g. ``with_labels(http_route="/users")``."""
        ...

    def labels(self, *values: str) -> Histogram:
        """labels binds the remaining label values by position, e.g. ``labels("GET", "/")``."""
        ...


#: Instrument is any of the three instruments, e.g. the result of `Provider.declare`.
Instrument = Counter | Gauge | Histogram
#: InstrumentT is the instrument type a `MetricSpec` declares, e.g. `Histogram`.
InstrumentT = TypeVar("InstrumentT", Counter, Gauge, Histogram)
#: GaugeCallback is read at collection time, e.g. ``lambda: queue.qsize()``; with labels, it
#: returns a mapping from label-value tuples (declared order) to values.
GaugeCallback = Callable[[], float | Mapping[tuple[str, ...], float]]
#: ExemplarContext returns (trace_id, span_id) of the current sampled span, or None.
ExemplarContext = Callable[[], tuple[str, str] | None]
#: WSGIApp is a PEP 3333 application, e.g. the Prometheus exposition.
WSGIApp = Callable[..., Iterable[bytes]]
#: ASGIApp is an ASGI 3 application, e.g. the Prometheus exposition.
ASGIApp = Callable[..., Awaitable[None]]


@dataclass(frozen=True, slots=True)
class MetricSpec(Generic[InstrumentT]):
    """MetricSpec declares one metric, e.g. `kitobs.contract.HTTP_SERVER_REQUEST_DURATION`.

    It is generic in the instrument it declares (``MetricSpec[Histogram]``), so
    ``provider.declare(spec)`` is typed; ``kind`` must agree with that type. Names follow
    `kitobs.metrics.naming`.
    """

    name: str
    kind: MetricKind
    unit: str
    help: str
    labels: tuple[str, ...]
    otel: str
    buckets: tuple[float, ...] | None = None
    #: Labels present only on some series (e.g. error_type only on errors).
    optional_labels: tuple[str, ...] = ()

    @property
    def prometheus_name(self) -> str:
        """The Prometheus name, e.g. ``http_server_request_duration_seconds``."""
        return prometheus_name(self.name, self.unit, self.kind)


class Provider(Protocol):
    """Provider declares metrics on one backend, e.g. ``provider.counter("jobs", help="…")``.

    Declaring a name again with the same shape returns the existing metric; with another shape
    (kind, unit, labels, buckets) it raises `kitobs.errors.DuplicateMetricError`. Bad names raise
    `kitobs.errors.ConfigError`. Names follow `kitobs.metrics.naming`: a snake_case base name
    without unit suffix or ``_total``.
    """

    def counter(
        self, name: str, *, help: str, unit: str = "", labels: Sequence[str] = ()
    ) -> Counter:
        """counter declares a counter, e.g. ``counter("jobs", help="Jobs run.")``."""
        ...

    def gauge(
        self,
        name: str,
        *,
        help: str,
        unit: str = "",
        labels: Sequence[str] = (),
        callback: GaugeCallback | None = None,
    ) -> Gauge:
        """gauge declares a gauge, e.g. ``gauge("queue_depth", help="…", callback=q.qsize)``."""
        ...

    def histogram(
        self,
        name: str,
        *,
        help: str,
        unit: str = "",
        labels: Sequence[str] = (),
        buckets: Sequence[float] | None = None,
    ) -> Histogram:
        """histogram declares a histogram, e.g. ``histogram("job_duration", unit="seconds")``.

        Buckets default to the contract's duration buckets (`kitobs.config.DURATION_BUCKETS`).
        """
        ...

    def declare(self, spec: MetricSpec[InstrumentT]) -> InstrumentT:
        """declare declares a contract metric, e.g. ``declare(contract.ENDPOINT_DURATION)``."""
        ...

    def dropped(self, signal: str, reason: str) -> Counter:
        """dropped gives the bound self-metric child, e.g. ``dropped("spans", "queue_full")``."""
        ...

    def wsgi_routes(self) -> dict[str, WSGIApp]:
        """wsgi_routes maps paths to the backend's pages, e.g. ``{"/metrics": app}``; {} if none.

        Mount them on the application's own server; push backends have none.
        """
        ...

    def asgi_routes(self) -> dict[str, ASGIApp]:
        """asgi_routes maps paths to the backend's pages as ASGI apps; {} if none."""
        ...

    def close(self) -> None:
        """close flushes and releases the backend (sockets, servers); it is idempotent."""


class timer:  # lowercase: used like a function, ``with timer(h):`` / ``@timer(h)``
    """timer observes elapsed seconds into a histogram, e.g. ``with timer(duration): work()``.

    It is also a decorator: ``@timer(duration)``. The duration is observed even when the block
    raises.

    Example::

        >>> from kitobs.metrics import memory
        >>> p = memory.Provider()
        >>> h = p.histogram("work_duration", help="Work.", unit="seconds")
        >>> with timer(h):
        ...     pass
        >>> len(p.observations("work_duration"))
        1
    """

    __slots__ = ("_begin", "_histogram")

    def __init__(self, histogram: Histogram) -> None:
        self._histogram = histogram
        self._begin = 0.0

    def __enter__(self) -> timer:
        self._begin = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self._histogram.observe(time.perf_counter() - self._begin)

    def __call__(self, fn: Callable[_P, _R]) -> Callable[_P, _R]:
        histogram = self._histogram

        @functools.wraps(fn)
        def timed(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            begin = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                histogram.observe(time.perf_counter() - begin)

        return timed
