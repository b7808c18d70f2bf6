"""kitobs.tracing: OpenTelemetry-compatible spans, exported to Zipkin, correlated with logs.

A `Tracer` starts spans; a span made current (``with tracer.span("charge"):``) is the current span
of OpenTelemetry's context, so ``opentelemetry.trace.get_current_span()`` returns it, spans of any
OpenTelemetry instrumentation started inside it become its children, and a kitobs span started
inside theirs becomes theirs. The OpenTelemetry SDK is not involved: a kitobs span is a slotted
object, ended spans go to a `Processor` (normally the batching one in ``_batch``) whose background
thread hands them to an `Exporter`: `kitobs.tracing.zipkin`, `kitobs.tracing.log`,
`kitobs.tracing.otlp` (extra ``kitobs[otlp]``).

Unsampled spans are still current and still propagate, with the sampled flag off, and log lines
written inside them still carry their ids. Headers are read and written by `Propagator` objects
(`kitobs.tracing.propagation`: W3C ``traceparent``/``tracestate``, baggage, B3 single and multi).
`current_ids` and `current_sampled_ids` are the hooks loggers and metric exemplars use.

Build a tracer from configuration with `kitobs.tracing.config.tracer_from_settings`, or by hand::

    >>> from kitobs.tracing import Tracer, current_ids
    >>> tracer = Tracer()
    >>> with tracer.span("checkout") as span:
    ...     current_ids() == span.hex_ids()
    True
    >>> current_ids() is None
    True

Exporters do not carry span links to Zipkin as links (Zipkin has none); see `kitobs.tracing.zipkin`.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Protocol

from opentelemetry.trace import SpanKind

if TYPE_CHECKING:
    from opentelemetry.context.context import Context

__all__ = [
    # Spans and the tracer
    "Tracer",
    "Span",
    "SpanKind",
    # Pluggable parts
    "Sampler",
    "Processor",
    "Exporter",
    "Propagator",
    "Counter",
    "Logger",
    # Correlation hooks
    "current_ids",
    "current_sampled_ids",
]


class Sampler(Protocol):
    """Sampler decides whether a new span is sampled, e.g. `kitobs.tracing.sampler.TraceIdRatio`.

    *parent_sampled* is the parent's sampled flag, or None for a root span.
    """

    def sample(self, trace_id: int, parent_sampled: bool | None) -> bool: ...


class Processor(Protocol):
    """Processor receives every ended sampled span, e.g. the batching sender in front of Zipkin.

    ``on_end`` is on the caller's hot path: it must return quickly and never raise or block.
    ``shutdown`` sends what is queued, waiting at most its configured timeout.
    """

    def on_end(self, span: Span) -> None: ...

    def flush(self, timeout: float | None = None) -> bool: ...

    def shutdown(self) -> None: ...


class Exporter(Protocol):
    """Exporter sends a batch of ended spans somewhere, e.g. `kitobs.tracing.zipkin.Exporter`.

    It runs on the processor's background thread, may take up to *timeout* seconds and raises on
    failure; the processor counts the batch as dropped and logs the error.
    """

    def export(self, spans: Sequence[Span], timeout: float) -> None: ...


class Propagator(Protocol):
    """Propagator writes and reads one header format, e.g. W3C ``traceparent``.

    *carrier* is a headers mapping; names are matched case-insensitively when reading.
    """

    def inject(self, carrier: MutableMapping[str, str], context: Context) -> None: ...

    def extract(self, carrier: Mapping[str, str], context: Context) -> Context: ...


class Counter(Protocol):
    """Counter counts dropped spans, e.g. ``provider.dropped("spans", "queue_full")``."""

    def add(self, delta: float) -> None: ...


class Logger(Protocol):
    """Logger is `kitobs.log.Logger`'s shape: ``log("msg", "spans dropped", "count", 3)``."""

    def log(self, *keyvals: object) -> None: ...


from kitobs.tracing._span import Span, current_ids, current_sampled_ids  # noqa: E402
from kitobs.tracing._tracer import Tracer  # noqa: E402
