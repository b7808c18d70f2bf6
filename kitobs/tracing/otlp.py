"""otlp exports spans over OTLP/HTTP with OpenTelemetry's exporter (extra ``kitobs[otlp]``).

Spans stay kitobs spans until export: on the batching processor's thread each batch is adapted to
the SDK's ``ReadableSpan`` shape (`adapt`) and handed to an OpenTelemetry ``SpanExporter``, by
default ``OTLPSpanExporter`` from ``opentelemetry-exporter-otlp-proto-http``. `SdkExporter` takes
any SDK span exporter, e.g. the SDK's ``InMemorySpanExporter`` in tests. The resource carries
``service.name``; the instrumentation scope is ``kitobs``.

Example::

    >>> from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    >>> from kitobs.tracing import Span
    >>> memory = InMemorySpanExporter()
    >>> span = Span("get", 1, 2)
    >>> span.end()
    >>> SdkExporter(memory, service_name="shop").export([span], 1.0)
    >>> memory.get_finished_spans()[0].resource.attributes["service.name"]
    'shop'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, TraceFlags
from opentelemetry.trace.status import Status

from kitobs import __version__
from kitobs.config import OtlpSettings, key_name
from kitobs.errors import ConfigError
from kitobs.tracing._span import Span

if TYPE_CHECKING:
    from kitobs.config import Settings
    from kitobs.tracing.config import Export, ExporterContext

__all__ = ["Exporter", "from_settings", "SdkExporter", "adapt"]

_SCOPE = InstrumentationScope("kitobs", __version__)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


def adapt(span: Span, resource: Resource) -> ReadableSpan:
    """adapt gives a kitobs span in the OpenTelemetry SDK's ``ReadableSpan`` shape."""
    parent = None
    if span.parent_id:
        parent = SpanContext(span.trace_id, span.parent_id, span.remote_parent, _SAMPLED)
    return ReadableSpan(
        name=span.name,
        context=span.get_span_context(),
        parent=parent,
        resource=resource,
        attributes=span.attributes,
        events=[Event(name, attrs or {}, ts) for name, ts, attrs in span.events or ()],
        links=span.links or (),
        kind=span.kind,
        status=Status(span.status_code, span.status_description),
        start_time=span.start_ns,
        end_time=span.end_ns,
        instrumentation_scope=_SCOPE,
    )


class SdkExporter:
    """SdkExporter hands batches to an OpenTelemetry SDK ``SpanExporter``, e.g. a console one.

    Implements `kitobs.tracing.Exporter`; a result other than SUCCESS raises, so the processor
    counts the batch as dropped.
    """

    __slots__ = ("_resource", "exporter")

    def __init__(self, exporter: SpanExporter, *, service_name: str) -> None:
        self.exporter = exporter
        self._resource = Resource.create({"service.name": service_name})

    def export(self, spans: Sequence[Span], timeout: float) -> None:
        """export adapts *spans* and exports them; raises unless the SDK exporter succeeds."""
        resource = self._resource
        result = self.exporter.export([adapt(span, resource) for span in spans])
        if result is not SpanExportResult.SUCCESS:
            raise OSError(f"OTLP export failed: {result.name}")


class Exporter(SdkExporter):
    """Exporter sends spans to an OTLP/HTTP collector, e.g. ``Exporter(url, service_name="shop")``.

    Implements `kitobs.tracing.Exporter`.

    Raises:
        ConfigError: *endpoint* is not an http(s) URL, or *timeout* is not positive.
    """

    __slots__ = ()

    def __init__(
        self,
        endpoint: str = "http://127.0.0.1:4318/v1/traces",
        *,
        service_name: str,
        timeout: float = 10.0,
    ) -> None:
        if not endpoint.startswith(("http://", "https://")):
            raise ConfigError(
                "must be an http or https URL",
                key=key_name(OtlpSettings, "endpoint"),
                value=endpoint,
                allowed="a URL such as http://127.0.0.1:4318/v1/traces",
            )
        if not timeout > 0:
            raise ConfigError(
                "must be positive", key=key_name(OtlpSettings, "timeout"), value=timeout
            )
        super().__init__(
            OTLPSpanExporter(endpoint=endpoint, timeout=timeout), service_name=service_name
        )


def from_settings(settings: Settings, context: ExporterContext) -> Export:
    """from_settings builds the exporter ``[tracing.otlp]`` describes."""
    from kitobs.tracing.config import Export

    o = settings.tracing.otlp
    return Export(
        Exporter(o.endpoint, service_name=context.service_name, timeout=o.timeout), o.timeout
    )
