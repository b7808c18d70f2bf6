"""kitobs.transport.grpc.client: call unary gRPC methods on an instrumented channel.

`Client` is the counterpart of `serve_endpoints`: it encodes with a `Codec`, calls through
`ClientInterceptor` and decodes the response. Re-exported by `kitobs.transport.grpc`.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any

import grpc

from kitobs.transport.grpc.codec import DEFAULT_SERVICE, Codec, JSONCodec, _identity, _path
from kitobs.transport.grpc.interceptors import ClientInterceptor

if TYPE_CHECKING:
    from kitobs.kit import Kit

__all__ = ["Client"]


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
