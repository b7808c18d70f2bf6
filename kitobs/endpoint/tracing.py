"""The tracing middleware: one span per endpoint call, named after the endpoint.

`tracing_middleware` starts a span around every call and makes it current for the call, so spans
and log lines inside the endpoint belong to it. A call that raises ends the span with ERROR status
and an ``exception`` event; a call whose response is a failed `kitobs.endpoint.Failer` (a business
error) ends it with ERROR status and the error as description. Every span gets the attribute
``kitobs.outcome`` (``success``, ``business_error`` or ``exception``). Sync and async endpoints
both work: for an ``async def`` endpoint the span is current in the awaiting task.

Example::

    >>> from kitobs.tracing import Tracer, current_ids
    >>> tracer = Tracer()
    >>> def lookup(request):
    ...     return current_ids() is not None
    >>> tracing_middleware(tracer)(lookup)("id-7")
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from opentelemetry.trace import SpanKind

from kitobs.endpoint import Middleware
from kitobs.endpoint._record import OUTCOME_ATTRIBUTE, mark, recording

if TYPE_CHECKING:
    from kitobs.tracing import Tracer

__all__ = ["tracing_middleware"]

# The names other kitobs modules read here before the recorder had its own module.
_OUTCOME = OUTCOME_ATTRIBUTE
_mark = mark


def tracing_middleware(
    tracer: Tracer, *, name: str | None = None, kind: SpanKind = SpanKind.INTERNAL
) -> Middleware:
    """tracing_middleware traces every call, e.g. ``chain(tracing_middleware(tracer), ...)(ep)``.

    *name* names the span of every endpoint this middleware wraps; by default each endpoint's own
    name (`kitobs.endpoint.name_of`). *kind* is the span kind, INTERNAL by default (the transport's
    span is the SERVER one). It records through the recorder `kitobs.instrument` uses, so the
    spans are the same.
    """
    return recording(name, tracer=tracer, kind=kind)
