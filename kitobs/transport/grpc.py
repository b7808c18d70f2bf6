"""kitobs.transport.grpc: interceptors that instrument grpcio servers and clients, sync and aio.

Every call, in all four shapes (unary-unary, unary-stream, stream-unary, stream-stream), gets:

- one observation in ``rpc_server_call_duration_seconds`` (server interceptors) or
  ``rpc_client_call_duration_seconds`` (client interceptors), labelled as the metric contract says:
  ``rpc_system_name="grpc"``, ``rpc_method``, ``rpc_status_code`` and ``error_type``;
- one span, SERVER on the server (its parent extracted from the request metadata) and CLIENT on the
  client (its context injected into the request metadata), named after ``rpc_method``.

Label values, following OpenTelemetry's RPC semantic conventions (release candidate, the version
that renamed ``rpc.grpc.status_code`` to ``rpc.response.status_code``):

- ``rpc_method`` is the fully qualified method without the leading slash: the wire path
  ``/shop.Cart/Add`` becomes ``shop.Cart/Add``. On the server, a method no handler serves becomes
  ``_OTHER`` (and the call is answered ``UNIMPLEMENTED`` as grpcio would), so clients cannot create
  series; the span keeps the original in ``rpc.method_original``.
- ``rpc_status_code`` is the status code *name*, a string: ``OK``, ``NOT_FOUND``,
  ``DEADLINE_EXCEEDED`` (OpenTelemetry's current convention, not the number).
- ``error_type`` is empty (absent) on ``OK``. Otherwise it is the exception's qualified class name
  when the server handler raised (the call ends ``UNKNOWN``, e.g. ``error_type="ValueError"``), or
  when a client call failed before any status (rare), and the status code name for every other
  non-OK status (``error_type="NOT_FOUND"``), on both sides, so ``error_type!=""`` selects every
  call that did not end ``OK``.

Span status: a client span is ERROR for every non-OK status; a server span only for the codes that
are server errors (`SERVER_ERROR_CODES`: ``UNKNOWN``, ``DEADLINE_EXCEEDED``, ``UNIMPLEMENTED``,
``INTERNAL``, ``UNAVAILABLE``, ``DATA_LOSS``), as OpenTelemetry's gRPC conventions say: a
``NOT_FOUND`` is the client's problem, not the server's.

Where the status comes from on the server: a handler that returns ends ``OK`` (or the code it set
with ``context.set_code``); ``context.abort(code, ...)`` ends with that code; any other exception
ends ``UNKNOWN``; a call the client abandoned or whose deadline passed while the handler ran ends
``CANCELLED`` or ``DEADLINE_EXCEEDED`` (the latter also when cut short within 50 ms of the
deadline: the client's cancel at its deadline can overtake the server's own timer). On the client
the status is the one grpcio reports.

Usage::

    server = grpc.server(pool, interceptors=[ServerInterceptor(kit.metrics, tracer=kit.tracer)])
    aio_server = grpc.aio.server(
        interceptors=[AioServerInterceptor(kit.metrics, tracer=kit.tracer)]
    )
    channel = grpc.intercept_channel(
        grpc.insecure_channel(target), ClientInterceptor(kit.metrics, tracer=kit.tracer)
    )
    aio_channel = grpc.aio.insecure_channel(
        target, interceptors=aio_client_interceptors(kit.metrics, tracer=kit.tracer)
    )

Both sides use the request context (`kitobs.endpoint.context`). The server interceptors make one
per call, current while the handler runs (for streaming handlers, while each response is made):
the call's metadata (binary ``-bin`` entries left out), its deadline (from the client's
``grpc-timeout``, as ``context.time_remaining()`` reports it) and ``cancelled``, set when the call
ends or the client cancels. The client interceptors cut each call's timeout to the current
deadline, so it travels on as ``grpc-timeout``; a call made after the deadline passed ends
``DEADLINE_EXCEEDED`` at once, without reaching the server.

For small services and the demo, `serve_endpoints` serves kitobs endpoints over gRPC (unary, with
a `Codec`) and `Client` calls them.

The interceptor classes subclass grpcio's interceptor base classes because grpcio selects
interceptors with ``isinstance``. The interceptors never raise into the call: a failure while
recording is counted in ``kitobs_telemetry_dropped_total`` with ``reason="grpc_error"`` and
``signal="metrics"`` or ``"spans"``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from concurrent import futures
from dataclasses import fields, is_dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

import grpc
import grpc.aio
from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.trace import SpanKind, StatusCode

from kitobs.contract import RPC_CLIENT_CALL_DURATION, RPC_SERVER_CALL_DURATION, otel_attribute
from kitobs.endpoint import Endpoint, is_async
from kitobs.endpoint.context import (
    OUTGOING_METADATA,
    Cancellation,
    LazyMetadata,
    RequestContext,
    attach,
    detach,
)
from kitobs.endpoint.context import current as _current_context

if TYPE_CHECKING:
    from opentelemetry.context.context import Context

    from kitobs.kit import Kit
    from kitobs.metrics import Counter, Histogram, Provider
    from kitobs.tracing import Span, Tracer

__all__ = [
    # Interceptors
    "ServerInterceptor",
    "AioServerInterceptor",
    "ClientInterceptor",
    "aio_client_interceptors",
    # Status and method labels
    "SYSTEM",
    "OTHER_METHOD",
    "SERVER_ERROR_CODES",
    "method_label",
    # Serving and calling endpoints
    "Codec",
    "JSONCodec",
    "StatusError",
    "Server",
    "DEFAULT_SERVICE",
    "serve_endpoints",
    "Client",
]

#: SYSTEM is the ``rpc_system_name`` label value, ``"grpc"``.
SYSTEM = "grpc"
#: OTHER_METHOD is the ``rpc_method`` of a call to a method the server does not serve.
OTHER_METHOD = "_OTHER"
#: SERVER_ERROR_CODES are the status codes that make a SERVER span an error, e.g. ``UNKNOWN``.
SERVER_ERROR_CODES: frozenset[grpc.StatusCode] = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)

_OK = grpc.StatusCode.OK
_UNKNOWN = grpc.StatusCode.UNKNOWN
_CANCELLED = grpc.StatusCode.CANCELLED
_DEADLINE = grpc.StatusCode.DEADLINE_EXCEEDED
_UNIMPLEMENTED = grpc.StatusCode.UNIMPLEMENTED
# A client cancels at its deadline, and that cancel can reach the server just before the
# server's own copy of the deadline (computed on arrival) fires: a call cut short this close to
# its deadline is counted as DEADLINE_EXCEEDED.
_DEADLINE_SLACK = 0.05
_NAMES: dict[Any, str] = {code: code.name for code in grpc.StatusCode}
_ALL_ERROR_CODES = frozenset(code for code in grpc.StatusCode if code is not _OK)

# Attribute names come from the contract, so spans and metric labels never drift apart.
_A_SYSTEM = otel_attribute("rpc_system_name")
_A_METHOD = otel_attribute("rpc_method")
_A_STATUS = otel_attribute("rpc_status_code")
_A_ERROR = otel_attribute("error_type")
_A_ORIGINAL = "rpc.method_original"
_A_ADDRESS = otel_attribute("server_address")
_A_PORT = otel_attribute("server_port")

_perf_counter = time.perf_counter
_attach = otel_context.attach
_detach = otel_context.detach
_set_span_in_context = otel_trace.set_span_in_context
_SERVER = SpanKind.SERVER
_CLIENT = SpanKind.CLIENT
_ERROR = StatusCode.ERROR


def method_label(method: str | bytes) -> str:
    """method_label gives the ``rpc_method`` of a wire path, e.g. ``shop.Cart/Add``.

    Example::

        >>> method_label("/shop.Cart/Add")
        'shop.Cart/Add'
    """
    if isinstance(method, bytes):
        method = method.decode("utf-8", "replace")
    return method[1:] if method.startswith("/") else method


def _error_type(exc: BaseException) -> str:
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _carrier(metadata: Any) -> dict[str, str]:
    # Binary (-bin) metadata values are bytes and never carry trace context.
    if not metadata:
        return {}
    return {key: value for key, value in metadata if type(value) is str}


# -- recording, shared by every interceptor ----------------------------------------------------


class _Method:
    """_Method holds what is bound once per method: the histogram child and span attributes."""

    __slots__ = ("attributes", "children", "histogram", "name")

    def __init__(self, histogram: Histogram, name: str, attributes: dict[str, Any]) -> None:
        self.name = name
        self.histogram = histogram.with_labels(rpc_system_name=SYSTEM, rpc_method=name)
        self.children: dict[tuple[str, str], Histogram] = {}
        self.attributes = {_A_SYSTEM: SYSTEM, _A_METHOD: name, **attributes}

    def observe(self, status: str, error_type: str, seconds: float) -> None:
        key = (status, error_type)
        child = self.children.get(key)
        if child is None:
            # Bounded: 17 codes times the handler's exception classes.
            child = self.children[key] = self.histogram.labels(status, error_type)
        child.observe(seconds)


class _Core:
    """_Core records calls of one side (server or client) into one histogram and one tracer."""

    __slots__ = (
        "dropped_metrics",
        "dropped_spans",
        "error_codes",
        "histogram",
        "methods",
        "pending",
        "tracer",
    )

    def __init__(
        self,
        metrics: Provider,
        histogram: Histogram,
        tracer: Tracer | None,
        error_codes: frozenset[grpc.StatusCode],
    ) -> None:
        self.histogram = histogram
        self.dropped_metrics = metrics.dropped("metrics", "grpc_error")
        self.dropped_spans = metrics.dropped("spans", "grpc_error")
        self.tracer = tracer
        self.error_codes = error_codes
        self.methods: dict[str, _Method] = {}
        # aio clients read the status in a task; keep a reference until it ran.
        self.pending: set[asyncio.Task[None]] = set()

    def method(self, name: str, attributes: dict[str, Any] | None = None) -> _Method:
        state = self.methods.get(name)
        if state is None:
            state = self.methods[name] = _Method(self.histogram, name, attributes or {})
        return state

    def record(
        self,
        call: _Call,
        code: grpc.StatusCode,
        error_type: str,
        exc: BaseException | None,
        details: str | None,
    ) -> None:
        """record observes the duration and ends the span; it never raises."""
        seconds = _perf_counter() - call.begin
        status = _NAMES.get(code) or _NAMES[_UNKNOWN]
        try:
            call.method.observe(status, error_type, seconds)
        except Exception:
            _drop(self.dropped_metrics)
        span = call.span
        if span is None:
            return
        try:
            span.set_attribute(_A_STATUS, status)
            if error_type:
                span.set_attribute(_A_ERROR, error_type)
            if code in self.error_codes:
                if exc is not None and error_type != status:
                    span.record_exception(exc, escaped=True)
                span.set_status(_ERROR, f"{status}: {details}" if details else status)
            if call.scoped:
                # A scoped span restores the context it replaced when it exits.
                call.scoped = False
                span.__exit__(None, None, None)
            else:
                span.end()
        except Exception:
            _drop(self.dropped_spans)


def _drop(counter: Counter) -> None:
    # The drop counter itself failing must not reach the call.
    with contextlib.suppress(Exception):
        counter.add(1.0)


class _Call:
    """_Call is the state of one call in flight; it is also the client's done-callback."""

    __slots__ = ("begin", "context", "core", "done", "method", "scoped", "span")

    def __init__(self, core: _Core, method: _Method, span: Span | None) -> None:
        self.core = core
        self.method = method
        self.span = span
        self.begin = _perf_counter()
        self.scoped = False
        self.context: Context | None = None
        self.done = False

    # Client side: grpcio calls this with the finished call (a grpc.Call / grpc.Future).
    def __call__(self, future: Any) -> None:
        if self.done:
            return
        self.done = True
        exc: BaseException | None = None
        try:
            code = future.code()
        except Exception as failing:  # a call object that cannot report: count it as unknown
            code, exc = _UNKNOWN, failing
        if code is None:
            code = _UNKNOWN
        if exc is None and code is not _OK:
            # exception() raises for a cancelled future; the code says enough then.
            with contextlib.suppress(Exception):
                exc = future.exception()
        self.core.record(self, code, _client_error_type(code, exc), exc, None)

    def aio_done(self, call: Any) -> None:
        """aio_done reads an aio call's status in a task: aio exposes it only as a coroutine."""
        if self.done:
            return
        self.done = True
        try:
            task = asyncio.get_running_loop().create_task(self._aio_finish(call))
        except Exception:
            _drop(self.core.dropped_metrics)
            return
        pending = self.core.pending
        pending.add(task)
        task.add_done_callback(pending.discard)

    async def _aio_finish(self, call: Any) -> None:
        try:
            code = await call.code()
            details = await call.details() if code is not _OK else None
        except Exception as failing:
            self.core.record(self, _UNKNOWN, _error_type(failing), failing, None)
            return
        if code is None:
            code = _UNKNOWN
        self.core.record(self, code, "" if code is _OK else _NAMES[code], None, details)

    def fail(self, exc: BaseException) -> None:
        """fail records a client call that raised before grpcio returned a call object."""
        if self.done:
            return
        self.done = True
        code = _code_of(exc)
        if code is None and _is_cancel(exc):
            self.core.record(self, _CANCELLED, _NAMES[_CANCELLED], exc, None)
        elif code is None:
            self.core.record(self, _UNKNOWN, _error_type(exc), exc, None)
        else:
            self.core.record(self, code, "" if code is _OK else _NAMES[code], exc, None)


