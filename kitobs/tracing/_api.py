"""The small interfaces of kitobs.tracing: what a sampler, processor, exporter, propagator,
drop counter and logger must provide.

They are defined here, apart from the package face, so that the implementations beside them
(`kitobs.tracing.sampler`, `kitobs.tracing.propagation`, the tracer) can import them without
importing `kitobs.tracing`, which imports those implementations. Import them from
`kitobs.tracing`, their public home.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from opentelemetry.context.context import Context

    from kitobs.tracing._span import Span

__all__ = ["Sampler", "Processor", "Exporter", "Propagator", "Counter", "Logger"]


class Sampler(Protocol):
    """Sampler decides whether a new span is sampled, e.g. `kitobs.tracing.sampler.TraceIdRatio`.

    *parent_sampled* is the parent's sampled flag, or None for a root span.
    """

    def sample(self, trace_id: int, parent_sampled: bool | None) -> bool:
        """sample tells whether the span with *trace_id* is recorded and exported."""


class Processor(Protocol):
    """Processor receives every ended sampled span, e.g. the batching sender in front of Zipkin.

    ``on_end`` is on the caller's hot path: it must return quickly and never raise or block.
    ``shutdown`` sends what is queued, waiting at most its configured timeout.
    """

    def on_end(self, span: Span) -> None:
        """on_end takes an ended sampled span, without blocking or raising."""

    def flush(self, timeout: float | None = None) -> bool:
        """flush exports what is queued, waiting at most *timeout* seconds; True if all went."""

    def shutdown(self) -> None:
        """shutdown flushes and stops; spans ended later are dropped and counted."""


class Exporter(Protocol):
    """Exporter sends a batch of ended spans somewhere, e.g. `kitobs.tracing.zipkin.Exporter`.

    It runs on the processor's background thread, may take up to *timeout* seconds and raises on
    failure; the processor counts the batch as dropped and logs the error.
    """

    def export(self, spans: Sequence[Span], timeout: float) -> None:
        """export sends *spans* within *timeout* seconds, raising on failure."""


class Propagator(Protocol):
    """Propagator writes and reads one header format, e.g. W3C ``traceparent``.

    *carrier* is a headers mapping; names are matched case-insensitively when reading.
    """

    def inject(self, carrier: MutableMapping[str, str], context: Context) -> None:
        """inject writes *context*'s span into the *carrier* headers."""

    def extract(self, carrier: Mapping[str, str], context: Context) -> Context:
        """extract reads a span context from *carrier* into a copy of *context*."""


class Counter(Protocol):
    """Counter counts dropped spans, e.g. ``provider.dropped("spans", "queue_full")``."""

    def add(self, delta: float) -> None:
        """add counts *delta* more dropped spans."""


class Logger(Protocol):
    """Logger is `kitobs.log.Logger`'s shape: ``log("msg", "spans dropped", "count", 3)``."""

    def log(self, *keyvals: object) -> None:
        """log writes one record of alternating keys and values."""
