"""otel: metrics recorded through the OpenTelemetry metrics API on a MeterProvider.

Pass the ``MeterProvider`` (``otel.Provider(meter_provider)``), or let this module build one
with your metric readers; OpenTelemetry's global provider is used only with
``use_global=True``. Instruments get the dotted semantic-convention names
(``http.server.request.duration``), dotted attribute names (``http.request.method``) and UCUM
units (``s``, ``By``); histograms pass their buckets as advisory boundaries, so durations stay in
seconds. Counters and histograms record through OTel instruments; a gauge keeps its value here
(it supports both ``set`` and ``add``) and is reported by an observable gauge.

Example::

    >>> from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    >>> reader = InMemoryMetricReader()
    >>> provider = Provider(metric_readers=[reader])
    >>> provider.counter("jobs", help="Jobs run.").add(2)
    >>> [m.name for rm in reader.get_metrics_data().resource_metrics
    ...  for sm in rm.scope_metrics for m in sm.metrics if m.name == "jobs"]
    ['jobs']
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics as otel_metrics
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader

from kitobs.config import MetricsSettings, OtelMetricsSettings, key_name
from kitobs.contract import otel_attribute
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
from kitobs.metrics._exposition import callback_samples
from kitobs.metrics._store import GaugeValue, LockedGaugeValue
from kitobs.metrics.process import Collector as ProcessCollector

if TYPE_CHECKING:
    from kitobs.config import Settings
    from kitobs.metrics import ASGIApp, WSGIApp
    from kitobs.metrics.config import BuildContext

__all__ = [
    "Provider",
    "from_settings",
    "Counter",
    "Gauge",
    "Histogram",
    "CounterChild",
    "HistogramChild",
    "UNITS",
]

#: UNITS maps a kitobs unit to its UCUM code, e.g. ``seconds`` → ``s``.
UNITS: dict[str, str] = {"": "", "seconds": "s", "bytes": "By", "ratio": "1"}


class CounterChild(Bound):
    """CounterChild adds to an OTel Counter with this series' attributes."""

    __slots__ = ("_add", "_attrs", "_family")

    def __init__(self, family: Family[CounterChild], inst: Any, attrs: Mapping[str, str]) -> None:
        self._family = family
        self._add = inst.add
        self._attrs = dict(attrs)
        inst.add(0, self._attrs)  # a bound series exists at zero, as in Prometheus

    def add(self, delta: float = 1.0) -> None:
        """add adds *delta* through the OTel instrument; negative or non-finite is dropped."""
        try:
            if delta >= 0.0 and delta < 1e999:  # 1e999 is +inf: False for infinities and NaN too
                self._add(float(delta), self._attrs)
                return
        except Exception:  # not a number: dropped below, never raised
            pass
        self._family.reject(delta)


class HistogramChild(Bound):
    """HistogramChild records on an OTel Histogram with this series' attributes."""

    __slots__ = ("_attrs", "_family", "_record")

    def __init__(self, family: Family[HistogramChild], inst: Any, attrs: Mapping[str, str]) -> None:
        self._family = family
        self._record = inst.record
        self._attrs = dict(attrs)

    def observe(self, value: float) -> None:
        """observe records *value* through the OTel instrument; non-finite is dropped."""
        try:
            if value - value == 0.0:
                self._record(float(value), self._attrs)
                return
        except Exception:  # not a number: dropped below, never raised
            pass
        self._family.reject(value)


#: Counter is an otel counter.
Counter = CounterFamily[CounterChild]
#: Gauge is an otel gauge, kept here and observed.
Gauge = GaugeFamily[GaugeValue]
#: Histogram is an otel histogram.
Histogram = HistogramFamily[HistogramChild]


