"""config: build the metrics provider that ``[metrics]`` names, e.g. ``backend = "statsd"``.

Changing backend is a configuration change only: the application calls
`provider_from_settings` once in ``main()`` and passes the provider on.

Example::

    >>> from kitobs.config import load
    >>> settings = load(env={"KITOBS_METRICS_BACKEND": "memory"}, search=False)
    >>> type(provider_from_settings(settings)).__module__
    'kitobs.metrics.memory'
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from kitobs.errors import ConfigError
from kitobs.metrics import _workers
from kitobs.metrics._declare import Logger
from kitobs.metrics._http import parse_address

if TYPE_CHECKING:
    from kitobs.config import Settings
    from kitobs.metrics import ExemplarContext, Provider

__all__ = ["provider_from_settings"]


def provider_from_settings(
    settings: Settings,
    *,
    logger: Logger | None = None,
    exemplar_context: ExemplarContext | None = None,
    meter_provider: Any = None,
) -> Provider:
    """provider_from_settings builds one backend, or a `kitobs.metrics.multi` fan-out.

    Args:
        settings: the loaded configuration (`kitobs.config.load`).
        logger: where the cardinality guard and backends warn.
        exemplar_context: (trace_id, span_id) of the current sampled span, for Prometheus.
        meter_provider: an OpenTelemetry MeterProvider for the ``otel`` backend.

    Raises:
        ConfigError: a setting the loader cannot check, e.g. a listen address that is not
            ``host:port``, or two servers on one address; the message names the key.
    """
    m = settings.metrics
    names = list(dict.fromkeys(m.backend))  # keep order, drop repeats
    if len(names) > 1 and "discard" in names:
        names.remove("discard")  # discarding next to a real backend adds nothing
    if not names:
        raise ConfigError("no backend named", key="metrics.backend", allowed="one or more")
    _check_servers(settings, names)
    common = dict(settings.service.labels)
    shared = _shared_directory(settings, names, logger)
    members: list[Provider] = []
    try:
        for name in names:
            members.append(
                _build(name, settings, common, logger, exemplar_context, meter_provider, shared)
            )
    except BaseException:
        for built in members:
            built.close()
        raise
    if len(members) == 1:
        return members[0]
    from kitobs.metrics import multi

    return multi.Provider(*members, max_label_sets=m.max_label_sets, logger=logger)


def _check_servers(settings: Settings, names: list[str]) -> None:
    m = settings.metrics
    seen: dict[tuple[str, int], str] = {}
    for name, listen in (("prometheus", m.prometheus.listen), ("expvar", m.expvar.listen)):
        if name in names and listen:
            addr = parse_address(
                listen, key=f"metrics.{name}.listen", allow_public=m.allow_public_listen
            )
            if addr in seen and addr[1] != 0:
                raise ConfigError(
                    f"the {seen[addr]} and {name} servers cannot share one address",
                    key=f"metrics.{name}.listen",
                    value=listen,
                )
            seen[addr] = name
    for name, path in (("prometheus", m.prometheus.path), ("expvar", m.expvar.path)):
        if name in names and not path.startswith("/"):
            raise ConfigError("must start with /", key=f"metrics.{name}.path", value=path)
    if {"prometheus", "expvar"} <= set(names) and m.prometheus.path == m.expvar.path:
        raise ConfigError(
            "the Prometheus and expvar pages cannot share one path",
            key="metrics.expvar.path",
            value=m.expvar.path,
        )


def _shared_directory(settings: Settings, names: list[str], logger: Logger | None) -> str:
    """The directory the workers of this server share, or "" in a process on its own."""
    m = settings.metrics
    if m.prometheus.multiprocess_dir:
        return m.prometheus.multiprocess_dir
    if m.multiprocess == "off" or not {"prometheus", "expvar"} & set(names):
        return ""
    found = _workers.detect()
    if isinstance(found, _workers.Detected):
        return str(_workers.shared_directory(found))
    if isinstance(found, _workers.Unsure) and logger is not None:
        logger.log(
            "level",
            "warn",
            "msg",
            "metrics may show one worker's numbers: set [metrics.prometheus] multiprocess_dir"
            " (KITOBS_METRICS_PROMETHEUS_MULTIPROCESS_DIR) to a directory the workers share",
            "reason",
            found.reason,
        )
    return ""


def _build(
    name: str,
    settings: Settings,
    common: dict[str, str],
    logger: Logger | None,
    exemplar_context: ExemplarContext | None,
    meter_provider: Any,
    shared: str = "",
) -> Provider:
    m = settings.metrics
    if name == "prometheus":
        p = m.prometheus
        if shared:
            from kitobs.metrics import multiprocess

            return multiprocess.Provider(
                shared,
                common_labels=common,
                max_label_sets=m.max_label_sets,
                logger=logger,
                process_metrics=m.process_metrics,
                listen=p.listen,
                allow_public_listen=m.allow_public_listen,
                path=p.path,
                exemplar_context=exemplar_context if p.exemplars else None,
            )
        from kitobs.metrics import prometheus

        return prometheus.Provider(
            common_labels=common,
            max_label_sets=m.max_label_sets,
            logger=logger,
            exemplar_context=exemplar_context if p.exemplars else None,
            created_series=m.created_series,
            process_metrics=m.process_metrics,
            listen=p.listen,
            allow_public_listen=m.allow_public_listen,
            path=p.path,
        )
    if name == "expvar":
        from kitobs.metrics import expvar

        e = m.expvar
        return expvar.Provider(
            quantiles=e.quantiles,
            common_labels=common,
            max_label_sets=m.max_label_sets,
            logger=logger,
            process_metrics=m.process_metrics,
            listen=e.listen,
            allow_public_listen=m.allow_public_listen,
            path=e.path,
            # Its own subdirectory: next to the Prometheus provider, each keeps its own files.
            directory=os.path.join(shared, "expvar") if shared else "",
        )
    if name == "pushgateway":
        from kitobs.metrics import pushgateway

        g = m.pushgateway
        return pushgateway.Provider(
            g.address,
            job=g.job or settings.service.name,
            instance=g.instance,
            timeout=g.timeout,
            push_on_exit=g.push_on_exit,
            common_labels=common,
            max_label_sets=m.max_label_sets,
            logger=logger,
            process_metrics=m.process_metrics,
        )
    if name == "otel":
        try:
            from kitobs.metrics import otel
        except ImportError as err:
            raise ConfigError(
                f"the otel backend needs the kitobs[otel] extra ({err})",
                key="metrics.backend",
                value="otel",
                allowed="pip install 'kitobs[otlp]' (or kitobs[otel] with your own readers)",
            ) from None
        o = m.otel
        readers = [] if meter_provider is not None or o.use_global else _otel_readers(settings)
        provider = otel.Provider(
            meter_provider,
            metric_readers=readers,
            use_global=o.use_global,
            common_labels=common,
            max_label_sets=m.max_label_sets,
            logger=logger,
            process_metrics=m.process_metrics,
        )
        if meter_provider is None and o.use_global and not _global_meter_provider_set():
            _warn(
                logger,
                "metrics.otel.use_global is set but OpenTelemetry's global MeterProvider is not: "
                "metrics go nowhere until the application sets one",
            )
        return provider
    if name == "statsd":
        from kitobs.metrics import statsd

        return statsd.Provider.from_settings(settings, logger=logger)
    if name == "memory":
        from kitobs.metrics import memory

        return memory.Provider(
            common_labels=common,
            max_label_sets=m.max_label_sets,
            logger=logger,
            process_metrics=m.process_metrics,
        )
    if name == "discard":
        from kitobs.metrics import discard

        return discard.Provider()
    raise ConfigError(  # the loader checks the names; this guards a schema/code mismatch
        "is not a known backend",
        key="metrics.backend",
        value=name,
        allowed=("prometheus", "statsd", "expvar", "otel", "pushgateway", "memory", "discard"),
    )


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
            key="metrics.backend",
            value="otel",
            allowed="pip install 'kitobs[otlp]', or pass meter_provider= or set "
            "metrics.otel.use_global",
        ) from None
    if o.endpoint and not o.endpoint.startswith(("http://", "https://")):
        raise ConfigError(
            "must be an http or https URL",
            key="metrics.otel.endpoint",
            value=o.endpoint,
            allowed="a URL such as http://127.0.0.1:4318/v1/metrics",
        )
    # Empty keys are left to the exporter, whose own default is OpenTelemetry's.
    exporter = OTLPMetricExporter(endpoint=o.endpoint or None, headers=dict(o.headers) or None)
    interval_ms = o.export_interval * 1000.0
    return [PeriodicExportingMetricReader(exporter, export_interval_millis=interval_ms)]