def _code_of(exc: BaseException) -> grpc.StatusCode | None:
    code = getattr(exc, "code", None)
    if isinstance(exc, grpc.RpcError) and callable(code):
        try:
            value = code()
        except Exception:
            return None
        return value if isinstance(value, grpc.StatusCode) else None
    return None


def _is_cancel(exc: BaseException) -> bool:
    return isinstance(exc, asyncio.CancelledError | GeneratorExit)


def _client_error_type(code: grpc.StatusCode, exc: BaseException | None) -> str:
    if code is _OK:
        return ""
    if exc is not None and not isinstance(exc, grpc.RpcError):
        return _error_type(exc)  # failed inside grpcio before a status, e.g. serializing
    return _NAMES[code]


# -- server ------------------------------------------------------------------------------------


# grpcio reports a call without a deadline as ~9.2e18 seconds remaining.
_NO_DEADLINE = 1e9


class _CallMetadata(LazyMetadata):
    """_CallMetadata is a call's invocation metadata as context metadata, decoded on first read."""

    __slots__ = ("_context",)

    def __init__(self, context: Any) -> None:
        self._context = context
        self._decoded = None

    def pairs(self) -> Iterable[tuple[str, str]]:
        # Binary (-bin) entries carry bytes: they are left out.
        return (
            (key, value)
            for key, value in (self._context.invocation_metadata() or ())
            if isinstance(value, str)
        )


