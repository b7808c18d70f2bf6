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
    _PLAIN,
    BUSINESS_ERROR,
    SUCCESS,
    Endpoint,
    Middleware,
    _copy_name,
    exception_outcome,
    is_async,
    name_of,
    outcome,
)

if TYPE_CHECKING:
    from kitobs.tracing import Span, Tracer

__all__ = ["tracing_middleware"]

_OUTCOME = "kitobs.outcome"
_INTERNAL = SpanKind.INTERNAL


def _mark(span: Span, err: BaseException | None) -> None:
    # A returned call: success, or (a failed `Failer`) a business error, which sets ERROR status
    # and an event that says it did not escape. `kitobs.endpoint.instrument` marks spans here too.
    if err is None:
        span.set_attribute(_OUTCOME, SUCCESS)
    else:
        span.set_attribute(_OUTCOME, BUSINESS_ERROR)
        span.fail(err, escaped=False)


def tracing_middleware(
    tracer: Tracer, *, name: str | None = None, kind: SpanKind = SpanKind.INTERNAL
) -> Middleware:
    """tracing_middleware traces every call, e.g. ``chain(tracing_middleware(tracer), ...)(ep)``.

    *name* names the span of every endpoint this middleware wraps; by default each endpoint's own
    name (`kitobs.endpoint.name_of`). *kind* is the span kind, INTERNAL by default (the transport's
    span is the SERVER one).
    """

    def middleware(endpoint: Endpoint) -> Endpoint:
        # Written out rather than built on `kitobs.endpoint.around`: a span per call is the whole
        # cost of this middleware, and `with` plus one wrapper frame is the cheapest way to run it.
        span_name = name or name_of(endpoint)
        start = tracer.span
        internal = kind is _INTERNAL  # the default kind needs no keyword argument per call
        if is_async(endpoint):

            async def async_wrapper(request: Any) -> Any:
                with start(span_name) if internal else start(span_name, kind=kind) as span:
                    try:
                        response = await endpoint(request)
                    except BaseException as exc:
                        span.set_attribute(_OUTCOME, exception_outcome(exc))
                        raise  # the span's __exit__ records it: ERROR and an exception event
                    _mark(span, outcome(response, None)[1])
                return response

            async_wrapper._kitobs_async = True  # type: ignore[attr-defined]
            _copy_name(async_wrapper, endpoint)
            return async_wrapper

        def wrapper(request: Any) -> Any:
            with start(span_name) if internal else start(span_name, kind=kind) as span:
                try:
                    response = endpoint(request)
                except BaseException as exc:
                    span.set_attribute(_OUTCOME, exception_outcome(exc))
                    raise  # the span's __exit__ records it: ERROR and an exception event
                if response is None or type(response) in _PLAIN:
                    span.set_attribute(_OUTCOME, SUCCESS)
                else:
                    _mark(span, outcome(response, None)[1])
            return response

        _copy_name(wrapper, endpoint)
        return wrapper

    return middleware
