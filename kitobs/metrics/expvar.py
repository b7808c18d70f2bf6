"""expvar: a JSON page of every metric, in the spirit of Go's ``/debug/vars``.

The page holds the command line (arguments that look like credentials redacted), process facts,
and every metric under its Prometheus name with its series' labels nested. Histograms report
count, sum and the configured quantiles, computed from a log-bucket sketch with 0.5% relative
error; the figures are cumulative since the process started (not windowed). The page is strict
JSON: a non-finite gauge value (from a callback) is the string ``"NaN"``, ``"+Inf"`` or ``"-Inf"``.

With ``directory`` (set from configuration under gunicorn and ``uvicorn --workers``), series are
kept in the files of `kitobs.metrics.multiprocess` and the page shows every worker's totals:
counters summed, gauges summed over live workers, histograms' count, sum and sketch buckets
summed, so their quantiles are those of one sketch of every observation.

Example::

    >>> provider = Provider()
    >>> jobs = provider.counter("jobs", help="Jobs run.", labels=("queue",))
    >>> jobs.labels("fast").add(2)
    >>> provider.snapshot()["metrics"]["jobs_total"]["series"]
    [{'labels': {'queue': 'fast'}, 'value': 2.0}]
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from kitobs.config import DEFAULT_REDACT_KEYS, ExpvarSettings, key_name
from kitobs.metrics import _sketch, multiprocess
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
    check_buckets,
)
from kitobs.metrics._exposition import callback_samples
from kitobs.metrics._http import Pages, Server, serve
from kitobs.metrics._store import (
    CounterValue,
    GaugeValue,
    LockedCounterValue,
    LockedGaugeValue,
)
from kitobs.metrics.process import Collector as ProcessCollector
from kitobs.redact import Rule

if TYPE_CHECKING:
    from kitobs.config import Settings
    from kitobs.metrics.config import BuildContext

__all__ = [
    "Provider",
    "from_settings",
    "Counter",
    "Gauge",
    "Histogram",
    "Sketch",
    "redact_cmdline",
    "REDACTED",
]

#: REDACTED replaces a credential-looking value on the command line.
REDACTED = "[REDACTED]"
_LOG_GAMMA = _sketch.LOG_GAMMA  # a module global: one look-up less per observe
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]*@")


def redact_cmdline(argv: Sequence[str], keys: Iterable[str] = DEFAULT_REDACT_KEYS) -> list[str]:
    """redact_cmdline hides credential-like arguments, e.g. ``--token=abc`` → ``--token=…``.

    Covers ``--key=value``, ``--key value`` (the next argument), ``key=value`` and passwords in
    URLs (``scheme://user:secret@host``). Which names are secret is `kitobs.redact`'s rule, the
    one log lines and span attributes follow (``API_KEY``, ``--db-password``, ``accessToken``).
    """
    secret = Rule(keys)
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        arg = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", arg)
        name, sep, _value = arg.partition("=")
        if sep and secret(name.lstrip("-")):
            out.append(f"{name}={REDACTED}")
        elif arg.startswith("-") and secret(arg.lstrip("-")):
            out.append(arg)
            hide_next = True
        else:
            out.append(arg)
    return out


class Sketch(Bound):
    """Sketch is a histogram child keeping log-spaced buckets, e.g. for p99 within 0.5%.

    Values ``v > 0`` land in bucket ``ceil(log(v) / log(gamma))``; zero and negative values are
    kept apart (negatives mirrored). Count and sum are exact.
    """

    __slots__ = ("_family", "_lock", "count", "neg", "pos", "sum", "values", "zero")

    def __init__(self, family: Family[Sketch], values: tuple[str, ...]) -> None:
        self._family = family
        self.values = values
        self.pos: dict[int, int] = {}
        self.neg: dict[int, int] = {}
        self.zero = 0
        self.count = 0
        self.sum = 0.0
        # The dict update below is a read-modify-write across calls (get, then store), so it is
        # not safe lock-free even with the GIL: a lock is always taken.
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        """observe adds *value* to its bucket; NaN and infinities are dropped and counted."""
        try:
            if value - value == 0.0:
                value = float(value)
                self._add(value)
                return
        except Exception:  # not a number: dropped below, never raised
            pass
        self._family.reject(value)

    def _add(self, value: float) -> None:
        with self._lock:
            self.count += 1
            self.sum += value
            if value > 0.0:
                i = math.ceil(math.log(value) / _LOG_GAMMA)
                self.pos[i] = self.pos.get(i, 0) + 1
            elif value < 0.0:
                i = math.ceil(math.log(-value) / _LOG_GAMMA)
                self.neg[i] = self.neg.get(i, 0) + 1
            else:
                self.zero += 1

    def quantile(self, q: float) -> float:
        """quantile estimates the *q* quantile (0..1), e.g. ``quantile(0.99)``; NaN if empty."""
        with self._lock:
            return _sketch.quantile(self.neg, self.zero, self.pos, self.count, q)


#: Counter is an expvar counter.
Counter = CounterFamily[CounterValue]
#: Gauge is an expvar gauge.
Gauge = GaugeFamily[GaugeValue]
#: Histogram is an expvar histogram, of `Sketch` children.
Histogram = HistogramFamily[Sketch]


class Provider(Pages, Declaring):
    """Provider keeps metrics for a JSON page, e.g. ``expvar.Provider(quantiles=(0.5, 0.99))``.

    A gauge's callback is read when the page is rendered; histogram buckets are validated, but
    the page reports count, sum and quantiles.

    Args:
        quantiles: the quantiles reported for histograms.
        common_labels: labels added to every series.
        max_label_sets: distinct label sets per metric before folding.
        logger: where the cardinality guard warns.
        process_metrics: add process and runtime metrics to the page.
        listen: ``host:port`` of a standalone server; empty serves nothing.
        allow_public_listen: let *listen* name every interface (``0.0.0.0``, ``[::]``...),
            which is refused otherwise.
        path: the page's path, ``/debug/vars`` by default.
        argv: the command line shown (``sys.argv`` by default), redacted.
        directory: a directory the worker processes of one server share (gunicorn, ``uvicorn
            --workers``); the page then shows the totals of every worker, exited ones
            included (see `kitobs.metrics.multiprocess`). Empty: this process only.
    """

    def __init__(
        self,
        *,
        quantiles: Sequence[float] = (0.5, 0.9, 0.95, 0.99),
        common_labels: Mapping[str, str] | None = None,
        max_label_sets: int = 2000,
        logger: Logger | None = None,
        process_metrics: bool = False,
        listen: str = "",
        allow_public_listen: bool = False,
        path: str = "/debug/vars",
        argv: Sequence[str] | None = None,
        directory: str | os.PathLike[str] = "",
    ) -> None:
        for q in quantiles:
            if not 0.0 <= q <= 1.0:
                from kitobs.errors import ConfigError

                raise ConfigError(
                    "a quantile is out of range",
                    key=key_name(ExpvarSettings, "quantiles"),
                    value=q,
                    allowed="0..1",
                )
        self.quantiles = tuple(quantiles)
        self.path = path
        # Several workers: series are written through to this process's file in *directory*, and
        # the page is built from the totals of every file (the multi-process Prometheus store).
        self._shared: multiprocess.Provider | None = None
        if directory:
            self._shared = multiprocess.Provider(
                directory,
                common_labels=common_labels,
                max_label_sets=max_label_sets,
                logger=logger,
                sketch=True,
            )
            self._core = self._shared._core
        else:
            self._core = Core(
                common_labels=common_labels, max_label_sets=max_label_sets, logger=logger
            )
        self._parsed: dict[str, tuple[Any, ...]] = {}  # a shared key, json-decoded once
        self._counter_cls = CounterValue if LOCK_FREE else LockedCounterValue
        self._gauge_cls = GaugeValue if LOCK_FREE else LockedGaugeValue
        self._process = ProcessCollector() if process_metrics else None
        self._argv = redact_cmdline(list(sys.argv if argv is None else argv))
        self._started = time.time()
        self._dropped_family = self._core.declare_self_metrics(self.declare)
        self._server: Server | None = None
        if listen:
            self._server = serve(
                self.wsgi_routes(),
                listen,
                key=key_name(ExpvarSettings, "listen"),
                allow_public=allow_public_listen,
            )

    def _make(
        self, decl: Declaration
    ) -> CounterFamily[Any] | GaugeFamily[Any] | HistogramFamily[Any]:
        if self._shared is not None:
            if decl.kind == "histogram":
                check_buckets(decl.name, decl.buckets or ())
            return self._shared._make(decl)

        def make(d: Declaration) -> Counter | Gauge | Histogram:
            fam: Counter | Gauge | Histogram
            if d.kind == "counter":
                cc = self._counter_cls
                fam = CounterFamily(d, self._core, lambda f, v: cc(f, v, ""))
            elif d.kind == "gauge":
                gc = self._gauge_cls
                fam = GaugeFamily(d, self._core, lambda f, v: gc(f, v, ""))
            else:
                check_buckets(d.name, d.buckets or ())
                fam = HistogramFamily(d, self._core, Sketch)
            if not d.labels:
                fam.default()
            return fam

        return self._core.declare(decl, make)

    # --- the page -----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """snapshot builds the page as a dict: ``cmdline``, ``process`` and ``metrics``."""
        core = self._core
        metrics: dict[str, Any] = {}
        if self._shared is not None:
            metrics = self._shared_metrics(self._shared)
        else:
            for decl, fam in core.metrics():
                if isinstance(fam, Family):
                    metrics[decl.prometheus_name] = self._metric(decl, fam)
        if self._process is not None:
            for decl, samples in self._process.collect():
                metrics[decl.prometheus_name] = {
                    "type": decl.kind,
                    "help": decl.help,
                    "series": [
                        {"labels": self._labels(decl, values), "value": _number(value)}
                        for values, value in samples
                    ],
                }
        return {
            "cmdline": self._argv,
            "process": {
                "pid": os.getpid(),
                "ppid": os.getppid(),
                "hostname": socket.gethostname(),
                "python": sys.version.split()[0],
                "implementation": sys.implementation.name,
                "start_time_seconds": self._started,
                "uptime_seconds": time.time() - self._started,
                "threads": threading.active_count(),
            },
            "metrics": metrics,
        }

    def _labels(self, decl: Declaration, values: tuple[str, ...]) -> dict[str, str]:
        core = self._core
        pairs = zip(core.common_names + decl.labels, core.common_values + values, strict=True)
        return {k: v for k, v in pairs if v != ""}

    def _metric(self, decl: Declaration, fam: Family[object]) -> dict[str, Any]:
        out: dict[str, Any] = {"type": decl.kind, "help": decl.help}
        if decl.unit:
            out["unit"] = decl.unit
        series: list[dict[str, Any]] = []
        if fam.callback is not None:
            for values, value in callback_samples(fam):
                series.append({"labels": self._labels(decl, values), "value": _number(value)})
        else:
            for values, child in tuple(fam.series.items()):
                entry: dict[str, Any] = {"labels": self._labels(decl, values)}
                if isinstance(child, Sketch):
                    entry["count"] = child.count
                    entry["sum"] = _number(child.sum)
                    entry["quantiles"] = {
                        repr(q): _finite(child.quantile(q)) for q in self.quantiles
                    }
                    entry["cumulative"] = True
                elif isinstance(child, CounterValue | GaugeValue):
                    entry["value"] = _number(child.value)
                series.append(entry)
        out["series"] = series
        return out

    def _shared_metrics(self, shared: multiprocess.Provider) -> dict[str, Any]:
        """The metrics of every worker, summed: declared ones first, in order, as on one."""
        groups: dict[str, tuple[str, str, tuple[str, ...], dict[tuple[str, ...], Any]]] = {}
        parsed = self._parsed
        totals = shared.totals()
        if len(parsed) > 4 * len(totals) + 1000:  # keys of series gone for good
            parsed.clear()
        for key, value in totals.items():
            head = parsed.get(key)
            if head is None:
                name, kind, help_text, names, values, part, cell = json.loads(key)
                head = parsed[key] = (
                    name,
                    kind,
                    help_text,
                    tuple(names),
                    tuple(values),
                    part,
                    cell,
                )
            name, kind, help_text, names, values, part, cell = head
            series = groups.setdefault(name, (kind, help_text, names, {}))[3]
            if kind != "histogram":
                series[values] = series.get(values, 0.0) + value
                continue
            entry = series.setdefault(
                values, {"count": 0.0, "sum": 0.0, "p": {}, "n": {}, "z": 0.0}
            )
            if part == "sum":
                entry["sum"] += value
            elif part == "le":
                entry["count"] += value
            elif cell == "z":
                entry["z"] += value
            elif part == "sk":
                side = entry[cell[:1]]
                index = int(cell[1:])
                side[index] = side.get(index, 0.0) + value
        metrics: dict[str, Any] = {}
        for decl, fam in self._core.metrics():
            if not isinstance(fam, Family):
                continue
            if fam.callback is not None:  # this process's reading, as on one
                metrics[decl.prometheus_name] = self._metric(decl, fam)
                groups.pop(decl.prometheus_name, None)
                continue
            out: dict[str, Any] = {"type": decl.kind, "help": decl.help}
            if decl.unit:
                out["unit"] = decl.unit
            kind, _, names, series = groups.pop(decl.prometheus_name, ("", "", decl.labels, {}))
            out["series"] = self._shared_series(decl.kind, names, series)
            metrics[decl.prometheus_name] = out
        for name, (kind, help_text, names, series) in groups.items():  # declared elsewhere only
            metrics[name] = {
                "type": kind,
                "help": help_text,
                "series": self._shared_series(kind, names, series),
            }
        return metrics

    def _shared_series(
        self, kind: str, names: tuple[str, ...], series: dict[tuple[str, ...], Any]
    ) -> list[dict[str, Any]]:
        core = self._core
        out: list[dict[str, Any]] = []
        for values, v in series.items():
            pairs = zip(core.common_names + names, core.common_values + values, strict=True)
            entry: dict[str, Any] = {"labels": {k: x for k, x in pairs if x != ""}}
            if kind == "histogram":
                count = v["count"]
                entry["count"] = int(count)
                entry["sum"] = _number(v["sum"])
                entry["quantiles"] = {
                    repr(q): _finite(_sketch.quantile(v["n"], v["z"], v["p"], count, q))
                    for q in self.quantiles
                }
                entry["cumulative"] = True
            else:
                entry["value"] = _number(v)
            out.append(entry)
        return out

    def page(self) -> bytes:
        """page renders the snapshot as strict JSON bytes (no ``NaN`` or ``Infinity`` tokens)."""
        return json.dumps(self.snapshot(), indent=1, sort_keys=False, default=str).encode()

    def _page(self, accept: str) -> tuple[bytes, str]:
        return self.page(), "application/json"

    @property
    def address(self) -> tuple[str, int] | None:
        """address is the standalone server's (host, port), or None without ``listen``."""
        return self._server.address if self._server is not None else None

    def close(self) -> None:
        """close stops the standalone server, freeing its port."""
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._shared is not None:
            self._shared.close()


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _number(value: float) -> float | str:
    """A value as strict JSON allows: a finite number, else Prometheus' "NaN", "+Inf", "-Inf"."""
    if value - value == 0.0:
        return value
    if value == math.inf:
        return "+Inf"
    return "-Inf" if value == -math.inf else "NaN"


def from_settings(settings: Settings, context: BuildContext) -> Provider:
    """from_settings builds the provider ``[metrics.expvar]`` describes.

    With workers sharing a directory, it keeps its files in its own ``expvar`` subdirectory, so
    next to the Prometheus provider each keeps its own.
    """
    m, e = settings.metrics, settings.metrics.expvar
    shared = context.shared_directory
    return Provider(
        quantiles=e.quantiles,
        common_labels=settings.service.labels,
        max_label_sets=m.max_label_sets,
        logger=context.logger,
        process_metrics=m.process_metrics,
        listen=e.listen,
        allow_public_listen=m.allow_public_listen,
        path=e.path,
        directory=os.path.join(shared, "expvar") if shared else "",
    )
