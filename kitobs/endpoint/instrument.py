"""Logging, metrics and tracing of an endpoint together: one middleware and one decorator.

`instrumenting` records three things per call, in this order, outermost first:

1. tracing: one span per call, named after the endpoint, made current, failed on an exception
   or a business error, with the attribute ``kitobs.outcome``;
2. logging: one line per call with ``endpoint``, ``duration``, ``outcome`` and ``error``; it is
   written inside the span, so the line carries the trace ids;
3. metrics: ``kitobs_endpoint_duration_seconds{endpoint,outcome}``, observed inside the span too,
   so an exemplar points at the call's trace.

It records through the same recorder as `kitobs.endpoint.tracing`, `kitobs.endpoint.logging`
and `kitobs.endpoint.metrics` (`kitobs.endpoint._record`), so it records what those three
record when chained in that order, but as one wrapper: the span, the bound logger and the three
metric children are fixed when the endpoint is wrapped, and a call is one Python frame around
the endpoint (two clock reads, one span, one ``observe``, one log line). The log line and the
metric both time the endpoint itself.

`instrument` applies the same to an existing function or method in place, keeping its signature,
name, docstring and ``inspect`` behaviour (it is a `wrapt` proxy)::

    @instrument                      # the process-wide default Kit, resolved at the first call
    def charge(order_id: str) -> Receipt: ...

    @instrument(kit, name="billing.charge")
    async def charge(order_id: str) -> Receipt: ...

Sync and async functions, methods, class- and static methods all work (an ``async def`` stays a
coroutine function). Exceptions pass through unchanged, after being recorded.

Generator and async generator functions are timed over their whole iteration: the span starts
at the first ``next`` (or ``__anext__``) and ends, with the log line and the observation, when
the generator is exhausted, raises, or is closed; a generator that is never iterated records
nothing. The span is current while the generator's body runs, step by step, and never while the
consumer's code runs between items, so lines the body logs carry the span's ids and the
consumer's do not. An exception raised in the body is recorded as ``outcome="exception"``
(including one thrown in with ``throw`` that the body lets escape); a generator closed early,
by ``close()``, ``break`` or garbage collection, records ``outcome="success"``: stopping early is
the consumer's choice, not a failure. The duration includes the consumer's time between items.
Items and the return value are not checked for business errors. Which kind a function is, is
decided when it is decorated.
"""

from __future__ import annotations

import inspect
import threading
import time
import types
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

import wrapt

from kitobs import _otel_context as _context
from kitobs.endpoint import (
    Middleware,
    name_of,
)
from kitobs.endpoint._record import Recorder, call_wrapper, recording

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Generator

    from opentelemetry.context.context import Context

    from kitobs.kit import Kit
    from kitobs.tracing import Span

__all__ = ["instrumenting", "instrument"]

_F = TypeVar("_F", bound=Callable[..., Any])
# Durations are whole nanoseconds in seconds: exact at the clock's resolution, and a float with
# few digits, which the log line writes in about half the time of a difference of two floats.
_clock = time.perf_counter_ns

#: A fused wrapper for any signature: ``call(callee, *args, **kwargs)`` calls and records.
_AnyCall = Callable[..., Any]
#: Builds the fused wrapper of one kind of function (plain, coroutine, generator) from a recorder.
_Builder = Callable[[Recorder], _AnyCall]


def _sync_any(rec: Recorder) -> _AnyCall:
    return call_wrapper(rec, False)


def _async_any(rec: Recorder) -> _AnyCall:
    return call_wrapper(rec, True)


# Generators: the wrapper is itself a generator that steps the decorated one, attaching the
# span's context around each step (send, throw, close) and detaching it before an item goes to
# the consumer. The span starts at the first step, not at the call that made the generator.


def _restore(token: Any) -> None:
    # As a span's exit: a context that cannot be restored (a step run in another context) is
    # left as it is rather than raising into the consumer.
    try:  # noqa: SIM105 - as in Span.__exit__
        _context.detach(token)
    except (ValueError, RuntimeError):
        pass


