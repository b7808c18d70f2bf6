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

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast

from kitobs.config import Settings, TracingSettings, key_name
from kitobs.errors import ConfigError
from kitobs.redact import Rule
from kitobs.tracing import propagation, sampler
from kitobs.tracing._batch import BatchProcessor
from kitobs.tracing._tracer import Tracer

if TYPE_CHECKING:
    from kitobs.tracing import Counter, Exporter, Logger

__all__ = [
    "EXPORTERS",
    "Export",
    "ExporterContext",
    "ExporterModule",
    "redact_rule",
    "tracer_from_settings",
    "service_name",
]

#: EXPORTERS maps each ``tracing.exporter`` name to the module that builds it
#: (`ExporterModule`); ``none`` exports nothing. A module is imported only when chosen.
EXPORTERS: Mapping[str, str | None] = {
    "zipkin": "kitobs.tracing.zipkin",
    "otlp": "kitobs.tracing.otlp",
    "log": "kitobs.tracing.log",
    "none": None,
}

_EXPORTER_KEY = key_name(TracingSettings, "exporter")


@dataclass(frozen=True, slots=True)
class ExporterContext:
    """ExporterContext is what an exporter gets besides the settings, e.g. its service name.

    Args:
        service_name: the name on the spans (`service_name`).
        logger: the logger given to `tracer_from_settings`, or None.
    """

    service_name: str
    logger: Logger | None = None


@dataclass(frozen=True, slots=True)
class Export:
    """Export is a built exporter and the seconds one export may take, e.g. ``Export(e, 5.0)``."""

    exporter: Exporter
    timeout: float = 10.0


class ExporterModule(Protocol):
    """ExporterModule is what an exporter module provides, e.g. `kitobs.tracing.zipkin`.

    A new exporter is one module with an ``Exporter`` (`kitobs.tracing.Exporter`) and this
    ``from_settings``, one line in `EXPORTERS` and its name in the choices of
    ``tracing.exporter`` (a test checks the two agree).
    """

    def from_settings(self, settings: Settings, context: ExporterContext) -> Export:
        """from_settings builds the exporter from its settings section.

        Raises:
            ConfigError: a setting the loader cannot check; the message names the key.
        """
        ...


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
    built = _exporter(cfg.exporter, settings, ExporterContext(name, logger))
    processor = None
    if built is not None:
        processor = BatchProcessor(
            built.exporter,
            batch_size=cfg.batch_size,
            queue_size=cfg.queue_size,
            flush_interval=cfg.flush_interval,
            shutdown_timeout=cfg.shutdown_timeout,
            export_timeout=built.timeout,
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


def _exporter(name: str, settings: Settings, context: ExporterContext) -> Export | None:
    """The exporter *name* builds, its module imported now; None for ``none``.

    Raises:
        ConfigError: *name* is not in `EXPORTERS`, or its optional library is not installed.
    """
    if name not in EXPORTERS:  # the loader checks choices; a hand-built Settings may not
        raise ConfigError(
            "unknown exporter", key=_EXPORTER_KEY, value=name, allowed=tuple(EXPORTERS)
        )
    module = EXPORTERS[name]
    if module is None:
        return None
    try:
        chosen = cast("ExporterModule", importlib.import_module(module))
    except ImportError as err:
        raise ConfigError(
            f"the {name} exporter needs the kitobs[{name}] extra ({err})",
            key=_EXPORTER_KEY,
            value=name,
            allowed=f"pip install 'kitobs[{name}]'",
        ) from None
    return chosen.from_settings(settings, context)
