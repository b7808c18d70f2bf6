"""prometheus: metrics kept in kitobs' own registry and served in the Prometheus formats.

The exposition is text format 0.0.4 (``promtool check metrics`` clean) or OpenMetrics 1.0 when
the scraper asks for it (``Accept: application/openmetrics-text``); only OpenMetrics carries
exemplars. ``_created`` series appear only with ``created_series=True``. Serve it with
`Provider.wsgi_app` / `Provider.asgi_app` on the application's own server, or with a standalone
server (``listen="127.0.0.1:9464"``) that `Provider.close` stops. To expose the metrics through a
prometheus_client registry you already have, register `Provider.collector` on it
(``Provider(registry=...)`` does that).

Example::

    >>> provider = Provider()
    >>> jobs = provider.counter("jobs", help="Jobs run.", labels=("queue",))
    >>> jobs.labels("fast").add(2)
    >>> b'jobs_total{queue="fast"} 2.0' in provider.exposition()
    True
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from kitobs.config import PrometheusSettings, key_name
from kitobs.metrics._declare import (
    Core,
    CounterFamily,
    Declaration,
    Declaring,
    Family,
    GaugeFamily,
    HistogramFamily,
    Logger,
)
from kitobs.metrics._exposition import (
    OPENMETRICS,
    TEXT,
    callback_samples,
    histogram_prefixes,
    label_block,
    negotiate,
    render,
    sample_prefix,
)
from kitobs.metrics._http import Pages, Server, serve
from kitobs.metrics._store import CounterValue, GaugeValue, HistogramValue, children
from kitobs.metrics.process import Collector as ProcessCollector

if TYPE_CHECKING:
    from kitobs.config import Settings
    from kitobs.metrics import (
        ExemplarContext,
        multiprocess,
    )
    from kitobs.metrics.config import BuildContext

__all__ = [
    "Provider",
    "from_settings",
    "Counter",
    "Gauge",
    "Histogram",
    "Collector",
]

#: Counter is a prometheus counter: a family of `CounterValue` children.
Counter = CounterFamily[CounterValue]
#: Gauge is a prometheus gauge: a family of `GaugeValue` children.
Gauge = GaugeFamily[GaugeValue]
#: Histogram is a prometheus histogram: a family of `HistogramValue` children.
Histogram = HistogramFamily[HistogramValue]


class Provider(Pages, Declaring):
    """Provider keeps metrics for Prometheus to scrape, e.g. ``prometheus.Provider()``.

    Args:
        common_labels: labels added to every series, e.g. ``{"env": "prod"}``.
        max_label_sets: distinct label sets per metric before folding (cardinality guard).
        logger: where the guard warns; a nop by default.
        exemplar_context: returns (trace_id, span_id) of the current sampled span; histograms
            then keep the latest exemplar per bucket (OpenMetrics only).
        created_series: expose ``_created`` series.
        process_metrics: expose process and runtime metrics.
        registry: a prometheus_client ``CollectorRegistry`` to register `collector` on.
        listen: ``host:port`` of a standalone exposition server; empty serves nothing.
        allow_public_listen: let *listen* name every interface (``0.0.0.0``, ``[::]``...),
            which is refused otherwise.
        path: the exposition path, ``/metrics`` by default.
    """

    def __init__(
        self,
        *,
        common_labels: Mapping[str, str] | None = None,
        max_label_sets: int = 2000,
        logger: Logger | None = None,
        exemplar_context: ExemplarContext | None = None,
        created_series: bool = False,
        process_metrics: bool = False,
        registry: Any = None,
        listen: str = "",
        allow_public_listen: bool = False,
        path: str = "/metrics",
    ) -> None:
        self._core = Core(common_labels=common_labels, max_label_sets=max_label_sets, logger=logger)
        self._kinds = children(exemplar_context)
        self._created = created_series
        self._process = ProcessCollector() if process_metrics else None
        self.path = path
        self._dropped_family = self._core.declare_self_metrics(self.declare)
        self._registry = registry
        self._collector: Collector | None = None
        if registry is not None:
            self._collector = self.collector()
            registry.register(self._collector)
        self._server: Server | None = None
        if listen:
            self._server = serve(
                self.wsgi_routes(),
                listen,
                key=key_name(PrometheusSettings, "listen"),
                allow_public=allow_public_listen,
            )

    # --- declaring ------------------------------------------------------------------------

    def _make(self, decl: Declaration) -> Counter | Gauge | Histogram:
        if decl.kind == "counter":
            return self._counter(decl)
        if decl.kind == "gauge":
            return self._gauge(decl)
        return self._histogram(decl)

    def _block(self, decl: Declaration, values: tuple[str, ...]) -> str:
        core = self._core
        return label_block(core.common_names + decl.labels, core.common_values + values)

    def _counter(self, decl: Declaration) -> Counter:
        new = self._kinds.counter

        def child(family: Family[CounterValue], values: tuple[str, ...]) -> CounterValue:
            return new(
                family, values, sample_prefix(decl.prometheus_name, self._block(decl, values))
            )

        def make(d: Declaration) -> Counter:
            fam: Counter = CounterFamily(d, self._core, child)
            if not d.labels:
                fam.default()  # a label-less metric exists at zero from the start
            return fam

        return self._core.declare(decl, make)

    def _gauge(self, decl: Declaration) -> Gauge:
        new = self._kinds.gauge

        def child(family: Family[GaugeValue], values: tuple[str, ...]) -> GaugeValue:
            return new(
                family, values, sample_prefix(decl.prometheus_name, self._block(decl, values))
            )

        def make(d: Declaration) -> Gauge:
            fam: Gauge = GaugeFamily(d, self._core, child)
            if not d.labels:
                fam.default()
            return fam

        return self._core.declare(decl, make)

    def _histogram(self, decl: Declaration) -> Histogram:
        new = self._kinds.histogram
        bounds = decl.buckets or ()

        def child(family: Family[HistogramValue], values: tuple[str, ...]) -> HistogramValue:
            prefixes = histogram_prefixes(decl.prometheus_name, self._block(decl, values), bounds)
            return new(family, values, prefixes, bounds)

        def make(d: Declaration) -> Histogram:
            fam: Histogram = HistogramFamily(d, self._core, child)
            if not d.labels:
                fam.default()
            return fam

        return self._core.declare(decl, make)

    # --- exposition -----------------------------------------------------------------------

    def exposition(self, *, openmetrics: bool = False) -> bytes:
        """exposition renders every metric, e.g. ``b'jobs_total 1.0\\n'`` in text 0.0.4."""
        extra = self._process.collect if self._process is not None else None
        return render(self._core, openmetrics=openmetrics, created=self._created, extra=extra)

    def collector(self) -> Collector:
        """collector adapts this registry to prometheus_client: ``registry.register(c)``."""
        return Collector(self)

    def _page(self, accept: str) -> tuple[bytes, str]:
        om = negotiate(accept)
        return self.exposition(openmetrics=om), OPENMETRICS if om else TEXT

    @property
    def address(self) -> tuple[str, int] | None:
        """address is the standalone server's (host, port), or None without ``listen``."""
        return self._server.address if self._server is not None else None

    def close(self) -> None:
        """close stops the standalone server (freeing its port) and unregisters the collector."""
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._registry is not None and self._collector is not None:
            with contextlib.suppress(KeyError):
                self._registry.unregister(self._collector)
            self._collector = None

    # --- reading back (tests, the collector, pushgateway) -----------------------------------

    def core(self) -> Core:
        """core gives the shared registry state, for the collector and the other backends."""
        return self._core


