"""Endpoints and middleware: where kitobs instrumentation attaches, on go-kit's model.

An *endpoint* is one callable from a request to a response, sync or async (an ``async def``
endpoint returns an awaitable). A *middleware* takes an endpoint and returns another that does
something around it: logging, metrics, tracing. `chain` composes middlewares in go-kit's order, the
first listed outermost::

    >>> def double(request):
    ...     return request * 2
    >>> def plus_one(next_endpoint):
    ...     return lambda request: next_endpoint(request) + 1
    >>> def times_ten(next_endpoint):
    ...     return lambda request: next_endpoint(request) * 10
    >>> chain(plus_one, times_ten)(double)(3)
    61

A response can carry a business error, as go-kit's ``Failer``: an object whose ``failed()`` returns
an exception (or None). Middlewares report such a call as ``outcome="business_error"``, apart from
success and from a raised exception; see `outcome`.

`around` is the building block for middlewares that must work on sync and async endpoints alike: it
looks at the endpoint once, at construction, and returns a plain or an ``async`` wrapper.

This module needs only the standard library.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

__all__ = [
    "Endpoint",
    "Middleware",
    "Failer",
    "chain",
    "around",
    "outcome",
    "is_async",
    "name_of",
    "SUCCESS",
    "BUSINESS_ERROR",
    "EXCEPTION",
    "RequestError",
    "exception_outcome",
]

Endpoint = Callable[[Any], Any]
"""Endpoint is a callable from request to response, e.g. ``def sum(req): return req.a + req.b``;
an async endpoint returns an awaitable of the response."""

Middleware = Callable[[Endpoint], Endpoint]
"""Middleware wraps an endpoint in another, e.g. one that logs every call."""

#: ``outcome`` of a call that returned a response that is not a failed `Failer`.
SUCCESS = "success"
#: ``outcome`` of a call whose response is a `Failer` that failed (go-kit's business error).
BUSINESS_ERROR = "business_error"
#: ``outcome`` of a call that raised (other than a `RequestError`, which has its own).
EXCEPTION = "exception"

_S = TypeVar("_S")


class RequestError(Exception):
    """RequestError is a request refused on purpose, e.g. by an auth, rate-limit or breaker check.

    It is not a kitobs failure (those are `kitobs.errors.KitobsError`, raised only while building):
    it is an error an endpoint raises to its caller, carrying how each transport answers it. The
    WSGI and ASGI servers, the framework integrations and the gRPC server map it to its
    *status_code* with its *headers* (``401`` with ``WWW-Authenticate``, ``429`` with
    ``Retry-After``, ``503``), or to its gRPC status name (``"UNAUTHENTICATED"``). Middlewares and
    `kitobs.instrument` record the call under the class's ``outcome`` label value instead of
    ``"exception"``.

    Subclasses set the class attributes; an instance may override *headers*::

        >>> class Limited(RequestError):
        ...     status_code = 429
        ...     grpc_status = "RESOURCE_EXHAUSTED"
        ...     outcome = "limited"
        >>> err = Limited("too many requests", headers={"Retry-After": "1"})
        >>> err.status_code, err.headers["Retry-After"], err.outcome
        (429, '1', 'limited')
    """

    #: HTTP status the server transports answer with.
    status_code: int = 400
    #: Name of the `grpc.StatusCode` the gRPC server answers with.
    grpc_status: str = "FAILED_PRECONDITION"
    #: The ``outcome`` label value of ``kitobs_endpoint_duration_seconds`` for a refused call.
    outcome: str = "rejected"

    def __init__(self, message: str = "", *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers: dict[str, str] = dict(headers) if headers else {}


def exception_outcome(exc: BaseException) -> str:
    """exception_outcome is the outcome of a call that raised *exc*, e.g. ``"exception"``.

    A `RequestError` is recorded under its own ``outcome`` (``"limited"``, ``"rejected"``, ...).
    """
    if isinstance(exc, RequestError):
        kind = exc.outcome
        return kind if isinstance(kind, str) else EXCEPTION
    return EXCEPTION


class Failer(Protocol):
    """Failer is a response that may carry a business error, e.g. ``SumResponse(err=Overflow())``.

    ``failed()`` returns the error, or None when the call succeeded.
    """

    def failed(self) -> BaseException | None:
        """failed returns the business error of this response, or None when it succeeded."""


def chain(outer: Middleware, *others: Middleware) -> Middleware:
    """chain composes middlewares, the first outermost, e.g. ``chain(logging, metrics)(ep)``."""
    middlewares = (outer, *others)

    def composed(endpoint: Endpoint) -> Endpoint:
        for middleware in reversed(middlewares):
            endpoint = middleware(endpoint)
        return endpoint

    return composed


def outcome(response: Any, exc: BaseException | None) -> tuple[str, BaseException | None]:
    """outcome classifies a call, e.g. ``("business_error", err)`` for a failed `Failer` response.

    Returns ``(SUCCESS, None)``, ``(BUSINESS_ERROR, err)`` or ``(EXCEPTION, exc)``; a raised
    `RequestError` gives its own outcome (see `exception_outcome`).
    """
    if exc is not None:
        return exception_outcome(exc), exc
    failed = getattr(response, "failed", None)
    if failed is not None and callable(failed):
        try:
            err = failed()
        except Exception as failing:  # a broken failed() must not break the caller
            return BUSINESS_ERROR, failing
        if err is not None:
            return BUSINESS_ERROR, err
    return SUCCESS, None


#: Response types that are never a `Failer` (they have no ``failed`` method): a call answered
#: with one succeeded, which the middlewares know without a lookup.
_PLAIN: frozenset[type] = frozenset((int, float, str, bytes, bool, dict, list, tuple))


def is_async(endpoint: Callable[..., Any]) -> bool:
    """is_async tells whether calling *endpoint* returns an awaitable, e.g. an ``async def``."""
    target: Any = endpoint
    while isinstance(target, functools.partial):
        target = target.func
    if inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
        getattr(target, "__call__", None)  # noqa: B004 - an instance with an async __call__
    ):
        return True
    return bool(getattr(target, "_kitobs_async", False))


def name_of(endpoint: Callable[..., Any]) -> str:
    """name_of gives an endpoint's name for labels and spans, e.g. ``"sum"`` or ``"Svc.sum"``."""
    target: Any = endpoint
    while isinstance(target, functools.partial):
        if isinstance(vars(target).get("__qualname__"), str):
            break  # a middleware's wrapper that carries its endpoint's name (_copy_name)
        target = target.func
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None)
    if not isinstance(name, str):
        name = type(target).__qualname__
    return name.replace(".<locals>", "")


