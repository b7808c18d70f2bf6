"""log summarises ended spans as log lines through a kitobs logger, e.g. in the demo.

One line per span, from the batching processor's thread::

    msg=span name=checkout trace_id=4bf9… span_id=00f0… parent_id=… kind=server
    duration_ms=12.345 status=error error="ValueError: bad" http.route=/cart

``parent_id`` is left out for root spans, ``status`` is ``ok``, ``error`` or ``unset``, and the
span's attributes follow under their own names. Events and links are not written.

Example::

    >>> from kitobs.tracing import Span
    >>> class Printer:
    ...     def log(self, *keyvals): print(keyvals[-6:])
    >>> span = Span("get", 1, 2, start_ns=1_000_000)
    >>> span.end(3_500_000)
    >>> Exporter(Printer(), service_name="shop").export([span], 1.0)
    ('kind', 'internal', 'duration_ms', 2.5, 'status', 'unset')
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from opentelemetry.trace.status import StatusCode

if TYPE_CHECKING:
    from kitobs.config import Settings
    from kitobs.tracing import Logger, Span
    from kitobs.tracing.config import Export, ExporterContext

__all__ = ["Exporter", "from_settings"]

_ERROR = StatusCode.ERROR


class Exporter:
    """Exporter writes each span as one log line, e.g. ``Exporter(logger, service_name="shop")``.

    Implements `kitobs.tracing.Exporter`. A logger failure propagates to the processor, which
    counts the batch as dropped.
    """

    __slots__ = ("logger", "service_name")

    def __init__(self, logger: Logger, *, service_name: str) -> None:
        self.logger = logger
        self.service_name = service_name

    def export(self, spans: Sequence[Span], timeout: float) -> None:
        """export logs one line per span."""
        log = self.logger.log
        for span in spans:
            trace_id, span_id = span.hex_ids()
            keyvals: list[object] = [
                "msg", "span", "service", self.service_name, "name", span.name,
                "trace_id", trace_id, "span_id", span_id,
            ]  # fmt: skip
            if span.parent_id:
                keyvals += ["parent_id", f"{span.parent_id:016x}"]
            keyvals += [
                "kind", span.kind.name.lower(),
                "duration_ms", round((span.end_ns - span.start_ns) / 1e6, 3),
                "status", span.status_code.name.lower(),
            ]  # fmt: skip
            if span.status_code is _ERROR and span.status_description:
                keyvals += ["error", span.status_description]
            if span.attributes:
                for key, value in span.attributes.items():
                    keyvals += [key, value]
            log(*keyvals)


def from_settings(settings: Settings, context: ExporterContext) -> Export:
    """from_settings builds an exporter writing to ``context.logger``.

    Raises:
        ConfigError: no logger was given.
    """
    from kitobs.config import TracingSettings, key_name
    from kitobs.errors import ConfigError
    from kitobs.tracing.config import Export

    if context.logger is None:
        raise ConfigError(
            "the log exporter needs a logger",
            key=key_name(TracingSettings, "exporter"),
            value="log",
            allowed="tracer_from_settings(settings, logger=...)",
        )
    return Export(Exporter(context.logger, service_name=context.service_name))