def _request_context(context: Any, aio: bool) -> RequestContext:
    cancelled = Cancellation()
    deadline = None
    try:
        remaining = context.time_remaining()
        if remaining is not None and remaining < _NO_DEADLINE:
            deadline = time.monotonic() + remaining
        if aio:
            context.add_done_callback(lambda _: cancelled.set())
        else:
            context.add_callback(cancelled.set)
    except Exception:  # a context without these: the handler still runs, without them
        pass
    return RequestContext(deadline, cancelled, _CallMetadata(context))


class _ServerSide:
    """_ServerSide wraps method handlers; shared by the sync and the aio server interceptors."""

    __slots__ = ("aio", "core", "handlers")

    def __init__(self, metrics: Provider, tracer: Tracer | None, *, aio: bool) -> None:
        self.core = _Core(
            metrics,
            metrics.declare(RPC_SERVER_CALL_DURATION),
            tracer,
            SERVER_ERROR_CODES,
        )
        self.aio = aio
        # Per method: the handler grpcio gave us and our wrapper, reused while it is the same.
        self.handlers: dict[str, tuple[Any, Any]] = {}

    def wrap(self, path: str, handler: Any) -> Any:
        if handler is None:
            return self.unknown(path)
        cached = self.handlers.get(path)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(self.core.method(method_label(path)), handler)
        self.handlers[path] = (handler, wrapped)
        return wrapped

    def start(self, method: _Method, context: Any, scoped: bool) -> _Call:
        tracer = self.core.tracer
        if tracer is None:
            return _Call(self.core, method, None)
        try:
            parent = tracer.extract(_carrier(context.invocation_metadata()))
            if scoped:
                span = tracer.span(
                    method.name, kind=_SERVER, attributes=method.attributes, context=parent
                )
                call = _Call(self.core, method, span)
                span.__enter__()
                call.scoped = True
            else:
                span = tracer.start_span(
                    method.name, kind=_SERVER, attributes=method.attributes, context=parent
                )
                call = _Call(self.core, method, span)
                call.context = _set_span_in_context(span, parent)
            return call
        except Exception:
            _drop(self.core.dropped_spans)
            return _Call(self.core, method, None)

    def finish(self, call: _Call, context: Any, exc: BaseException | None) -> None:
        if call.done:
            return
        call.done = True
        try:
            code, error_type, details = (
                _aio_status(context, exc) if self.aio else _sync_status(context, exc)
            )
        except Exception:
            code, error_type, details = _UNKNOWN, _NAMES[_UNKNOWN], None
        self.core.record(call, code, error_type, exc, details)

    # Wrappers are built once per method (not per call): the decision sync/aio, unary/stream
    # and generator/coroutine is made here.
    def _wrap(self, method: _Method, handler: Any) -> Any:
        if handler.unary_unary is not None:
            behavior, make = handler.unary_unary, grpc.unary_unary_rpc_method_handler
            wrapped = self._unary_response(method, behavior)
        elif handler.unary_stream is not None:
            behavior, make = handler.unary_stream, grpc.unary_stream_rpc_method_handler
            wrapped = self._stream_response(method, behavior)
        elif handler.stream_unary is not None:
            behavior, make = handler.stream_unary, grpc.stream_unary_rpc_method_handler
            wrapped = self._unary_response(method, behavior)
        elif handler.stream_stream is not None:
            behavior, make = handler.stream_stream, grpc.stream_stream_rpc_method_handler
            wrapped = self._stream_response(method, behavior)
        else:  # nothing to call: leave it to grpcio
            return handler
        return make(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _unary_response(self, method: _Method, behavior: Callable[..., Any]) -> Any:
        start, finish = self.start, self.finish
        if inspect.iscoroutinefunction(behavior):

            async def aio_handler(request: Any, context: Any) -> Any:
                call = start(method, context, True)
                token = attach(_request_context(context, True))
                try:
                    response = await behavior(request, context)
                except BaseException as exc:
                    finish(call, context, exc)
                    raise
                finally:
                    detach(token)
                finish(call, context, None)
                return response

            return aio_handler

        def handler(request: Any, context: Any) -> Any:
            call = start(method, context, True)
            token = attach(_request_context(context, False))
            try:
                response = behavior(request, context)
            except BaseException as exc:
                finish(call, context, exc)
                raise
            finally:
                detach(token)
            finish(call, context, None)
            return response

        return handler

    def _stream_response(self, method: _Method, behavior: Callable[..., Any]) -> Any:
        start, finish = self.start, self.finish
        if inspect.isasyncgenfunction(behavior):

            async def aio_stream(request: Any, context: Any) -> AsyncIterator[Any]:
                call = start(method, context, False)
                ctx = call.context
                request_context = _request_context(context, True)
                try:
                    responses = behavior(request, context).__aiter__()
                    while True:
                        # The span is current while the handler runs, not while we are suspended.
                        token = _attach(ctx) if ctx is not None else None
                        request_token = attach(request_context)
                        try:
                            item = await responses.__anext__()
                        except StopAsyncIteration:
                            break
                        finally:
                            detach(request_token)
                            if token is not None:
                                _detach(token)
                        yield item
                except BaseException as exc:
                    finish(call, context, exc)
                    raise
                finish(call, context, None)

            return aio_stream
        if inspect.iscoroutinefunction(behavior):  # aio handler writing with context.write
            return self._unary_response(method, behavior)

        def stream(request: Any, context: Any) -> Iterator[Any]:
            call = start(method, context, False)
            ctx = call.context
            request_context = _request_context(context, False)
            try:
                token = _attach(ctx) if ctx is not None else None
                request_token = attach(request_context)
                try:
                    responses = iter(behavior(request, context))
                finally:
                    detach(request_token)
                    if token is not None:
                        _detach(token)
                while True:
                    token = _attach(ctx) if ctx is not None else None
                    request_token = attach(request_context)
                    try:
                        item = next(responses)
                    except StopIteration:
                        break
                    finally:
                        detach(request_token)
                        if token is not None:
                            _detach(token)
                    yield item
            except BaseException as exc:  # GeneratorExit too: the client went away
                finish(call, context, exc)
                raise
            finish(call, context, None)

        return stream

    def unknown(self, path: Any) -> Any:
        """unknown answers a method nobody serves as grpcio does, recorded under ``_OTHER``.

        So clients cannot create series; only the span keeps the raw name (spans may carry
        high-cardinality values, metrics not). Requests stay bytes: there is no deserializer.
        A handler per call, but this is the rare path of a misdirected client.
        """
        method = self.core.method(OTHER_METHOD)
        start, finish, original = self.start, self.finish, method_label(path)
        if self.aio:

            async def aio_unknown(requests: Any, context: Any) -> None:
                call = start(method, context, True)
                if call.span is not None:
                    call.span.set_attribute(_A_ORIGINAL, original)
                try:
                    await context.abort(_UNIMPLEMENTED, "Method not found!")
                except BaseException as exc:
                    finish(call, context, exc)
                    raise

            return grpc.stream_stream_rpc_method_handler(aio_unknown)

        def unknown(requests: Any, context: Any) -> None:
            call = start(method, context, True)
            if call.span is not None:
                call.span.set_attribute(_A_ORIGINAL, original)
            try:
                context.abort(_UNIMPLEMENTED, "Method not found!")
            except BaseException as exc:
                finish(call, context, exc)
                raise

        return grpc.stream_stream_rpc_method_handler(unknown)


def _sync_status(
    context: Any, exc: BaseException | None
) -> tuple[grpc.StatusCode, str, str | None]:
    code = context.code()  # None unless the handler set it or aborted
    if code is not None and code is not _OK:
        return code, _NAMES[code], _details(context)
    if exc is not None and not isinstance(exc, GeneratorExit):
        return _UNKNOWN, _error_type(exc), None
    if exc is not None or not context.is_active():
        # The client left or the deadline passed while the handler ran.
        code = _DEADLINE if context.time_remaining() <= _DEADLINE_SLACK else _CANCELLED
        return code, _NAMES[code], None
    return _OK, "", None


def _aio_status(context: Any, exc: BaseException | None) -> tuple[grpc.StatusCode, str, str | None]:
    code = context.code()
    if code is not None and code is not _OK:
        # Codes from aio contexts may be the numeric cygrpc value in some versions.
        if not isinstance(code, grpc.StatusCode):
            code = _from_number(code)
        return code, _NAMES[code], _details(context)
    if exc is not None and not _is_cancel(exc):
        return _UNKNOWN, _error_type(exc), None
    if exc is not None or context.cancelled():
        remaining = context.time_remaining()
        code = _DEADLINE if remaining is not None and remaining <= _DEADLINE_SLACK else _CANCELLED
        return code, _NAMES[code], None
    return _OK, "", None


def _from_number(value: Any) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code
    return _UNKNOWN


def _details(context: Any) -> str | None:
    try:
        details = context.details()
    except Exception:
        return None
    if isinstance(details, bytes):
        return details.decode("utf-8", "replace")
    return details if isinstance(details, str) else None


class ServerInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]  # grpc is untyped
    """ServerInterceptor instruments a sync grpcio server, e.g. ``server(p, interceptors=[i])``.

    Records ``rpc_server_call_duration_seconds`` and a SERVER span per call, for all four call
    shapes. *tracer* None records metrics only.

    Example::

        >>> from kitobs.metrics import memory
        >>> interceptor = ServerInterceptor(memory.Provider())
    """

    __slots__ = ("_side",)

    def __init__(self, metrics: Provider, *, tracer: Tracer | None = None) -> None:
        self._side = _ServerSide(metrics, tracer, aio=False)

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: Any
    ) -> Any:
        """intercept_service wraps the handler grpcio found for the call's method."""
        return self._side.wrap(handler_call_details.method, continuation(handler_call_details))


class AioServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc is untyped
    """AioServerInterceptor instruments a grpc.aio server, e.g. ``aio.server(interceptors=[i])``.

    As `ServerInterceptor`; async handlers, async generators and ``context.write`` handlers are
    all recorded, and a call whose task is cancelled (client gone, deadline passed) ends
    ``CANCELLED`` or ``DEADLINE_EXCEEDED``.

    Example::

        >>> from kitobs.metrics import memory
        >>> interceptor = AioServerInterceptor(memory.Provider())
    """

    __slots__ = ("_side",)

    def __init__(self, metrics: Provider, *, tracer: Tracer | None = None) -> None:
        self._side = _ServerSide(metrics, tracer, aio=True)

    async def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: Any
    ) -> Any:
        """intercept_service wraps the handler grpcio found for the call's method."""
        handler = await continuation(handler_call_details)
        return self._side.wrap(handler_call_details.method, handler)


# -- client ------------------------------------------------------------------------------------


class _ClientCallDetails(
    collections.namedtuple(
        "_ClientCallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,  # type: ignore[misc]  # grpc is untyped
):
    """_ClientCallDetails is grpcio's call details with our metadata added."""


class _ClientSide:
    """_ClientSide starts client calls: a CLIENT span, its context injected into the metadata."""

    __slots__ = ("core", "peer")

    def __init__(self, metrics: Provider, tracer: Tracer | None, target: str | None) -> None:
        self.core = _Core(
            metrics,
            metrics.declare(RPC_CLIENT_CALL_DURATION),
            tracer,
            _ALL_ERROR_CODES,
        )
        self.peer = _peer_attributes(target)

    def start(self, details: Any, *, aio: bool) -> tuple[_Call, Any]:
        core = self.core
        method = core.methods.get(details.method)
        if method is None:
            # Keyed by the raw path too, so the hot path skips method_label.
            method = core.method(method_label(details.method), self.peer)
            core.methods[details.method] = method
        ctx = _current_context()
        deadline = ctx.deadline
        if deadline is not None:
            # Past the deadline the timeout is negative: grpcio fails the call before sending.
            remaining = deadline - time.monotonic()
            if details.timeout is None or details.timeout > remaining:
                details = _with_details(details, {}, remaining, aio=aio)
        outgoing = ctx.values.get(OUTGOING_METADATA)
        if outgoing:
            details = _with_outgoing(details, outgoing, aio=aio)
        tracer = core.tracer
        if tracer is None:
            return _Call(core, method, None), details
        try:
            span = tracer.start_span(method.name, kind=_CLIENT, attributes=method.attributes)
            carrier: dict[str, str] = {}
            tracer.inject(carrier, _set_span_in_context(span))
            call = _Call(core, method, span)
            return call, _with_details(details, carrier, details.timeout, aio=aio)
        except Exception:
            _drop(core.dropped_spans)
            return _Call(core, method, None), details


def _with_outgoing(details: Any, outgoing: Mapping[str, str], *, aio: bool) -> Any:
    # The context's outgoing metadata, lowercased, under any key the call was not given.
    given = {key.lower() for key, _ in (details.metadata or ())}
    added = {key: value for key, value in outgoing.items() if key.lower() not in given}
    return _with_details(details, added, details.timeout, aio=aio) if added else details


def _with_details(
    details: Any, carrier: dict[str, str], timeout: float | None, *, aio: bool
) -> Any:
    # gRPC metadata keys must be lowercase; B3 writes X-B3-TraceId.
    added = [(key.lower(), value) for key, value in carrier.items()]
    if not added and timeout == details.timeout:
        return details
    existing = details.metadata
    if aio:
        metadata = (
            grpc.aio.Metadata(*(tuple(existing) if existing else ()), *added) if added else existing
        )
        return grpc.aio.ClientCallDetails(
            details.method,
            timeout,
            metadata,
            details.credentials,
            details.wait_for_ready,
        )
    return _ClientCallDetails(
        details.method,
        timeout,
        [*(existing or ()), *added] if added else existing,
        details.credentials,
        getattr(details, "wait_for_ready", None),
        getattr(details, "compression", None),
    )


def _peer_attributes(target: str | None) -> dict[str, Any]:
    if not target:
        return {}
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return {_A_ADDRESS: target}
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    for scheme in ("dns:///", "ipv4:", "ipv6:"):
        if host.startswith(scheme):
            host = host[len(scheme) :]
    return {_A_ADDRESS: host, _A_PORT: int(port)}


class ClientInterceptor(  # grpc is untyped, hence the ignores
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]
    grpc.StreamStreamClientInterceptor,  # type: ignore[misc]
):
    """ClientInterceptor instruments a sync channel, e.g. ``grpc.intercept_channel(ch, i)``.

    Records ``rpc_client_call_duration_seconds`` and a CLIENT span per call (all four shapes),
    injecting the span's context into the request metadata with the tracer's propagators.
    *target* (``host:port``) adds ``server.address``/``server.port`` to the spans. Calls made
    with ``.future()`` or streaming calls are recorded when they finish, on grpcio's thread.

    Example::

        >>> from kitobs.metrics import memory
        >>> interceptor = ClientInterceptor(memory.Provider(), target="127.0.0.1:50051")
    """

    __slots__ = ("_side",)

    def __init__(
        self, metrics: Provider, *, tracer: Tracer | None = None, target: str | None = None
    ) -> None:
        self._side = _ClientSide(metrics, tracer, target)

    def _intercept(
        self, continuation: Callable[[Any, Any], Any], details: Any, request: Any
    ) -> Any:
        call, details = self._side.start(details, aio=False)
        try:
            outcome = continuation(details, request)
        except BaseException as exc:
            call.fail(exc)
            raise
        try:
            outcome.add_done_callback(call)
        except Exception:  # not a grpc.Future: nothing will tell us the end
            call.fail(RuntimeError("call object without add_done_callback"))
        return outcome

    def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request: Any
    ) -> Any:
        """intercept_unary_unary records one unary call."""
        return self._intercept(continuation, client_call_details, request)

    def intercept_unary_stream(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request: Any
    ) -> Any:
        """intercept_unary_stream records one server-streaming call, when its status arrives."""
        return self._intercept(continuation, client_call_details, request)

    def intercept_stream_unary(
        self,
        continuation: Callable[[Any, Any], Any],
        client_call_details: Any,
        request_iterator: Any,
    ) -> Any:
        """intercept_stream_unary records one client-streaming call."""
        return self._intercept(continuation, client_call_details, request_iterator)

    def intercept_stream_stream(
        self,
        continuation: Callable[[Any, Any], Any],
        client_call_details: Any,
        request_iterator: Any,
    ) -> Any:
        """intercept_stream_stream records one bidirectional call, when its status arrives."""
        return self._intercept(continuation, client_call_details, request_iterator)