def around(
    endpoint: Endpoint,
    start: Callable[[Any], _S],
    finish: Callable[[_S, Any, BaseException | None], None],
) -> Endpoint:
    """around wraps *endpoint* so that *start* runs before each call and *finish* after it.

    ``start(request)`` returns a state handed to ``finish(state, response, exc)``, where exactly one
    of *response* and *exc* is meaningful (*exc* is None on return). The exception, if any, is
    re-raised unchanged after *finish*. Decided once: an async endpoint gets an ``async`` wrapper
    whose *start* and *finish* run in the awaiting task, so context variables set in *start* are
    visible inside the endpoint. `asyncio.CancelledError` counts as an exception.
    """
    if is_async(endpoint):

        async def async_wrapper(request: Any) -> Any:
            state = start(request)
            try:
                response = await endpoint(request)
            except BaseException as exc:
                finish(state, None, exc)
                raise
            finish(state, response, None)
            return response

        async_wrapper._kitobs_async = True  # type: ignore[attr-defined]
        _copy_name(async_wrapper, endpoint)
        return async_wrapper

    def wrapper(request: Any) -> Any:
        state = start(request)
        try:
            response = endpoint(request)
        except BaseException as exc:
            finish(state, None, exc)
            raise
        finish(state, response, None)
        return response

    _copy_name(wrapper, endpoint)
    return wrapper


def _copy_name(wrapper: Callable[..., Any], endpoint: Callable[..., Any]) -> None:
    # Keep the endpoint's name and its definition site, so names and callers stay right through
    # any number of middlewares.
    for attr in ("__name__", "__qualname__", "__doc__", "__module__"):
        value = getattr(endpoint, attr, None)
        if value is not None:
            with contextlib.suppress(AttributeError, TypeError):
                setattr(wrapper, attr, value)
    wrapper.__wrapped__ = endpoint  # type: ignore[attr-defined]
