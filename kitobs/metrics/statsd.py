"""statsd: metrics pushed as statsd lines over UDP, TCP or Unix sockets, in three flavours.

Flavours (``flavor``), for a counter ``jobs`` with label ``queue="fast"`` and prefix ``app``:

==========  ==================================  =============================================
flavor      line                                labels
==========  ==================================  =============================================
etsy        ``app.jobs.fast:3|c``               appended to the name in declared order
                                                (``etsy_labels="append"``) or dropped
                                                (``"drop"``); common labels are not sent
dogstatsd   ``app.jobs:3|c|#queue:fast``        DogStatsD tags, after the sample rate
telegraf    ``app.jobs,queue=fast:3|c``         InfluxDB-style tags on the name
==========  ==================================  =============================================

A label whose value is empty (never bound, e.g. ``error_type`` on success) is absent: no tag, and
no name segment in etsy. Characters a flavour cannot carry in a label value become ``_``.

What is sent, per flush (every ``flush_interval`` seconds, on `Provider.flush`, on
`Provider.close`, and at interpreter exit or SIGTERM within ``kit.exit_timeout``, docs/shutdown.md):

- counters are summed client-side and sent as one ``|c`` line per series when they changed (and
  once at zero when the series is created, so it exists from the start). With ``sample_rate``
  below 1 each ``add`` is kept with that probability and the kept sum is sent with ``|@rate``,
  which the server scales back up (real client-side sampling, unlike go-kit #778).
- gauges are sent as absolute values (``|g``) when they changed; ``add`` moves the value held
  here, so a gauge keeps its value across flushes (go-kit #578). A negative value is sent as
  ``0|g`` then ``-5|g`` in one packet, since a signed value alone is a delta to statsd.
- histograms send every observation: as a timer ``|ms`` in milliseconds when the unit is
  ``seconds`` (statsd's convention); otherwise as ``|ms`` (etsy), ``|h`` or ``|d`` (dogstatsd,
  ``dogstatsd_histogram``) or ``|h`` (telegraf). Buckets do not apply: the server aggregates.
  Sampling applies as for counters. At most ``queue_size`` observations per series wait for
  the next flush; more are dropped and counted.

Lines are packed, newline-separated, into packets of at most ``packet_size`` bytes (1432 by
default: a 1500-byte MTU less IP and UDP headers) and never split. Sockets are non-blocking and
only the flusher thread resolves the host name (again every ``resolve_interval`` seconds): a dead
server, an unreachable address or a TCP peer that never reads cannot block or raise into the
caller. Lines the sender cannot queue or write are dropped and counted in
``kitobs_telemetry_dropped_total{signal="metrics",reason=...}`` (reasons ``queue_full``,
``send_failed``, ``too_large``, ``invalid_value``, ``closed``) and in `Provider.dropped_lines`.

After ``fork()`` the child gets a fresh socket, fresh locks and its own flusher thread, and starts
from empty counters and histograms, so nothing the parent had not yet flushed is sent twice.

Example::

    >>> import io
    >>> provider = Provider(None, flavor="dogstatsd", prefix="app")  # None: no socket, see write_to
    >>> jobs = provider.counter("jobs", help="Jobs run.", labels=("queue",))
    >>> jobs.labels("fast").add(3)
    >>> out = io.BytesIO()
    >>> _ = provider.write_to(out)
    >>> [line for line in out.getvalue().decode().splitlines() if line.startswith("app.jobs")]
    ['app.jobs:3|c|#queue:fast']
"""

from __future__ import annotations

import collections
import contextlib
import math
import random
import re
import socket
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, TypeVar, cast

