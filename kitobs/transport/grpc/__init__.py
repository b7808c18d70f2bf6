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
``signal="metrics"``, ``"spans"`` or ``"logs"``. The recording itself is `kitobs.transport.core`'s.
With ``logger=``, the server interceptors write one access line per call (see
`ServerInterceptor`).
"""

from kitobs.transport.grpc.client import Client
from kitobs.transport.grpc.codec import DEFAULT_SERVICE, Codec, JSONCodec
from kitobs.transport.grpc.interceptors import (
    AioServerInterceptor,
    ClientInterceptor,
    ServerInterceptor,
    aio_client_interceptors,
)
from kitobs.transport.grpc.labels import OTHER_METHOD, SERVER_ERROR_CODES, SYSTEM, method_label
from kitobs.transport.grpc.server import Server, StatusError, serve_endpoints

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