class Collector:
    """Collector exposes a `Provider`'s metrics through a prometheus_client registry.

    Example: ``prometheus_client.REGISTRY.register(provider.collector())``.
    """

    def __init__(self, provider: Provider) -> None:
        self._provider = provider

    def collect(self) -> Iterator[Any]:
        """collect yields prometheus_client metric families (prometheus_client is imported here)."""
        from prometheus_client.metrics_core import Metric

        core = self._provider.core()
        names = core.common_names
        common = core.common_values
        for decl, metric in core.metrics():
            if not isinstance(metric, Family):
                continue
            pname = decl.prometheus_name
            family_name = pname[: -len("_total")] if decl.kind == "counter" else pname
            m = Metric(family_name, decl.help, decl.kind, decl.unit)
            label_names = names + decl.labels
            if metric.callback is not None:
                for values, value in callback_samples(metric):
                    m.add_sample(pname, _labels(label_names, common + values), value)
                yield m
                continue
            for child in tuple(metric.series.values()):
                labels = _labels(label_names, common + child.values)
                if isinstance(child, HistogramValue):
                    counts, total = child.snapshot()
                    running = 0
                    for bound, count in zip((*child.bounds, float("inf")), counts, strict=True):
                        running += count
                        le = "+Inf" if bound == float("inf") else repr(bound)
                        m.add_sample(pname + "_bucket", {**labels, "le": le}, running)
                    m.add_sample(pname + "_sum", labels, total)
                    m.add_sample(pname + "_count", labels, running)
                else:
                    m.add_sample(pname, labels, child.value)
            yield m


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> dict[str, str]:
    return {n: v for n, v in zip(names, values, strict=True) if v != ""}


def from_settings(settings: Settings, context: BuildContext) -> Provider | multiprocess.Provider:
    """from_settings builds the provider ``[metrics.prometheus]`` describes.

    When the workers of a multi-process server share a directory (``context.shared_directory``),
    it is a `kitobs.metrics.multiprocess` provider whose exposition sums every worker.
    """
    m, p = settings.metrics, settings.metrics.prometheus
    exemplar_context = context.exemplar_context if p.exemplars else None
    if context.shared_directory:
        from kitobs.metrics import multiprocess

        return multiprocess.Provider(
            context.shared_directory,
            common_labels=settings.service.labels,
            max_label_sets=m.max_label_sets,
            logger=context.logger,
            process_metrics=m.process_metrics,
            listen=p.listen,
            allow_public_listen=m.allow_public_listen,
            path=p.path,
            exemplar_context=exemplar_context,
        )
    return Provider(
        common_labels=settings.service.labels,
        max_label_sets=m.max_label_sets,
        logger=context.logger,
        exemplar_context=exemplar_context,
        created_series=m.created_series,
        process_metrics=m.process_metrics,
        listen=p.listen,
        allow_public_listen=m.allow_public_listen,
        path=p.path,
    )
