"""kitobs.transport.grpc.server: serve kitobs endpoints as unary gRPC methods.

`serve_endpoints` starts an instrumented grpcio server (`ServerInterceptor`) for a mapping of
endpoints, with a `Codec`; `StatusError` ends a call with a status. Re-exported by
`kitobs.transport.grpc`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from concurrent import futures
from types import TracebackType
from typing import TYPE_CHECKING, Any

import grpc

from kitobs.endpoint import Endpoint, RequestError, is_async
from kitobs.transport.grpc.codec import DEFAULT_SERVICE, Codec, JSONCodec, _identity, _path
from kitobs.transport.grpc.interceptors import ServerInterceptor

if TYPE_CHECKING:
    from kitobs.kit import Kit

__all__ = ["StatusError", "Server", "serve_endpoints"]


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
    server is instrumented with `ServerInterceptor` on *kit*'s metrics and tracer (and its
    logger for the access lines, unless ``transport.grpc.access_log`` is off), started on
    *host*:*port* (port 0 picks a free one, see `Server.port`) and returned running. An endpoint
    raising `StatusError` ends the call with its code, a `kitobs.endpoint.RequestError` with the
    status it names and its headers as trailing metadata, a request the codec cannot decode with
    ``INVALID_ARGUMENT``, any other exception with ``UNKNOWN``; a business error
    (`kitobs.endpoint.Failer`) is part of the response, as in go-kit. Async endpoints run to
    completion on the worker thread.

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
    logger = kit.logger if kit.settings.transport.grpc.access_log else None
    interceptor = ServerInterceptor(kit.metrics, tracer=kit.tracer, logger=logger)
    server = grpc.server(pool, interceptors=[interceptor])
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
        try:
            request = codec.decode(name, data)
        except Exception as exc:
            # The client sent what the codec cannot read: its mistake, said without quoting it.
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the request is not a valid {name} message ({type(exc).__name__})",
            )
            raise
        try:
            response = asyncio.run(endpoint(request)) if run_async else endpoint(request)
        except Exception as exc:
            _answer_error(exc, context)
            raise
        return codec.encode(name, response)

    return behavior


def _answer_error(exc: Exception, context: Any) -> None:
    """_answer_error ends a call whose endpoint raised *exc*: where errors map to statuses.

    A `StatusError` aborts the call with its code and details (``context.abort`` raises, so this
    does not return then). A `kitobs.endpoint.RequestError` (an auth failure, a rate limiter's
    or an open breaker's refusal) aborts with the status its ``grpc_status`` names
    (``UNAUTHENTICATED``, ``RESOURCE_EXHAUSTED``, ``UNAVAILABLE``) and its message, its
    ``headers`` sent as trailing metadata (``retry-after``, ``www-authenticate``). Any other
    exception returns, and the caller re-raises it, which grpcio answers ``UNKNOWN`` (recorded
    with the exception's class as ``error_type``).
    """
    if isinstance(exc, StatusError):
        context.abort(exc.code, exc.details)
    if isinstance(exc, RequestError):
        code = getattr(grpc.StatusCode, str(exc.grpc_status), None)
        if not isinstance(code, grpc.StatusCode) or code is grpc.StatusCode.OK:
            code = grpc.StatusCode.FAILED_PRECONDITION
        trailing = _trailing_metadata(exc.headers)
        if trailing:
            context.set_trailing_metadata(trailing)
        context.abort(code, str(exc) or code.name)


def _trailing_metadata(headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    # gRPC metadata keys are lowercase ASCII without spaces; values printable ASCII. A header
    # that cannot be sent as metadata is left out rather than failing the answer.
    pairs = []
    for name, value in headers.items():
        key, text = str(name).lower(), str(value)
        plain_key = key.replace("-", "").replace("_", "").replace(".", "")
        if (
            key.isascii()
            and plain_key.isalnum()
            and not key.endswith("-bin")
            and text.isascii()
            and text.isprintable()
        ):
            pairs.append((key, text))
    return tuple(pairs)