from kitobs import _exit, _fork
from kitobs.config import StatsdSettings, key_name
from kitobs.errors import ConfigError
from kitobs.metrics._declare import (
    LOCK_FREE,
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
from kitobs.metrics._statsd_sender import TRANSPORTS, Resolver, Sender, pack, parse_address
from kitobs.metrics.process import Collector as ProcessCollector
from kitobs.metrics.selfmetrics import TELEMETRY_DROPPED

if TYPE_CHECKING:
    from kitobs.config import Settings
    from kitobs.metrics import ASGIApp, GaugeCallback, InstrumentT, MetricSpec, WSGIApp
    from kitobs.metrics.config import BuildContext

__all__ = [
    "Provider",
    "from_settings",
    "Counter",
    "Gauge",
    "Histogram",
    "FLAVORS",
    "TRANSPORTS",
    "DROP_REASONS",
    "Writer",
]

#: FLAVORS are the line dialects, e.g. ``"dogstatsd"``.
FLAVORS: tuple[str, ...] = ("etsy", "dogstatsd", "telegraf")
#: DROP_REASONS are the ``reason`` values of dropped lines, e.g. ``"queue_full"``.
DROP_REASONS: tuple[str, ...] = (
    "queue_full",
    "send_failed",
    "too_large",
    "invalid_value",
    "closed",
)

_INF = math.inf
_PREFIX = re.compile(r"^([A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*)?$")
# Per flavour, what a label value may hold; anything else becomes "_". DogStatsD's is the datadog
# package's own rule (applied to the whole "key:value" tag), so both clients send the same bytes.
_DOG_TAG = re.compile(r"[^\w\d_\-:/\.]", re.UNICODE)
_TELEGRAF = re.compile(r"[^\w\-./]", re.ASCII)
_ETSY = re.compile(r"[^\w\-]", re.ASCII)


class Writer(Protocol):
    """Writer is where `Provider.write_to` puts lines, e.g. an ``io.BytesIO`` or a binary file."""

    def write(self, data: bytes, /) -> object:
        """write takes bytes; its result is ignored."""


def _num(value: float) -> str:
    """Format a value as statsd expects: integral values without a fraction, else repr."""
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


class _Style:
    """How one provider spells lines: flavour, prefix, label handling. Built once."""

    __slots__ = ("common", "etsy_append", "flavor", "histogram_type", "prefix")

    def __init__(
        self,
        flavor: str,
        prefix: str,
        etsy_append: bool,
        histogram_type: str,
        common: tuple[tuple[str, str], ...],
    ) -> None:
        self.flavor = flavor
        self.prefix = prefix
        self.etsy_append = etsy_append
        self.histogram_type = histogram_type
        self.common = common

    def affixes(
        self, decl: Declaration, values: tuple[str, ...], kind: str, rate: float
    ) -> tuple[str, str]:
        """The text before and after the value of one series' lines, e.g. ``"a:"``, ``"|c"``."""
        name = decl.statsd_name(self.prefix)
        pairs = [(k, v) for k, v in zip(decl.labels, values, strict=True) if v]
        rate_part = f"|@{rate!r}" if rate < 1.0 else ""
        if self.flavor == "etsy":
            if self.etsy_append:
                name += "".join("." + _ETSY.sub("_", v) for _, v in pairs)
            return f"{name}:", f"|{kind}{rate_part}"
        pairs += [(k, v) for k, v in self.common if v]
        if self.flavor == "dogstatsd":
            tags = ",".join(_DOG_TAG.sub("_", f"{k}:{v}") for k, v in pairs)
            return f"{name}:", f"|{kind}{rate_part}{'|#' + tags if tags else ''}"
        tags = "".join(f",{k}={_TELEGRAF.sub('_', v)}" for k, v in pairs)
        return f"{name}{tags}:", f"|{kind}{rate_part}"

    def histogram_kind(self, decl: Declaration) -> tuple[str, float]:
        """The line type and value scale of a histogram, e.g. ``("ms", 1000.0)`` for seconds."""
        if decl.unit == "seconds":
            return "ms", 1000.0
        if self.flavor == "etsy":
            return "ms", 1.0
        if self.flavor == "dogstatsd":
            return self.histogram_type, 1.0
        return "h", 1.0


# ---- children: one per label-value tuple. They never raise: bad values are counted as dropped.
#
# Lock-free where `LOCK_FREE` holds (CPython 3.10+ with the GIL): the recording threads are the
# only writers of ``_value`` and ``+=`` on it cannot interleave there (see `LOCK_FREE`); the
# flusher only reads it and remembers what it sent (``_sent``), so it never races a writer.
# Histograms append to a deque and the flusher pops from the other end: both atomic.
# Elsewhere the `_Locked*` variants take a per-child lock.


class Counter(Bound):
    """Counter is one statsd counter series, e.g. ``provider.counter("jobs", ...).labels("fast")``.

    ``add`` sums client-side; each flush sends the change since the previous one. Implements
    `kitobs.metrics.Counter`.
    """

    __slots__ = (
        "_family",
        "_head",
        "_invalid",
        "_new",
        "_rand",
        "_rate",
        "_sent",
        "_tail",
        "_value",
    )

    def __init__(
        self,
        family: Family[Counter],
        head: str,
        tail: str,
        rate: float,
        rand: Callable[[], float],
        invalid: _Tally,
    ) -> None:
        self._family = family
        self._head = head
        self._tail = tail
        self._rate = rate
        self._rand = rand
        self._invalid = invalid
        self._value = 0.0
        self._sent = 0.0
        self._new = True

    def add(self, delta: float = 1.0) -> None:
        """add increases the counter by *delta*, e.g. ``add(3)``; a negative one is dropped."""
        try:
            if 0.0 <= delta < _INF:
                if self._rate < 1.0 and self._rand() >= self._rate:
                    return
                self._value += delta
                return
        except Exception:  # a non-number falls through to be counted
            pass
        self._invalid.add(1)

    def _collect(self, out: list[str]) -> None:
        value = self._value
        delta = value - self._sent
        if delta or self._new:
            self._new = False
            self._sent = value
            if math.isfinite(delta):
                out.append(self._head + _num(delta) + self._tail)
            else:
                self._invalid.add(1)

    def _after_fork(self) -> None:
        self._sent = self._value  # the parent's unflushed part is the parent's to send


class _LockedCounter(Counter):
    __slots__ = ("_lock",)

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self._lock = threading.Lock()

    def add(self, delta: float = 1.0) -> None:
        try:
            if 0.0 <= delta < _INF:
                if self._rate < 1.0 and self._rand() >= self._rate:
                    return
                with self._lock:
                    self._value += delta
                return
        except Exception:  # likewise
            pass
        self._invalid.add(1)

    def _collect(self, out: list[str]) -> None:
        with self._lock:
            super()._collect(out)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        super()._after_fork()


class Gauge(Bound):
    """Gauge is one statsd gauge series, e.g. ``provider.gauge("queue_depth", ...)``.

    The value is held here and sent as an absolute value when it changed, so ``add`` after a
    flush continues from the last value. Implements `kitobs.metrics.Gauge`.
    """

    __slots__ = ("_dirty", "_family", "_head", "_invalid", "_tail", "_value")

    def __init__(self, family: Family[Gauge], head: str, tail: str, invalid: _Tally) -> None:
        self._family = family
        self._head = head
        self._tail = tail
        self._invalid = invalid
        self._value = 0.0
        self._dirty = False

    def set(self, value: float) -> None:
        """set replaces the value, e.g. ``set(42)``."""
        try:
            if math.isfinite(value):
                self._value = float(value)
                self._dirty = True
                return
        except Exception:  # a non-number falls through to be counted
            pass
        self._invalid.add(1)

    def add(self, delta: float = 1.0) -> None:
        """add changes the value by *delta*, which may be negative, e.g. ``add(-1)``."""
        try:
            if math.isfinite(delta):
                self._value += delta
                self._dirty = True
                return
        except Exception:  # likewise
            pass
        self._invalid.add(1)

    def _collect(self, out: list[str]) -> None:
        if self._dirty:
            self._dirty = False  # cleared before reading: a racing set() is sent next time
            out.append(self._line(self._value))

    def _line(self, value: float) -> str:
        if value < 0:
            # A signed value is a delta to statsd: reset to 0 first, in the same packet.
            # "\r" keeps the two lines in one packet; `pack` sends it as a newline.
            return f"{self._head}0{self._tail}\r{self._head}{_num(value)}{self._tail}"
        return self._head + _num(value) + self._tail

    def _after_fork(self) -> None:
        self._dirty = False


class _LockedGauge(Gauge):
    __slots__ = ("_lock",)

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self._lock = threading.Lock()

    def set(self, value: float) -> None:
        with self._lock:
            super().set(value)

    def add(self, delta: float = 1.0) -> None:
        with self._lock:
            super().add(delta)

    def _collect(self, out: list[str]) -> None:
        with self._lock:
            super()._collect(out)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        super()._after_fork()


class Histogram(Bound):
    """Histogram is one statsd timer/histogram series, e.g. request durations in seconds.

    Every observation is sent (``|ms`` in milliseconds for seconds); at most ``queue_size`` wait
    for a flush, more are dropped and counted. Implements `kitobs.metrics.Histogram`.
    """

    __slots__ = (
        "_cap",
        "_family",
        "_full",
        "_head",
        "_invalid",
        "_rand",
        "_rate",
        "_scale",
        "_tail",
        "_values",
        "_wake",
    )

    def __init__(
        self,
        family: Family[Histogram],
        head: str,
        tail: str,
        scale: float,
        rate: float,
        rand: Callable[[], float],
        cap: int,
        invalid: _Tally,
        full: _Tally,
        wake: threading.Event,
    ) -> None:
        self._family = family
        self._head = head
        self._tail = tail
        self._scale = scale
        self._rate = rate
        self._rand = rand
        self._cap = cap
        self._invalid = invalid
        self._full = full
        self._wake = wake
        self._values: collections.deque[float] = collections.deque()

    def observe(self, value: float) -> None:
        """observe records one value, e.g. ``observe(0.031)`` seconds (sent as 31 ms)."""
        try:
            if math.isfinite(value):
                if self._rate < 1.0 and self._rand() >= self._rate:
                    return
                values = self._values
                n = len(values)
                if n < self._cap:
                    values.append(value)
                    if n == self._cap >> 1:
                        self._wake.set()  # half full: ask the flusher to come early
                else:
                    self._full.add(1)
                return
        except Exception:  # a non-number falls through to be counted
            pass
        self._invalid.add(1)

    def _collect(self, out: list[str]) -> None:
        values = self._values
        head, tail, scale = self._head, self._tail, self._scale
        # popleft until empty: an observation appended meanwhile is taken now or next time.
        for _ in range(len(values)):
            out.append(head + _num(values.popleft() * scale) + tail)

    def _after_fork(self) -> None:
        self._values.clear()


class _LockedHistogram(Histogram):
    __slots__ = ("_lock",)

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        with self._lock:
            super().observe(value)

    def _collect(self, out: list[str]) -> None:
        with self._lock:
            super()._collect(out)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        super()._after_fork()


class _Tally:
    """A counter of dropped lines for one reason, updated from any thread without a lock.

    ``add`` appends to a deque (atomic); the flusher pops, so nothing is lost or counted twice.
    """

    __slots__ = ("_items", "total")

    def __init__(self) -> None:
        self._items: collections.deque[int] = collections.deque()
        self.total = 0

    def add(self, n: int) -> None:
        self._items.append(n)

    def take(self) -> int:
        items = self._items
        taken = 0
        for _ in range(len(items)):
            taken += items.popleft()
        self.total += taken
        return taken

    def peek(self) -> int:
        return self.total + sum(self._items)


_F = TypeVar("_F", CounterFamily[Counter], GaugeFamily[Gauge], HistogramFamily[Histogram])


class Provider:
    """Provider declares metrics sent to a statsd server, e.g. ``Provider("127.0.0.1:8125")``.

    Args:
        address: ``host:port`` for udp and tcp, a socket path for unix (stream) and unixgram
            (datagram); ``None`` keeps the lines here for `write_to` only (no socket, no thread).
        transport: ``udp``, ``tcp``, ``unix`` or ``unixgram``.
        flavor: ``etsy``, ``dogstatsd`` or ``telegraf`` (see the module docs).
        prefix: dotted prefix of every name, e.g. ``shop``.
        etsy_labels: with etsy, ``append`` label values to the name or ``drop`` them.
        dogstatsd_histogram: line type of non-duration histograms with dogstatsd: ``h`` or ``d``.
        flush_interval: seconds between background flushes.
        packet_size: largest datagram or stream write in bytes.
        sample_rate: default sampling rate of counters and histograms (per metric with the
            ``sample_rate`` argument of `counter` and `histogram`).
        queue_size: lines held for the socket, and observations per histogram series between
            flushes, before dropping.
        resolve_interval: seconds between DNS look-ups of the host; 0 resolves once.
        common_labels: labels added to every series as tags (not sent with etsy).
        max_label_sets: distinct label sets per metric before the cardinality guard folds.
        random: source of ``[0, 1)`` numbers for sampling, e.g. ``random.Random(7).random``.
        logger: where the cardinality guard warns and send errors are reported.
        close_timeout: longest `close` waits for a stream socket to take the last lines.
        process_metrics: send `kitobs.metrics.process` figures at each flush (counters as
            the change since the last flush, the rest as gauges).
        resolver: how the host name is looked up, like `socket.getaddrinfo` (the default);
            e.g. a service-discovery lookup. Called from the flusher thread only.
        lock_free: update children without locks; the default, `LOCK_FREE`, is True only where
            the interpreter makes that safe. Tests pass False to exercise the locked variant.

    Raises:
        ConfigError: a bad transport, address, flavour, prefix, size or rate.
    """

    __slots__ = (
        "__weakref__",
        "_address",
        "_at_exit",
        "_close_timeout",
        "_closed",
        "_core",
        "_dropped",
        "_families",
        "_flush_interval",
        "_flush_lock",
        "_lock_free",
        "_logger",
        "_own_random",
        "_packet_size",
        "_process",
        "_queue_size",
        "_quiet_until",
        "_rand",
        "_resolve_interval",
        "_resolver",
        "_sample_rate",
        "_sender",
        "_style",
        "_tallies",
        "_thread",
        "_transport",
        "_wake",
    )

    def __init__(
        self,
        address: str | None = "127.0.0.1:8125",
        *,
        transport: str = "udp",
        flavor: str = "etsy",
        prefix: str = "",
        etsy_labels: str = "append",
        dogstatsd_histogram: str = "h",
        flush_interval: float = 1.0,
        packet_size: int = 1432,
        sample_rate: float = 1.0,
        queue_size: int = 10000,
        resolve_interval: float = 60.0,
        common_labels: Mapping[str, str] | None = None,
        max_label_sets: int = 2000,
        random: Callable[[], float] | None = None,
        logger: Logger | None = None,
        close_timeout: float = 1.0,
        process_metrics: bool = False,
        resolver: Resolver = socket.getaddrinfo,
        lock_free: bool = LOCK_FREE,
    ) -> None:
        _choice("flavor", flavor, FLAVORS)
        _choice("etsy_labels", etsy_labels, ("append", "drop"))
        _choice("dogstatsd_histogram", dogstatsd_histogram, ("h", "d"))
        if not _PREFIX.match(prefix):
            raise ConfigError(
                "statsd prefix is not dotted words",
                key=key_name(StatsdSettings, "prefix"),
                value=prefix,
                allowed="letters, digits, _ and - separated by single dots, e.g. shop.api",
            )
        if not 64 <= packet_size <= 65507:
            raise ConfigError(
                "packet size out of range",
                key=key_name(StatsdSettings, "packet_size"),
                value=packet_size,
                allowed="64 to 65507 bytes",
            )
        _rate(key_name(StatsdSettings, "sample_rate"), sample_rate)
        for key, number, low in (
            ("flush_interval", flush_interval, 0.001),
            ("queue_size", queue_size, 1),
            ("resolve_interval", resolve_interval, 0.0),
            ("close_timeout", close_timeout, 0.0),
        ):
            if not number >= low:
                raise ConfigError(
                    f"{key} is too small",
                    key=key_name(StatsdSettings, key),
                    value=number,
                    allowed=f">= {low}",
                )
        if address is not None:
            parse_address(transport, address)  # raises ConfigError now, not at the first send
        self._core = Core(common_labels=common_labels, max_label_sets=max_label_sets, logger=logger)
        self._style = _Style(
            flavor, prefix, etsy_labels == "append", dogstatsd_histogram, self._core.common
        )
        self._address = address
        self._transport = transport
        self._flush_interval = float(flush_interval)
        self._packet_size = packet_size
        self._sample_rate = float(sample_rate)
        self._queue_size = queue_size
        self._resolve_interval = float(resolve_interval)
        self._resolver = resolver
        self._close_timeout = float(close_timeout)
        self._logger = logger
        self._quiet_until = 0.0
        self._lock_free = lock_free
        self._own_random = random is None
        self._rand: Callable[[], float] = random or _new_random()
        self._families: list[Family[Counter] | Family[Gauge] | Family[Histogram]] = []
        self._tallies = {reason: _Tally() for reason in DROP_REASONS}
        self._wake = threading.Event()
        self._flush_lock = threading.Lock()
        self._closed = False
        self._sender: Sender | None = None
        self._thread: threading.Thread | None = None
        self._at_exit = False
        # Self-metrics, present from the start (at zero).
        dropped = self._core.declare_self_metrics(self.declare)
        self._dropped = {r: dropped.labels("metrics", r) for r in DROP_REASONS}
        self._process: tuple[ProcessCollector, dict[str, Family[Counter] | Family[Gauge]]] | None
        self._process = None
        if process_metrics:
            collector = ProcessCollector()
            families: dict[str, Family[Counter] | Family[Gauge]] = {}
            for decl in collector.declarations():
                made = self._counter(decl, 1.0) if decl.kind == "counter" else self._gauge(decl)
                families[decl.name] = made
            self._process = (collector, families)
        if address is not None:
            self._start()

    @classmethod
    def from_settings(cls, settings: Settings, *, logger: Logger | None = None) -> Provider:
        """from_settings builds the provider ``[metrics.statsd]`` describes, e.g. ``load()``."""
        s = settings.metrics.statsd
        return cls(
            s.address,
            transport=s.transport,
            flavor=s.flavor,
            prefix=s.prefix,
            etsy_labels=s.etsy_labels,
            dogstatsd_histogram=s.dogstatsd_histogram,
            flush_interval=s.flush_interval,
            packet_size=s.packet_size,
            sample_rate=s.sample_rate,
            queue_size=s.queue_size,
            resolve_interval=s.resolve_interval,
            common_labels=settings.service.labels,
            max_label_sets=settings.metrics.max_label_sets,
            logger=logger,
            process_metrics=settings.metrics.process_metrics,
        )

    # ---- declaring

    def counter(
        self,
        name: str,
        *,
        help: str,
        unit: str = "",
        labels: Sequence[str] = (),
        sample_rate: float | None = None,
    ) -> CounterFamily[Counter]:
        """counter declares a counter, e.g. ``counter("jobs", help="Jobs run.")``.

        *sample_rate* overrides the provider's for this metric, e.g. ``0.1``.
        """
        decl = declaration(name, "counter", help=help, unit=unit, labels=labels)
        return self._counter(decl, sample_rate)

    def gauge(
        self,
        name: str,
        *,
        help: str,
        unit: str = "",
        labels: Sequence[str] = (),
        callback: GaugeCallback | None = None,
    ) -> GaugeFamily[Gauge]:
        """gauge declares a gauge, e.g. ``gauge("queue_depth", help="…", callback=q.qsize)``.

        A *callback* is read at each flush and its values sent as the gauge's.
        """
        decl = declaration(name, "gauge", help=help, unit=unit, labels=labels)
        family = self._gauge(decl)
        if callback is not None:
            family.callback = callback
        return family

    def histogram(
        self,
        name: str,
        *,
        help: str,
        unit: str = "",
        labels: Sequence[str] = (),
        buckets: Sequence[float] | None = None,
        sample_rate: float | None = None,
    ) -> HistogramFamily[Histogram]:
        """histogram declares a histogram, e.g. ``histogram("job_duration", unit="seconds")``.

        Buckets are validated but not used: statsd servers aggregate observations themselves.
        """
        decl = declaration(name, "histogram", help=help, unit=unit, labels=labels, buckets=buckets)
        return self._histogram(decl, sample_rate)

    def declare(self, spec: MetricSpec[InstrumentT]) -> InstrumentT:
        """declare declares a contract metric, e.g. ``declare(contract.ENDPOINT_DURATION)``."""
        decl = from_spec(spec)
        if decl.kind == "counter":
            return cast("InstrumentT", self._counter(decl, None))
        if decl.kind == "gauge":
            return cast("InstrumentT", self._gauge(decl))
        return cast("InstrumentT", self._histogram(decl, None))

    def _counter(self, decl: Declaration, sample_rate: float | None) -> CounterFamily[Counter]:
        rate = self._rate_of(decl, sample_rate)
        cls = Counter if self._lock_free else _LockedCounter
        invalid = self._tallies["invalid_value"]

        def child(family: Family[Counter], values: tuple[str, ...]) -> Counter:
            head, tail = self._style.affixes(decl, values, "c", rate)
            return cls(family, head, tail, rate, self._rand, invalid)

        return self._core.declare(decl, lambda d: self._keep(CounterFamily(d, self._core, child)))

    def _gauge(self, decl: Declaration) -> GaugeFamily[Gauge]:
        cls = Gauge if self._lock_free else _LockedGauge
        invalid = self._tallies["invalid_value"]

        def child(family: Family[Gauge], values: tuple[str, ...]) -> Gauge:
            head, tail = self._style.affixes(decl, values, "g", 1.0)
            return cls(family, head, tail, invalid)

        return self._core.declare(decl, lambda d: self._keep(GaugeFamily(d, self._core, child)))

    def _histogram(
        self, decl: Declaration, sample_rate: float | None
    ) -> HistogramFamily[Histogram]:
        rate = self._rate_of(decl, sample_rate)
        kind, scale = self._style.histogram_kind(decl)
        cls = Histogram if self._lock_free else _LockedHistogram
        invalid, full = self._tallies["invalid_value"], self._tallies["queue_full"]

        def child(family: Family[Histogram], values: tuple[str, ...]) -> Histogram:
            head, tail = self._style.affixes(decl, values, kind, rate)
            return cls(
                family,
                head,
                tail,
                scale,
                rate,
                self._rand,
                self._queue_size,
                invalid,
                full,
                self._wake,
            )

        return self._core.declare(decl, lambda d: self._keep(HistogramFamily(d, self._core, child)))

    def _keep(self, family: _F) -> _F:
        self._families.append(family)
        if not family.decl.labels:
            family.default()  # a label-less series exists from the start
        return family

    def _rate_of(self, decl: Declaration, sample_rate: float | None) -> float:
        if sample_rate is None:
            return self._sample_rate
        _rate(f"metric {decl.name!r}: sample_rate", sample_rate)
        return float(sample_rate)

    # ---- self-metrics

    def dropped(self, signal: str, reason: str) -> Counter:
        """dropped gives the bound self-metric child, e.g. ``dropped("spans", "queue_full")``."""
        family = cast("CounterFamily[Counter]", self.declare(TELEMETRY_DROPPED))
        return family.labels(signal, reason)

    def wsgi_routes(self) -> dict[str, WSGIApp]:
        """wsgi_routes is empty: statsd is pushed, nothing is served over HTTP."""
        return {}

    def asgi_routes(self) -> dict[str, ASGIApp]:
        """asgi_routes is empty: statsd is pushed, nothing is served over HTTP."""
        return {}

    def dropped_lines(self) -> dict[str, int]:
        """dropped_lines gives this provider's dropped lines so far by reason, e.g. queue_full."""
        return {reason: tally.peek() for reason, tally in self._tallies.items()}

    # ---- collecting and sending

    def _collect(self) -> list[str]:
        lines: list[str] = []
        # Drops first, so those counted since the last flush go out with this one.
        for reason, tally in self._tallies.items():
            taken = tally.take()
            if taken:
                self._dropped[reason].add(taken)
        if self._process is not None:
            self._read_process(*self._process)
        for family in list(self._families):
            callback = family.callback
            if callback is not None:
                self._read_callback(cast("Family[Gauge]", family), callback, lines)
                continue
            children = cast("list[Counter | Gauge | Histogram]", list(family.series.values()))
            for child in children:
                child._collect(lines)
        return lines

    def _read_callback(
        self, family: Family[Gauge], callback: GaugeCallback, lines: list[str]
    ) -> None:
        try:
            got = callback()
            items: list[tuple[tuple[str, ...], float]]
            if isinstance(got, Mapping):
                items = [(tuple(k), float(v)) for k, v in got.items()]
            else:
                items = [(("",) * family.n, float(got))]
            for values, value in items:
                child = family.labels(*values)
                if math.isfinite(value):
                    lines.append(child._line(value))
                else:
                    self._tallies["invalid_value"].add(1)
        except Exception as err:  # a broken callback must not stop the flush
            self._tallies["invalid_value"].add(1)
            self._report(err)

    def _read_process(
        self,
        collector: ProcessCollector,
        families: dict[str, Family[Counter] | Family[Gauge]],
    ) -> None:
        try:
            for decl, samples in collector.collect():
                family = families[decl.name]
                for values, value in samples:
                    child = family.labels(*values)
                    if isinstance(child, Counter):
                        child._value = value  # a running total: the flush sends the change
                    else:
                        child.set(value)
        except Exception as err:  # a figure that cannot be read must not stop the flush
            self._report(err)

    def write_to(self, out: Writer) -> int:
        """write_to writes every pending line to *out*, newline-terminated, and returns the bytes.

        This is the flush without the socket (go-kit's ``WriteTo``), e.g. to read values back in
        tests: ``provider.write_to(io.BytesIO())``. Lines written here are not sent.
        """
        with self._flush_lock:
            lines = self._collect()
        data = "".join(line + "\n" for line in lines).replace("\r", "\n").encode()
        out.write(data)
        return len(data)

    def flush(self) -> None:
        """flush packs pending lines into packets and writes what the socket takes now.

        It never waits on the server; what is left is written by the next flush. Without an
        address it does nothing (use `write_to`).
        """
        if self._address is None:
            return
        self._flush(resolve=False)

    def _flush(self, *, resolve: bool) -> None:
        sender = self._sender
        # DNS outside the lock: only the flusher waits for a slow resolver.
        found = sender.lookup() if resolve and sender is not None else None
        with self._flush_lock:
            if sender is None or sender is not self._sender:
                return
            if found is not None:
                sender.use(found)
            lines = self._collect()
            packets, too_large = pack(lines, self._packet_size, stream=sender.stream)
            if too_large:
                self._tallies["too_large"].add(too_large)
            sender.enqueue(packets)
            sender.drain()
            for reason, n in sender.take_dropped().items():
                self._tallies[reason].add(n)

    def _report(self, err: Exception) -> None:
        logger = self._logger
        now = time.monotonic()
        # At most one warning a minute: a dead server fails every flush, and drops are counted.
        if logger is not None and now >= self._quiet_until:
            self._quiet_until = now + 60.0
            with contextlib.suppress(Exception):
                logger.log("level", "warn", "msg", "statsd send failed", "err", repr(err))

    def _start(self) -> None:
        assert self._address is not None
        self._sender = Sender(
            self._transport,
            self._address,
            queue_size=self._queue_size,
            resolve_interval=self._resolve_interval,
            retry_interval=self._flush_interval,
            on_error=self._report,
            resolver=self._resolver,
        )
        self._thread = threading.Thread(
            target=_run, args=(weakref.ref(self), self._wake), name="kitobs-statsd", daemon=True
        )
        self._thread.start()
        if not self._at_exit:
            self._at_exit = True
            _exit.at_exit(self)
            _fork.in_child(self)

    def close(self) -> None:
        """close flushes, waits up to ``close_timeout`` for a stream to take it, and closes.

        It is idempotent; lines still unsent afterwards are counted as dropped (``closed``).
        """
        self._close(time.monotonic() + self._close_timeout)

    def _close(self, deadline: float) -> int:
        # Returns the lines dropped because they were still unsent at *deadline*.
        if self._closed:
            return 0
        self._closed = True
        thread = self._thread
        if thread is not None:
            self._wake.set()
            thread.join(max(0.0, deadline - time.monotonic()))
        sender = self._sender
        if sender is None:
            return 0
        self._flush(resolve=False)
        with self._flush_lock:
            while sender.pending_lines and (left := deadline - time.monotonic()) > 0:
                if not sender.wait_writable(min(left, 0.05)):
                    break  # no connection to wait for: what is left is dropped
                sender.drain()
            sender.close()
            dropped = sender.take_dropped()
            for reason, n in dropped.items():
                self._tallies[reason].add(n)
        return dropped.get("closed", 0)

    def _flush_at_exit(self, deadline: float) -> str:
        # The exit budget and close_timeout both bound the wait, whichever ends first.
        unsent = self._close(min(deadline, time.monotonic() + self._close_timeout))
        return f"{unsent} statsd line{'s' if unsent != 1 else ''}" if unsent else ""

    # Called from the flusher thread and fork hooks through weak references.

    def _loop_once(self) -> bool:
        if self._closed:
            return False
        self._wake.clear()
        try:
            self._flush(resolve=True)
        except Exception as err:  # the flusher must survive anything
            self._report(err)
        return not self._closed

    def _resolve_first(self) -> None:
        sender = self._sender
        found = sender.lookup() if sender is not None else None
        if sender is not None and found is not None:
            with self._flush_lock:
                if sender is self._sender:
                    sender.use(found)

    def _after_fork_in_child(self) -> None:
        # Only the forking thread survives: any lock another thread held stays held for ever.
        self._flush_lock = threading.Lock()
        self._core._lock = threading.Lock()
        self._wake = threading.Event()
        if self._own_random:
            self._rand = _new_random()
        for tally in self._tallies.values():
            tally._items.clear()
        for family in self._families:
            family._lock = threading.Lock()  # a fork may have left it held
            for child in family.series.values():
                child._after_fork()
                if isinstance(child, Histogram):
                    child._wake = self._wake
                    child._rand = self._rand
                elif isinstance(child, Counter):
                    child._rand = self._rand
        old = self._sender
        if old is not None and old._sock is not None:
            old._sock.close()  # the child's copy of the descriptor; the parent keeps its own
        self._sender = None
        self._thread = None
        if not self._closed and self._address is not None:
            self._start()


def _run(ref: weakref.ref[Provider], wake: threading.Event) -> None:
    provider = ref()
    if provider is not None:
        provider._resolve_first()  # a host name is usable before the first interval ends
    del provider
    while True:
        provider = ref()
        if provider is None:
            return
        interval = provider._flush_interval
        del provider  # hold no strong reference while waiting, so the provider can be collected
        wake.wait(interval)
        provider = ref()
        if provider is None or provider._wake is not wake or not provider._loop_once():
            return
        del provider


def _new_random() -> Callable[[], float]:
    return random.Random().random


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(
            f"unknown statsd {key}", key=key_name(StatsdSettings, key), value=value, allowed=allowed
        )


def _rate(key: str, rate: float) -> None:
    if not (isinstance(rate, int | float) and 0.0 < rate <= 1.0):
        raise ConfigError("sample rate out of range", key=key, value=rate, allowed="0 < rate <= 1")


def from_settings(settings: Settings, context: BuildContext) -> Provider:
    """from_settings builds the provider of ``[metrics.statsd]``, like `Provider.from_settings`."""
    return Provider.from_settings(settings, logger=context.logger)
