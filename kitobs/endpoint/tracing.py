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

from typing import TYPE_CHECKING, Any

from opentelemetry.trace import SpanKind

from kitobs.endpoint import (
    BUSINESS_ERROR,
    EXCEPTION,
    SUCCESS,
    Endpoint,
    Middleware,
    around,
    name_of,
)

if TYPE_CHECKING:
    from kitobs.tracing import Span, Tracer

__all__ = ["tracing_middleware"]

_OUTCOME = "kitobs.outcome"


class _Start:
    # The start step of `around`: the span's name and kind are fixed when the endpoint is wrapped.
    __slots__ = ("_kind", "_name", "_span")

    def __init__(self, tracer: Tracer, name: str, kind: SpanKind) -> None:
        self._span = tracer.span
        self._name = name
        self._kind = kind

    def __call__(self, request: Any) -> Span:
        return self._span(self._name, kind=self._kind).__enter__()


def _finish(span: Span, response: Any, exc: BaseException | None) -> None:
    if exc is not None:
        span.set_attribute(_OUTCOME, EXCEPTION)
        span.__exit__(type(exc), exc, exc.__traceback__)
        return
    failed = getattr(response, "failed", None)
    err: BaseException | None = None
    if failed is not None and callable(failed):
        try:
            err = failed()
        except Exception as failing:  # a broken failed() is a business error, not ours to raise
            err = failing
    if err is None:
        span.set_attribute(_OUTCOME, SUCCESS)
    else:
        span.set_attribute(_OUTCOME, BUSINESS_ERROR)
        span.fail(err, escaped=False)
    span.__exit__(None, None, None)


def tracing_middleware(
    tracer: Tracer, *, name: str | None = None, kind: SpanKind = SpanKind.INTERNAL
) -> Middleware:
    """tracing_middleware traces every call, e.g. ``chain(tracing_middleware(tracer), ...)(ep)``.

    *name* names the span of every endpoint this middleware wraps; by default each endpoint's own
    name (`kitobs.endpoint.name_of`). *kind* is the span kind, INTERNAL by default (the transport's
    span is the SERVER one).
    """

    def middleware(endpoint: Endpoint) -> Endpoint:
        return around(endpoint, _Start(tracer, name or name_of(endpoint), kind), _finish)

    return middleware
