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

from opentelemetry.trace import SpanKind

from kitobs.tracing._api import Counter, Exporter, Logger, Processor, Propagator, Sampler
from kitobs.tracing._span import Span, current_ids, current_sampled_ids
from kitobs.tracing._tracer import Tracer

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
