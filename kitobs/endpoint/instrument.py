"""Logging, metrics and tracing of an endpoint together: one middleware and one decorator.

`instrumenting` records three things per call, in this order, outermost first:

1. tracing: one span per call, named after the endpoint, made current, failed on an exception
   or a business error, with the attribute ``kitobs.outcome``;
2. logging: one line per call with ``endpoint``, ``duration``, ``outcome`` and ``error``; it is
   written inside the span, so the line carries the trace ids;
3. metrics: ``kitobs_endpoint_duration_seconds{endpoint,outcome}``, observed inside the span too,
   so an exemplar points at the call's trace.

What it records is what `kitobs.endpoint.tracing`, `kitobs.endpoint.logging` and
`kitobs.endpoint.metrics` record when chained in that order, but it runs as one wrapper: the
span, the bound logger and the three metric children are fixed when the endpoint is wrapped,
and a call is one Python frame around the endpoint (two clock reads, one span, one ``observe``,
one log line). The log line and the metric both time the endpoint itself.

`instrument` applies the same to an existing function or method in place, keeping its signature,
name, docstring and ``inspect`` behaviour (it is a `wrapt` proxy)::

    @instrument                      # the process-wide default Kit, resolved at the first call
    def charge(order_id: str) -> Receipt: ...

    @instrument(kit, name="billing.charge")
    async def charge(order_id: str) -> Receipt: ...

Sync and async functions, methods, class- and static methods all work (an ``async def`` stays a
coroutine function). Exceptions pass through unchanged, after being recorded. Generators are
instrumented as plain calls: the call ends when the generator object is returned.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

import wrapt

from kitobs import contract
from kitobs.endpoint import (
    _PLAIN,
    BUSINESS_ERROR,
    EXCEPTION,
    SUCCESS,
    Endpoint,
    Middleware,
    _copy_name,
    is_async,
    name_of,
    outcome,
)
from kitobs.endpoint.logging import _emitters, _error_text
from kitobs.endpoint.tracing import _OUTCOME, _mark

if TYPE_CHECKING:
    from kitobs.kit import Kit
    from kitobs.tracing import Span

__all__ = ["instrumenting", "instrument"]

_F = TypeVar("_F", bound=Callable[..., Any])
# Durations are whole nanoseconds in seconds: exact at the clock's resolution, and a float with
# few digits, which the log line writes in about half the time of a difference of two floats.
_clock = time.perf_counter_ns

#: A fused wrapper for any signature: ``call(callee, *args, **kwargs)`` calls and records.
_AnyCall = Callable[..., Any]


class _Recorder:
    # Everything one instrumented endpoint records with, bound once. The success path of a call
    # reads these into closure cells (see _sync_any and _async_any); the rarer outcomes come here.
    __slots__ = ("business", "done", "error", "exception", "name", "ok", "span", "success")

    def __init__(self, kit: Kit, name: str, site_of: Callable[..., Any]) -> None:
        # Declared first: a provider that cannot declare the metric fails the build here.
        duration = kit.metrics.declare(contract.ENDPOINT_DURATION)
        self.success = duration.labels(name, SUCCESS).observe
        self.business = duration.labels(name, BUSINESS_ERROR).observe
        self.exception = duration.labels(name, EXCEPTION).observe
        self.ok, self.error, self.done = _emitters(kit.logger, name, site_of)
        self.span = kit.tracer.span
        self.name = name

    def raised(self, span: Span, elapsed: float, exc: BaseException) -> None:
        # The span itself records the exception when it exits; here the rest, each step on its
        # own so that one failing does not skip the others.
        with contextlib.suppress(Exception):
            span.set_attribute(_OUTCOME, EXCEPTION)
        with contextlib.suppress(Exception):
            self.exception(elapsed)
        with contextlib.suppress(Exception):
            self.error("duration", elapsed, "outcome", EXCEPTION, "error", _error_text(exc))

    def settle(self, span: Span, elapsed: float, response: Any) -> None:
        # A response that might be a `kitobs.endpoint.Failer`: failed() is called once.
        kind, err = outcome(response, None)
        with contextlib.suppress(Exception):
            _mark(span, err)
        with contextlib.suppress(Exception):
            (self.success if err is None else self.business)(elapsed)
        if err is None:
            self.ok("duration", elapsed, "outcome", SUCCESS)
        else:
            self.ok("duration", elapsed, "outcome", kind, "error", _error_text(err))


# The two wrappers below differ only in whether the call is awaited. Each takes the callee
# first (the middleware binds its endpoint, the decorator its function, wrapt a bound method)
# and is written out, not shared through a helper, because a call saved is a measurable share
# of the whole cost. Recording never raises into the caller: the excepts around it only matter
# for a misbehaving logger or backend.


def _sync_any(rec: _Recorder) -> _AnyCall:
    span, name, success, done = rec.span, rec.name, rec.success, rec.done
    raised, settle, clock, plain = rec.raised, rec.settle, _clock, _PLAIN

    def call(callee: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        with span(name) as current:
            begin = clock()
            try:
                response = callee(*args, **kwargs)
            except BaseException as exc:
                raised(current, (clock() - begin) / 1e9, exc)
                raise
            elapsed = (clock() - begin) / 1e9
            try:
                if response is None or type(response) in plain:
                    current.set_attribute(_OUTCOME, SUCCESS)
                    success(elapsed)
                    done(elapsed, SUCCESS)
                else:
                    settle(current, elapsed, response)
            except Exception:
                pass
        return response

    return call


def _async_any(rec: _Recorder) -> _AnyCall:
    span, name, success, done = rec.span, rec.name, rec.success, rec.done
    raised, settle, clock, plain = rec.raised, rec.settle, _clock, _PLAIN

    async def call(callee: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        with span(name) as current:
            begin = clock()
            try:
                response = await callee(*args, **kwargs)
            except BaseException as exc:
                raised(current, (clock() - begin) / 1e9, exc)
                raise
            elapsed = (clock() - begin) / 1e9
            try:
                if response is None or type(response) in plain:
                    current.set_attribute(_OUTCOME, SUCCESS)
                    success(elapsed)
                    done(elapsed, SUCCESS)
                else:
                    settle(current, elapsed, response)
            except Exception:
                pass
        return response

    return call


def instrumenting(kit: Kit, *, name: str | None = None) -> Middleware:
    """instrumenting applies tracing, logging and metrics, in that order, e.g. ``(kit)(ep)``.

    *name* names every endpoint it wraps (labels, span name, log key); by default each endpoint's
    own name. The metric is declared when an endpoint is wrapped, so a provider that cannot
    declare it raises `kitobs.errors.ConfigError` then, not on a call.
    """

    def middleware(endpoint: Endpoint) -> Endpoint:
        rec = _Recorder(kit, name or name_of(endpoint), endpoint)
        # A partial is a C call: the endpoint is reached through the one Python frame of `call`.
        wrapper = partial(_async_any(rec) if is_async(endpoint) else _sync_any(rec), endpoint)
        _copy_name(wrapper, endpoint)
        return wrapper

    return middleware


def _fused(kit: Kit, target: Callable[..., Any], name: str, coroutine: bool) -> _AnyCall:
    rec = _Recorder(kit, name, target)
    return _async_any(rec) if coroutine else _sync_any(rec)


def _lazy(target: Callable[..., Any], name: str, coroutine: bool) -> _AnyCall:
    # For ``@instrument`` without a Kit: the default is looked up at the first call (it may be
    # set after decoration), then every call goes straight to the fused wrapper.
    lock = threading.Lock()
    built: _AnyCall | None = None

    def call(callee: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        nonlocal built
        fused = built
        if fused is None:
            with lock:
                if built is None:
                    from kitobs.kit import default

                    built = _fused(default(), target, name, coroutine)
                fused = built
        return fused(callee, *args, **kwargs)

    return call


def _decorate(fn: _F, kit: Kit | None, name: str | None) -> _F:
    target: Any = fn.__func__ if isinstance(fn, classmethod | staticmethod) else fn
    chosen = name or name_of(target)
    coroutine = inspect.iscoroutinefunction(target)
    call = (
        _lazy(target, chosen, coroutine) if kit is None else _fused(kit, target, chosen, coroutine)
    )

    def through_wrapt(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        # A method called through its instance or class: wrapt binds it, then calls this.
        return call(wrapped, *args, **kwargs)

    # A class of its own per decorated function, whose __call__ goes straight to the fused
    # wrapper: calling a plain function then costs no wrapt frame and no (args, kwargs) packing.
    # The instance is ignored, as for any callable decorated after binding: it is called as is.
    cls = type(
        "_Instrumented",
        (_Instrumented,),
        {"__slots__": (), "__call__": staticmethod(partial(call, fn))},
    )
    return cast(_F, cls(fn, through_wrapt))


class _Instrumented(wrapt.FunctionWrapper):  # type: ignore[type-arg]
    # The base of the per-function classes `_decorate` makes. Methods go through wrapt's bound
    # wrapper, named here because a subclass without it makes wrapt look it up and fail.
    __slots__ = ()
    __bound_function_wrapper__ = wrapt.BoundFunctionWrapper


@overload
def instrument(fn: _F, /) -> _F: ...
@overload
def instrument(kit: Kit | None = None, /, *, name: str | None = None) -> Callable[[_F], _F]: ...
@overload
def instrument(*, kit: Kit | None = None, name: str | None = None) -> Callable[[_F], _F]: ...


def instrument(fn_or_kit: Any = None, /, *, kit: Kit | None = None, name: str | None = None) -> Any:
    """instrument logs, counts and traces every call of a function, e.g. ``@instrument(kit)``.

    Forms: ``@instrument`` (the process-wide `kitobs.kit.default`, resolved at the first call),
    ``@instrument(kit)``, ``@instrument(kit=kit, name="orders.get")``. The decorated function
    keeps its signature, name, docstring and ``inspect`` behaviour; its exceptions propagate
    unchanged after being recorded. See `instrumenting` for what is recorded, in which order.
    """
    if (fn_or_kit is not None and callable(fn_or_kit)) or isinstance(
        fn_or_kit, classmethod | staticmethod
    ):
        return _decorate(cast(Any, fn_or_kit), kit, name)
    chosen = fn_or_kit if fn_or_kit is not None else kit

    def decorator(fn: _F) -> _F:
        return _decorate(fn, chosen, name)

    return decorator