class Provider(Declaring):
    """Provider records through OpenTelemetry, e.g. ``otel.Provider(meter_provider)``.

    Counters, gauges (observable gauges) and histograms (the buckets as advisory boundaries)
    become OpenTelemetry instruments under their semantic-convention names.

    Args:
        meter_provider: the MeterProvider to use; built from *metric_readers* when None.
        metric_readers: readers of a MeterProvider built here, e.g. a periodic exporter.
        use_global: use OpenTelemetry's global MeterProvider (only if *meter_provider* is None).
        common_labels: attributes added to every series.
        max_label_sets: distinct label sets per metric before folding.
        logger: where the cardinality guard warns.
        process_metrics: report process and runtime metrics as observable instruments.
        scope: the instrumentation scope name.
    """

    def __init__(
        self,
        meter_provider: Any = None,
        *,
        metric_readers: Sequence[MetricReader] = (),
        use_global: bool = False,
        common_labels: Mapping[str, str] | None = None,
        max_label_sets: int = 2000,
        logger: Logger | None = None,
        process_metrics: bool = False,
        scope: str = "kitobs",
    ) -> None:
        self._owned: MeterProvider | None = None
        if meter_provider is None:
            if use_global:
                meter_provider = otel_metrics.get_meter_provider()
            else:
                self._owned = meter_provider = MeterProvider(metric_readers=list(metric_readers))
                if not metric_readers and logger is not None:
                    logger.log(
                        "level", "warn", "msg",
                        "otel metrics provider built without a metric reader: metrics go nowhere",
                    )  # fmt: skip
        self.meter_provider = meter_provider
        self._meter = meter_provider.get_meter(scope)
        self._core = Core(common_labels=common_labels, max_label_sets=max_label_sets, logger=logger)
        self._gauge_cls = GaugeValue if LOCK_FREE else LockedGaugeValue
        self._dropped_family = self._core.declare_self_metrics(self.declare)
        if process_metrics:
            self._process_instruments(ProcessCollector())

    def wsgi_routes(self) -> dict[str, WSGIApp]:
        """wsgi_routes is empty: this backend serves no page."""
        return {}

    def asgi_routes(self) -> dict[str, ASGIApp]:
        """asgi_routes is empty: this backend serves no page."""
        return {}

    def close(self) -> None:
        """close shuts down a MeterProvider built here (a final export); others are left alone."""
        if self._owned is not None:
            self._owned.shutdown()
            self._owned = None

    def _attrs(self, decl: Declaration, values: tuple[str, ...]) -> dict[str, str]:
        core = self._core
        attrs = {otel_attribute(k): v for k, v in core.common}
        for name, value in zip(decl.labels, values, strict=True):
            if value != "":  # an unbound label is absent, as in Prometheus
                attrs[otel_attribute(name)] = value
        return attrs

    def _make(self, decl: Declaration) -> Counter | Gauge | Histogram:
        def make(d: Declaration) -> Counter | Gauge | Histogram:
            unit = UNITS.get(d.unit, d.unit)
            if d.kind == "counter":
                inst = self._meter.create_counter(d.otel_name, unit=unit, description=d.help)

                def counter_child(f: Family[CounterChild], v: tuple[str, ...]) -> CounterChild:
                    return CounterChild(f, inst, self._attrs(d, v))

                return CounterFamily(d, self._core, counter_child)
            if d.kind == "histogram":
                hist = self._meter.create_histogram(
                    d.otel_name,
                    unit=unit,
                    description=d.help,
                    explicit_bucket_boundaries_advisory=list(d.buckets or ()),
                )

                def hist_child(f: Family[HistogramChild], v: tuple[str, ...]) -> HistogramChild:
                    return HistogramChild(f, hist, self._attrs(d, v))

                return HistogramFamily(d, self._core, hist_child)
            gc = self._gauge_cls
            fam: Gauge = GaugeFamily(d, self._core, lambda f, v: gc(f, v, ""))

            def observe(_options: CallbackOptions) -> Iterable[Observation]:
                if fam.callback is not None:
                    samples = callback_samples(fam)
                else:
                    samples = [(c.values, c.value) for c in tuple(fam.series.values())]
                return [Observation(value, self._attrs(d, values)) for values, value in samples]

            self._meter.create_observable_gauge(
                d.otel_name, callbacks=[observe], unit=unit, description=d.help
            )
            return fam

        return self._core.declare(decl, make)

    def _process_instruments(self, collector: ProcessCollector) -> None:
        for decl in collector.declarations():

            def observe(_options: CallbackOptions, d: Declaration = decl) -> Iterable[Observation]:
                for got, samples in collector.collect():
                    if got.name == d.name:
                        return [Observation(v, self._attrs(d, values)) for values, v in samples]
                return []

            unit = UNITS.get(decl.unit, decl.unit)
            if decl.kind == "counter":
                self._meter.create_observable_counter(
                    decl.prometheus_name, callbacks=[observe], unit=unit, description=decl.help
                )
            else:
                self._meter.create_observable_gauge(
                    decl.prometheus_name, callbacks=[observe], unit=unit, description=decl.help
                )