class _AioClient:
    """_AioClient is the shared body of the four aio client interceptors."""

    __slots__ = ("_side",)

    def __init__(self, side: _ClientSide) -> None:
        self._side = side

    async def _intercept(
        self, continuation: Callable[[Any, Any], Any], details: Any, request: Any
    ) -> Any:
        call, details = self._side.start(details, aio=True)
        try:
            grpc_call = await continuation(details, request)
        except BaseException as exc:
            call.fail(exc)
            raise
        try:
            grpc_call.add_done_callback(call.aio_done)
        except Exception:
            call.fail(RuntimeError("call object without add_done_callback"))
        return grpc_call


class _AioUnaryUnary(_AioClient, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    __slots__ = ()

    async def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request: Any
    ) -> Any:
        return await self._intercept(continuation, client_call_details, request)


class _AioUnaryStream(_AioClient, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    __slots__ = ()

    async def intercept_unary_stream(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request: Any
    ) -> Any:
        return await self._intercept(continuation, client_call_details, request)


class _AioStreamUnary(_AioClient, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    __slots__ = ()

    async def intercept_stream_unary(
        self,
        continuation: Callable[[Any, Any], Any],
        client_call_details: Any,
        request_iterator: Any,
    ) -> Any:
        return await self._intercept(continuation, client_call_details, request_iterator)


class _AioStreamStream(_AioClient, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    __slots__ = ()

    async def intercept_stream_stream(
        self,
        continuation: Callable[[Any, Any], Any],
        client_call_details: Any,
        request_iterator: Any,
    ) -> Any:
        return await self._intercept(continuation, client_call_details, request_iterator)


def aio_client_interceptors(
    metrics: Provider, *, tracer: Tracer | None = None, target: str | None = None
) -> list[Any]:
    """aio_client_interceptors gives interceptors for an aio channel, e.g. ``interceptors=ics``.

    Returns four interceptors (grpc.aio files each under one call shape only) that share one
    recorder; otherwise as `ClientInterceptor`. The status is read in a task on the channel's
    event loop once the call is done, so it is recorded just after the caller sees the result.

    Example::

        >>> from kitobs.metrics import memory
        >>> len(aio_client_interceptors(memory.Provider()))
        4
    """
    side = _ClientSide(metrics, tracer, target)
    return [
        _AioUnaryUnary(side),
        _AioUnaryStream(side),
        _AioStreamUnary(side),
        _AioStreamStream(side),
    ]


# -- serving and calling endpoints ---------------------------------------------------------------


class Codec(Protocol):
    """Codec turns values into message bytes and back, per method, e.g. `JSONCodec`."""

    def encode(self, method: str, value: Any) -> bytes:
        """encode serialises a request or response of *method*, e.g. to JSON bytes."""
        ...

    def decode(self, method: str, data: bytes) -> Any:
        """decode deserialises a message of *method*, e.g. into a request dataclass."""
        ...


class JSONCodec:
    """JSONCodec encodes messages as JSON, e.g. ``JSONCodec(types={"sum": IntRequest})``.

    Encoding turns dataclasses into objects and exceptions (a `kitobs.endpoint.Failer`'s
    business error, say) into ``{"error": "<qualified class>", "message": "..."}``. Decoding
    gives plain JSON values, or, for a method listed in *types*, ``types[method](**object)``.
    Method names are the short ones (``"sum"``) or full ones (``"pkg.Svc/sum"``), as given to
    `serve_endpoints` or `Client.call`.

    Example::

        >>> JSONCodec().decode("sum", JSONCodec().encode("sum", {"a": 1}))
        {'a': 1}
    """

    __slots__ = ("_types",)

    def __init__(self, types: Mapping[str, Callable[..., Any]] | None = None) -> None:
        self._types = dict(types or {})

    def encode(self, method: str, value: Any) -> bytes:
        """encode serialises *value* as compact JSON."""
        return json.dumps(value, default=_jsonable, separators=(",", ":")).encode()

    def decode(self, method: str, data: bytes) -> Any:
        """decode parses JSON, building ``types[method]`` from an object when listed."""
        value = json.loads(data) if data else None
        make = self._types.get(method)
        if make is not None and isinstance(value, dict):
            return make(**value)
        return value


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in fields(value)}
    if isinstance(value, BaseException):
        return {"error": _error_type(value), "message": str(value)}
    raise TypeError(f"{type(value).__qualname__} is not JSON serialisable")


class StatusError(Exception):
    """StatusError ends an endpoint served by `serve_endpoints` with a status, e.g. ``NOT_FOUND``.

    Example: ``raise StatusError(grpc.StatusCode.NOT_FOUND, "no such user")``.
    """

    def __init__(self, code: grpc.StatusCode, details: str = "") -> None:
        super().__init__(details or code.name)
        self.code = code
        self.details = details


class Server:
    """Server is a running gRPC server from `serve_endpoints`, e.g. ``server.port``; close it.

    It is a context manager; `close` stops it (in-flight calls get *grace* seconds).
    """

    __slots__ = ("_pool", "_server", "host", "port")

    def __init__(self, server: Any, host: str, port: int, pool: futures.Executor) -> None:
        self._server = server
        self._pool = pool
        self.host = host
        self.port = port

    @property
    def target(self) -> str:
        """target is the address clients dial, e.g. ``127.0.0.1:50051``."""
        return f"{self.host}:{self.port}"

    def wait(self, timeout: float | None = None) -> bool:
        """wait blocks until the server stops or *timeout* passes; True when it stopped."""
        return bool(self._server.wait_for_termination(timeout))

    def close(self, grace: float | None = 1.0) -> None:
        """close stops the server, waits until it has stopped, and ends its worker threads."""
        self._server.stop(grace).wait()
        self._pool.shutdown(wait=True)

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


#: The service endpoints are served under when their names have no ``Service/`` part.
DEFAULT_SERVICE = "kitobs.Endpoints"


def _path(method: str, service: str) -> str:
    return f"/{method}" if "/" in method else f"/{service}/{method}"


def _identity(data: bytes) -> bytes:
    return data


def serve_endpoints(
    endpoints: Mapping[str, Endpoint],
    kit: Kit,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    codec: Codec | None = None,
    service: str = DEFAULT_SERVICE,
    max_workers: int = 8,
) -> Server:
    """serve_endpoints serves endpoints as unary gRPC methods, e.g. ``/kitobs.Endpoints/sum``.

    Each key of *endpoints* is a method name (served under *service*) or a full
    ``pkg.Service/Method``. Requests and responses go through *codec* (default `JSONCodec`). The
    server is instrumented with `ServerInterceptor` on *kit*'s metrics and tracer, started on
    *host*:*port* (port 0 picks a free one, see `Server.port`) and returned running. An endpoint
    raising `StatusError` ends the call with its code, any other exception with ``UNKNOWN``; a
    business error (`kitobs.endpoint.Failer`) is part of the response, as in go-kit. Async
    endpoints run to completion on the worker thread.

    Raises:
        ConfigError: no endpoints, or the address cannot be bound.
    """
    from kitobs.errors import ConfigError

    if not endpoints:
        raise ConfigError("serve_endpoints needs at least one endpoint")
    codec = codec or JSONCodec()
    handlers = {}
    for name, endpoint in endpoints.items():
        handlers[_path(name, service)] = grpc.unary_unary_rpc_method_handler(
            _endpoint_behavior(name, endpoint, codec),
            request_deserializer=_identity,
            response_serializer=_identity,
        )
    pool = futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="kitobs-grpc")
    server = grpc.server(pool, interceptors=[ServerInterceptor(kit.metrics, tracer=kit.tracer)])
    server.add_generic_rpc_handlers((_PathHandler(handlers),))
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as exc:
        server.stop(None)
        pool.shutdown(wait=False)
        raise ConfigError(f"cannot listen on {host}:{port}: {exc}") from exc
    if not bound:
        server.stop(None)
        pool.shutdown(wait=False)
        raise ConfigError(f"cannot listen on {host}:{port}")
    server.start()
    return Server(server, host, bound, pool)


class _PathHandler(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpc is untyped
    """_PathHandler looks handlers up by full path, e.g. ``/kitobs.Endpoints/sum``."""

    __slots__ = ("_handlers",)

    def __init__(self, handlers: dict[str, Any]) -> None:
        self._handlers = handlers

    def service(self, handler_call_details: Any) -> Any:
        return self._handlers.get(handler_call_details.method)


def _endpoint_behavior(
    name: str, endpoint: Endpoint, codec: Codec
) -> Callable[[bytes, Any], bytes]:
    run_async = is_async(endpoint)

    def behavior(data: bytes, context: Any) -> bytes:
        request = codec.decode(name, data)
        try:
            response = asyncio.run(endpoint(request)) if run_async else endpoint(request)
        except StatusError as exc:
            context.abort(exc.code, exc.details)
            raise  # abort raised already; keeps type checkers aware
        return codec.encode(name, response)

    return behavior


class Client:
    """Client calls unary gRPC methods on an instrumented channel, e.g. ``client.call("sum", r)``.

    Calls go through `ClientInterceptor` on *kit*'s metrics and tracer, so each records
    ``rpc_client_call_duration_seconds`` and a CLIENT span whose context travels in the metadata.
    A failed call raises `grpc.RpcError` (``.code()`` tells the status). Close it when done.

    Example::

        client = Client(server.target, kit)
        client.call("sum", {"a": 1, "b": 2})
    """

    __slots__ = ("_callables", "_channel", "_codec", "_service", "_timeout", "target")

    def __init__(
        self,
        target: str,
        kit: Kit,
        *,
        codec: Codec | None = None,
        service: str = DEFAULT_SERVICE,
        timeout: float | None = None,
    ) -> None:
        self.target = target
        self._codec = codec or JSONCodec()
        self._service = service
        self._timeout = timeout
        self._channel = grpc.intercept_channel(
            grpc.insecure_channel(target),
            ClientInterceptor(kit.metrics, tracer=kit.tracer, target=target),
        )
        self._callables: dict[str, Any] = {}

    def call(self, method: str, request: Any, *, timeout: float | None = None) -> Any:
        """call sends *request* to *method* and returns the decoded response."""
        stub = self._callables.get(method)
        if stub is None:
            stub = self._callables[method] = self._channel.unary_unary(
                _path(method, self._service),
                request_serializer=_identity,
                response_deserializer=_identity,
            )
        data = stub(
            self._codec.encode(method, request),
            timeout=self._timeout if timeout is None else timeout,
        )
        return self._codec.decode(method, data)

    def close(self) -> None:
        """close closes the channel; later calls fail."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
