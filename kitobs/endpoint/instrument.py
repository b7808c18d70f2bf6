"""Logging, metrics and tracing of an endpoint together: one middleware and one decorator.

`instrumenting` chains the three endpoint middlewares in this order, outermost first:

1. tracing (`kitobs.endpoint.tracing`): one span per call, named after the endpoint, made
   current, failed on an exception or a business error;
2. logging (`kitobs.endpoint.logging`): one line per call with ``endpoint``, ``duration``,
   ``outcome`` and ``error``; it runs inside the span, so the line carries the trace ids;
3. metrics (`kitobs.endpoint.metrics`): ``kitobs_endpoint_duration_seconds{endpoint,outcome}``,
   observed inside the span too, so an exemplar points at the call's trace.

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

import functools
import inspect
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

import wrapt

from kitobs.endpoint import Endpoint, Middleware, chain, name_of
from kitobs.endpoint.metrics import metrics_middleware

if TYPE_CHECKING:
    from kitobs.kit import Kit

__all__ = ["instrumenting", "instrument"]

_F = TypeVar("_F", bound=Callable[..., Any])


def instrumenting(kit: Kit, *, name: str | None = None) -> Middleware:
    """instrumenting applies tracing, logging and metrics, in that order, e.g. ``(kit)(ep)``.

    *name* names every endpoint it wraps (labels, span name, log key); by default each endpoint's
    own name.
    """
    # The three middlewares come from their own modules; imported here so that importing this
    # module does not pull in the tracing and log packages until a Kit is used.
    from kitobs.endpoint.logging import logging_middleware
    from kitobs.endpoint.tracing import tracing_middleware

    return chain(
        tracing_middleware(kit.tracer, name=name),
        logging_middleware(kit.logger, name=name),
        metrics_middleware(kit.metrics, name=name),
    )


def _call(request: tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]) -> Any:
    # The endpoint behind the middlewares: the request is (function, args, kwargs).
    fn, args, kwargs = request
    return fn(*args, **kwargs)


async def _acall(request: tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]) -> Any:
    fn, args, kwargs = request
    return await fn(*args, **kwargs)


class _Wrapper:
    # wrapt's wrapper: builds the instrumented endpoint once (at decoration with an explicit
    # Kit, at the first call with the default one) and routes every call through it.
    __slots__ = ("_coroutine", "_endpoint", "_kit", "_lock", "_name", "_target")

    def __init__(self, target: Callable[..., Any], kit: Kit | None, name: str) -> None:
        self._target = target
        self._kit = kit
        self._name = name
        coroutine = inspect.iscoroutinefunction(target)
        self._coroutine = coroutine
        self._lock = threading.Lock()
        self._endpoint: Endpoint | None = None
        if kit is not None:
            self._endpoint = self._build(kit)

    def _build(self, kit: Kit) -> Endpoint:
        inner: Any = functools.partial(_acall if self._coroutine else _call)
        # The logging middleware names the caller by unwrapping: point it at the user's function.
        inner.__wrapped__ = self._target
        return instrumenting(kit, name=self._name)(inner)

    def _resolve(self) -> Endpoint:
        with self._lock:
            if self._endpoint is None:
                from kitobs.kit import default

                self._endpoint = self._build(default())
            return self._endpoint

    def __call__(
        self,
        wrapped: Callable[..., Any],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        endpoint = self._endpoint
        if endpoint is None:
            endpoint = self._resolve()
        return endpoint((wrapped, args, kwargs))


def _decorate(fn: _F, kit: Kit | None, name: str | None) -> _F:
    target: Any = fn.__func__ if isinstance(fn, classmethod | staticmethod) else fn
    wrapper = _Wrapper(target, kit, name or name_of(target))
    return cast(_F, wrapt.FunctionWrapper(fn, wrapper))


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
    unchanged after being recorded. See `instrumenting` for the order of the layers.
    """
    if (fn_or_kit is not None and callable(fn_or_kit)) or isinstance(
        fn_or_kit, classmethod | staticmethod
    ):
        return _decorate(cast(Any, fn_or_kit), kit, name)
    chosen = fn_or_kit if fn_or_kit is not None else kit

    def decorator(fn: _F) -> _F:
        return _decorate(fn, chosen, name)

    return decorator