def from_settings(settings: Settings, context: BuildContext) -> Provider:
    """from_settings builds the provider ``[metrics.otel]`` describes.

    It records on ``context.meter_provider`` when given, else on OpenTelemetry's global one with
    ``use_global``, else on a MeterProvider of its own that exports over OTLP/HTTP.

    Raises:
        ConfigError: the OTLP exporter is not installed, or the endpoint is not an http(s) URL.
    """
    m, o = settings.metrics, settings.metrics.otel
    meter_provider = context.meter_provider
    readers = [] if meter_provider is not None or o.use_global else _otel_readers(settings)
    provider = Provider(
        meter_provider,
        metric_readers=readers,
        use_global=o.use_global,
        common_labels=settings.service.labels,
        max_label_sets=m.max_label_sets,
        logger=context.logger,
        process_metrics=m.process_metrics,
    )
    if meter_provider is None and o.use_global and not _global_meter_provider_set():
        _warn(
            context.logger,
            f"{key_name(OtelMetricsSettings, 'use_global')} is set but OpenTelemetry's global "
            "MeterProvider is not: metrics go nowhere until the application sets one",
        )
    return provider


def _global_meter_provider_set() -> bool:
    """Whether OpenTelemetry's global MeterProvider was set; until then its meters record nothing
    (the API's proxy hands instruments on once ``set_meter_provider`` is called)."""
    from opentelemetry import metrics as otel_metrics

    current = otel_metrics.get_meter_provider()
    unset = isinstance(current, otel_metrics.NoOpMeterProvider)
    return not unset and type(current).__name__ != "_ProxyMeterProvider"


def _warn(logger: Logger | None, message: str) -> None:
    if logger is not None:
        logger.log("level", "warn", "msg", message)


def _otel_readers(settings: Settings) -> list[Any]:
    """The periodic OTLP/HTTP reader of ``[metrics.otel]`` (extra ``kitobs[otlp]``).

    Raises:
        ConfigError: the exporter is not installed (metrics would go nowhere), or the endpoint
            is not an http(s) URL.
    """
    o = settings.metrics.otel
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    except ImportError as err:
        raise ConfigError(
            "the otel backend exports over OTLP, which needs the kitobs[otlp] extra "
            f"(opentelemetry-exporter-otlp-proto-http: {err})",
            key=key_name(MetricsSettings, "backend"),
            value="otel",
            allowed="pip install 'kitobs[otlp]', or pass meter_provider= or set "
            f"{key_name(OtelMetricsSettings, 'use_global')}",
        ) from None
    if o.endpoint and not o.endpoint.startswith(("http://", "https://")):
        raise ConfigError(
            "must be an http or https URL",
            key=key_name(OtelMetricsSettings, "endpoint"),
            value=o.endpoint,
            allowed="a URL such as http://127.0.0.1:4318/v1/metrics",
        )
    # Empty keys are left to the exporter, whose own default is OpenTelemetry's.
    exporter = OTLPMetricExporter(endpoint=o.endpoint or None, headers=dict(o.headers) or None)
    interval_ms = o.export_interval * 1000.0
    return [PeriodicExportingMetricReader(exporter, export_interval_millis=interval_ms)]
