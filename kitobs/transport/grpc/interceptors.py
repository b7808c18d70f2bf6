"""kitobs.transport.grpc.interceptors: grpcio server and client interceptors, sync and aio.

`ServerInterceptor` and `AioServerInterceptor` record ``rpc_server_call_duration_seconds`` and a
SERVER span per call and make the request context current while the handler runs;
`ClientInterceptor` and `aio_client_interceptors` record ``rpc_client_call_duration_seconds`` and
a CLIENT span, inject its context into the metadata and cut the timeout to the current deadline.
The labels, statuses and spans are described in `kitobs.transport.grpc`, which re-exports all of
these.
"""

from __future__ import annotations

import collections
import inspect
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from kitobs.contract import RPC_CLIENT_CALL_DURATION, RPC_SERVER_CALL_DURATION
from kitobs.endpoint.context import (
    OUTGOING_METADATA,
    Cancellation,
    LazyMetadata,
    RequestContext,
    attach,
    detach,
)
from kitobs.endpoint.context import current as _current_context
from kitobs.transport.grpc._record import (
    _A_ADDRESS,
    _A_ORIGINAL,
    _A_PORT,
    _ALL_ERROR_CODES,
    _CANCELLED,
    _DEADLINE,
    _DEADLINE_SLACK,
    _NAMES,
    _OK,
    _UNIMPLEMENTED,
    _UNKNOWN,
    _attach,
    _Call,
    _carrier,
    _Core,
    _detach,
    _error_type,
    _is_cancel,
    _Method,
)
from kitobs.transport.grpc.labels import OTHER_METHOD, SERVER_ERROR_CODES, method_label

if TYPE_CHECKING:
    from kitobs.log import Logger
    from kitobs.metrics import Provider
    from kitobs.tracing import Tracer

__all__ = [
    "ServerInterceptor",
    "AioServerInterceptor",
    "ClientInterceptor",
    "aio_client_interceptors",
]


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

    def __init__(
        self, metrics: Provider, tracer: Tracer | None, logger: Logger | None, *, aio: bool
    ) -> None:
        self.core = _Core(
            metrics, RPC_SERVER_CALL_DURATION, tracer, SERVER_ERROR_CODES, logger, kind="server"
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
        core = self.core
        call = _Call(core, method)
        if core.tracer is None:
            return call
        try:
            carrier = _carrier(context.invocation_metadata())
        except Exception:  # a context without metadata: a span without a remote parent
            carrier = None
        # A scoped span is current until the call is recorded; a streaming call's is made
        # current (call.context) only while its handler runs.
        core.instruments.start_span(call, method.name, method.attributes, carrier, None, scoped)
        return call

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
    shapes. *tracer* None records metrics only. With a *logger* each call also writes an access
    line, ``transport=grpc method=shop.Cart/Add status=OK duration=0.0012``, inside the call's
    span (so with its ``trace_id``/``span_id``): at info, or at error with ``error=<error_type>``
    for the codes in `SERVER_ERROR_CODES`.

    Example::

        >>> from kitobs.metrics import memory
        >>> interceptor = ServerInterceptor(memory.Provider())
    """

    __slots__ = ("_side",)

    def __init__(
        self, metrics: Provider, *, tracer: Tracer | None = None, logger: Logger | None = None
    ) -> None:
        self._side = _ServerSide(metrics, tracer, logger, aio=False)

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

    def __init__(
        self, metrics: Provider, *, tracer: Tracer | None = None, logger: Logger | None = None
    ) -> None:
        self._side = _ServerSide(metrics, tracer, logger, aio=True)

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
            metrics, RPC_CLIENT_CALL_DURATION, tracer, _ALL_ERROR_CODES, kind="client"
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
        call = _Call(core, method)
        if core.tracer is None:
            return call, details
        carrier: dict[str, str] = {}
        core.instruments.start_span(call, method.name, method.attributes, None, carrier, False)
        if call.span is None:  # starting it failed (counted): the call goes out untraced
            return call, details
        return call, _with_details(details, carrier, details.timeout, aio=aio)


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