def _generator_any(rec: Recorder) -> _AnyCall:
    def call(callee: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        # The call makes the generator (binding errors raise here, as unwrapped); nothing runs.
        gen = callee(*args, **kwargs)
        stepped = cast("types.GeneratorType[Any, Any, Any]", _stepped(rec, gen))
        stepped.__name__, stepped.__qualname__ = gen.__name__, gen.__qualname__  # for repr
        return stepped

    return call


def _stepped(rec: Recorder, gen: Generator[Any, Any, Any]) -> Generator[Any, Any, Any]:
    span = cast("Callable[[str], Span]", rec.start_span)(rec.name)  # a Kit always traces
    scope: Context = _context.with_span(span)
    attach, detach, ended = _context.attach, _restore, rec.ended
    send, throw = gen.send, gen.throw
    step: Callable[[Any], Any] = send
    arg: Any = None
    begin = _clock()
    while True:
        token = attach(scope)
        try:
            item = step(arg)
        except StopIteration as stop:
            ended(span, begin, None)
            return stop.value
        except BaseException as exc:
            ended(span, begin, exc)
            raise
        finally:
            detach(token)
        try:
            arg = yield item
            step = send
        except GeneratorExit:  # close(), or garbage collection: close the body too
            token = attach(scope)
            try:
                gen.close()
            except BaseException as exc:
                ended(span, begin, exc)
                raise
            else:
                ended(span, begin, None)
            finally:
                detach(token)
            raise
        except BaseException as exc:  # thrown in by the consumer: into the body
            step, arg = throw, exc


def _async_generator_any(rec: Recorder) -> _AnyCall:
    def call(callee: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        agen = callee(*args, **kwargs)
        stepped = cast("types.AsyncGeneratorType[Any, Any]", _async_stepped(rec, agen))
        stepped.__name__, stepped.__qualname__ = agen.__name__, agen.__qualname__
        return stepped

    return call


async def _async_stepped(rec: Recorder, agen: AsyncGenerator[Any, Any]) -> AsyncGenerator[Any, Any]:
    # As _stepped. The span stays attached across an await inside a step: the consumer is
    # suspended in the same task meanwhile, and other tasks run in contexts of their own.
    span = cast("Callable[[str], Span]", rec.start_span)(rec.name)  # a Kit always traces
    scope: Context = _context.with_span(span)
    attach, detach, ended = _context.attach, _restore, rec.ended
    asend, athrow = agen.asend, agen.athrow
    step: Callable[[Any], Any] = asend
    arg: Any = None
    begin = _clock()
    while True:
        token = attach(scope)
        try:
            item = await step(arg)
        except StopAsyncIteration:
            ended(span, begin, None)
            return
        except BaseException as exc:
            ended(span, begin, exc)
            raise
        finally:
            detach(token)
        try:
            arg = yield item
            step = asend
        except GeneratorExit:  # aclose(), or the event loop finalizing an abandoned generator
            token = attach(scope)
            try:
                await agen.aclose()
            except BaseException as exc:
                ended(span, begin, exc)
                raise
            else:
                ended(span, begin, None)
            finally:
                detach(token)
            raise
        except BaseException as exc:
            step, arg = athrow, exc


def _builder(target: Callable[..., Any]) -> _Builder:
    # Decided once, when decorating: which wrapper a function's calls go through.
    if inspect.isasyncgenfunction(target):
        return _async_generator_any
    if inspect.iscoroutinefunction(target):
        return _async_any
    flags = getattr(getattr(target, "__code__", None), "co_flags", 0)
    if inspect.isgeneratorfunction(target) and not flags & inspect.CO_ITERABLE_COROUTINE:
        return _generator_any  # (a @types.coroutine generator is awaited: a plain call)
    return _sync_any


def instrumenting(kit: Kit, *, name: str | None = None) -> Middleware:
    """instrumenting applies tracing, logging and metrics, in that order, e.g. ``(kit)(ep)``.

    *name* names every endpoint it wraps (labels, span name, log key); by default each endpoint's
    own name. The metric is declared when an endpoint is wrapped, so a provider that cannot
    declare it raises `kitobs.errors.ConfigError` then, not on a call.
    """
    return recording(name, logger=kit.logger, metrics=kit.metrics, tracer=kit.tracer)


def _fused(kit: Kit, target: Callable[..., Any], name: str, build: _Builder) -> _AnyCall:
    return build(Recorder(name, target, logger=kit.logger, metrics=kit.metrics, tracer=kit.tracer))


def _lazy(target: Callable[..., Any], name: str, build: _Builder) -> _AnyCall:
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

                    built = _fused(default(), target, name, build)
                fused = built
        return fused(callee, *args, **kwargs)

    return call


def _decorate(fn: _F, kit: Kit | None, name: str | None) -> _F:
    target: Any = fn.__func__ if isinstance(fn, classmethod | staticmethod) else fn
    chosen = name or name_of(target)
    build = _builder(target)
    call = _lazy(target, chosen, build) if kit is None else _fused(kit, target, chosen, build)

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
def instrument(name: str, /, *, kit: Kit | None = None) -> Callable[[_F], _F]: ...
@overload
def instrument(*, kit: Kit | None = None, name: str | None = None) -> Callable[[_F], _F]: ...


def instrument(fn_or_kit: Any = None, /, *, kit: Kit | None = None, name: str | None = None) -> Any:
    """instrument logs, counts and traces every call of a function, e.g. ``@instrument(kit)``.

    Forms: ``@instrument`` (the process-wide `kitobs.kit.default`, resolved at the first call),
    ``@instrument(kit)``, ``@instrument("orders.get")`` (a name, with the default Kit),
    ``@instrument(kit=kit, name="orders.get")``. The decorated function keeps its signature,
    name, docstring and ``inspect`` behaviour; its exceptions propagate unchanged after being
    recorded. See `instrumenting` for what is recorded, in which order, and the module docstring
    for generators.

    Raises:
        TypeError: at decoration, for anything but these forms (e.g. a Kit and a name twice, an
            object that is not a `kitobs.Kit`, or decorating something that is not callable).
    """
    if isinstance(fn_or_kit, str):
        if name is not None:
            raise TypeError(
                f"instrument() got the name twice ({fn_or_kit!r} and name={name!r}); "
                f"write @instrument(name={name!r})"
            )
        fn_or_kit, name = None, fn_or_kit
    elif (fn_or_kit is not None and callable(fn_or_kit)) or isinstance(
        fn_or_kit, classmethod | staticmethod
    ):
        _check(kit, name)
        return _decorate(cast(Any, fn_or_kit), kit, name)
    if fn_or_kit is not None and kit is not None:
        raise TypeError(
            "instrument() got a Kit twice; write @instrument(kit) or @instrument(kit=kit)"
        )
    chosen = fn_or_kit if fn_or_kit is not None else kit
    _check(chosen, name)

    def decorator(fn: _F) -> _F:
        target: object = fn  # typed callable, but a misuse may hand anything here
        if not callable(target) and not isinstance(target, classmethod | staticmethod):
            raise TypeError(
                f"instrument() decorates a function or method, not {type(fn).__name__} {fn!r}"
            )
        return _decorate(fn, chosen, name)

    return decorator


def _check(kit: object, name: object) -> None:
    # At decoration, so that a misplaced argument fails where it is written, not at a call.
    if kit is not None:
        from kitobs.kit import Kit

        if not isinstance(kit, Kit):
            raise TypeError(
                f"instrument() takes a kitobs.Kit, not {type(kit).__name__} {kit!r}; write "
                '@instrument, @instrument(kit) or @instrument("name"), or pass name= for a name'
            )
    if name is not None and not isinstance(name, str):
        raise TypeError(f"instrument() name must be a str, not {type(name).__name__} {name!r}")
