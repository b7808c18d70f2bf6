"""config builds a `kitobs.tracing.Tracer` from the ``[tracing]`` section of `kitobs.config`.

Keys (``KITOBS_TRACING_<KEY>``; the standard ``OTEL_SERVICE_NAME``, ``OTEL_TRACES_SAMPLER``,
``OTEL_TRACES_SAMPLER_ARG`` and ``OTEL_PROPAGATORS`` apply when those are unset): ``service_name``
(empty: ``[service] name``), ``sampler`` and ``sampler_arg``, ``propagators``, ``exporter``
(``zipkin``, ``otlp``, ``log`` or ``none``), ``batch_size``, ``queue_size``, ``flush_interval``,
``shutdown_timeout``, ``public_edge``, ``[tracing.zipkin] endpoint``/``timeout`` and
``[tracing.otlp] endpoint``/``timeout``. Span, event and link attributes are redacted before
export by the rule of ``[log] redact``, ``redact_keys``, ``redact_extra_keys`` and
``redact_allow_keys`` (see `redact_rule`), the one log lines use.

Example::

    >>> from kitobs.config import load
    >>> settings = load(env={"OTEL_TRACES_SAMPLER": "always_off"}, path=None, search=False)
    >>> tracer = tracer_from_settings(settings)
    >>> tracer.start_span("job").sampled
    False
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from kitobs.config import Settings
from kitobs.errors import ConfigError
from kitobs.redact import Rule
from kitobs.tracing import propagation, sampler
from kitobs.tracing._batch import BatchProcessor
from kitobs.tracing._tracer import Tracer

if TYPE_CHECKING:
    from kitobs.tracing import Counter, Exporter, Logger

__all__ = ["redact_rule", "tracer_from_settings", "service_name"]


def service_name(settings: Settings) -> str:
    """service_name is ``tracing.service_name``, else ``service.name``, e.g. ``"checkout"``."""
    return settings.tracing.service_name or settings.service.name


def redact_rule(settings: Settings) -> Rule | None:
    """redact_rule is the `kitobs.redact.Rule` of ``[log] redact*``, shared by logs and spans.

    None when ``log.redact`` is off. For example ``redact_rule(load()).names``.

    Raises:
        ConfigError: an empty redaction name.
    """
    cfg = settings.log
    if not cfg.redact:
        return None
    return Rule(cfg.redact_keys, extra=cfg.redact_extra_keys, allow=cfg.redact_allow_keys)


def tracer_from_settings(
    settings: Settings,
    *,
    logger: Logger | None = None,
    dropped: Counter | Callable[[str], Counter] | None = None,
) -> Tracer:
    """tracer_from_settings builds the configured tracer, e.g. ``tracer_from_settings(load())``.

    Args:
        settings: loaded configuration.
        logger: receives export errors and the one-time overflow warning; required by
            ``exporter = "log"``, which writes the span lines to it.
        dropped: counts dropped spans: one counter (``provider.dropped("spans", reason)``), or a
            function from reason to counter (``functools.partial(provider.dropped, "spans")``).

    Raises:
        ConfigError: an unknown sampler or propagator, ``log`` without a logger, or ``otlp``
            without its extra installed.
    """
    cfg = settings.tracing
    name = service_name(settings)
    chosen_sampler = sampler.from_name(cfg.sampler, cfg.sampler_arg)
    propagators = propagation.from_names(cfg.propagators)
    exporter: Exporter | None
    export_timeout = 10.0
    if cfg.exporter == "none":
        exporter = None
    elif cfg.exporter == "zipkin":
        from kitobs.tracing import zipkin

        exporter = zipkin.Exporter(
            cfg.zipkin.endpoint, service_name=name, timeout=cfg.zipkin.timeout
        )
        export_timeout = cfg.zipkin.timeout
    elif cfg.exporter == "log":
        if logger is None:
            raise ConfigError(
                "the log exporter needs a logger",
                key="tracing.exporter",
                value="log",
                allowed="tracer_from_settings(settings, logger=...)",
            )
        from kitobs.tracing import log

        exporter = log.Exporter(logger, service_name=name)
    elif cfg.exporter == "otlp":
        try:
            from kitobs.tracing import otlp
        except ImportError as err:
            raise ConfigError(
                f"the otlp exporter needs the kitobs[otlp] extra ({err})",
                key="tracing.exporter",
                value="otlp",
                allowed="pip install 'kitobs[otlp]'",
            ) from None
        exporter = otlp.Exporter(cfg.otlp.endpoint, service_name=name, timeout=cfg.otlp.timeout)
        export_timeout = cfg.otlp.timeout
    else:  # the loader checks choices; a hand-built Settings may not
        raise ConfigError(
            "unknown exporter",
            key="tracing.exporter",
            value=cfg.exporter,
            allowed=("zipkin", "otlp", "log", "none"),
        )
    processor = None
    if exporter is not None:
        processor = BatchProcessor(
            exporter,
            batch_size=cfg.batch_size,
            queue_size=cfg.queue_size,
            flush_interval=cfg.flush_interval,
            shutdown_timeout=cfg.shutdown_timeout,
            export_timeout=export_timeout,
            dropped=dropped,
            logger=logger,
            redact=redact_rule(settings),
        )
    return Tracer(
        sampler=chosen_sampler,
        processor=processor,
        propagators=propagators,
        public_edge=cfg.public_edge,
    )
