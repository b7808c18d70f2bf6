"""The gRPC interceptors against a real ``grpc.aio`` server and aio clients on 127.0.0.1.

As in test_grpc.py, server and client record into their own providers and tracers. Each test
runs its own event loop with `asyncio.run`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
import pytest
from opentelemetry.trace import SpanKind, StatusCode

from kitobs.contract import RPC_CLIENT_CALL_DURATION, RPC_SERVER_CALL_DURATION
from kitobs.metrics import memory
from kitobs.tracing import Span, Tracer, current_ids
from kitobs.tracing.memory import Recorder
from kitobs.transport import grpc as kgrpc

SERVICE = "kitobs.test.AioEcho"
SERVER = RPC_SERVER_CALL_DURATION.name
CLIENT = RPC_CLIENT_CALL_DURATION.name


def _enc(value: Any) -> bytes:
    return json.dumps(value).encode()


def _dec(data: bytes) -> Any:
    return json.loads(data)


async def _act(request: dict[str, Any], context: grpc.aio.ServicerContext[Any, Any]) -> None:
    mode = request.get("mode", "ok")
    if mode == "not_found":
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    if mode == "raise":
        raise ValueError("boom")
    if mode == "wait":
        # The server cancels this task when the deadline passes; bounded for a broken test.
        await asyncio.sleep(30)


def _ids() -> list[str] | None:
    ids = current_ids()
    return list(ids) if ids else None


async def unary(request: dict[str, Any], context: Any) -> dict[str, Any]:
    await _act(request, context)
    return {"ids": _ids()}


async def server_stream(request: dict[str, Any], context: Any) -> AsyncIterator[Any]:
    for i in range(2):
        yield {"i": i, "ids": _ids()}
    await _act(request, context)


async def server_stream_write(request: dict[str, Any], context: Any) -> None:
    # The other aio style: a coroutine writing with context.write.
    for i in range(2):
        await context.write({"i": i, "ids": _ids()})
    await _act(request, context)


async def client_stream(requests: AsyncIterator[dict[str, Any]], context: Any) -> Any:
    items = [item async for item in requests]
    await _act(items[-1], context)
    return {"count": len(items), "ids": _ids()}


async def bidi(requests: AsyncIterator[dict[str, Any]], context: Any) -> AsyncIterator[Any]:
    async for item in requests:
        await _act(item, context)
        yield {"echo": item.get("mode", "ok"), "ids": _ids()}


HANDLERS = {
    "Unary": grpc.unary_unary_rpc_method_handler(unary, _dec, _enc),
    "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream, _dec, _enc),
    "ServerStreamWrite": grpc.unary_stream_rpc_method_handler(server_stream_write, _dec, _enc),
    "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream, _dec, _enc),
    "Bidi": grpc.stream_stream_rpc_method_handler(bidi, _dec, _enc),
}


@dataclass
class Result:
    code: grpc.StatusCode
    body: Any
    server_metrics: memory.Provider
    client_metrics: memory.Provider
    server_spans: list[Span]
    client_spans: list[Span]


async def _requests(mode: str) -> AsyncIterator[dict[str, Any]]:
    yield {"mode": "ok"}
    yield {"mode": mode}


async def _eventually(check: Callable[[], bool]) -> None:
    """Poll *check* until true; the bound only stops a broken test."""
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met")


async def _exchange(
    method: str, mode: str, timeout: float | None, wait_for: Callable[[Result], Awaitable[None]]
) -> Result:
    server_metrics, client_metrics = memory.Provider(), memory.Provider()
    server_spans, client_spans = Recorder(), Recorder()
    server = grpc.aio.server(
        interceptors=[
            kgrpc.AioServerInterceptor(server_metrics, tracer=Tracer(processor=server_spans))
        ]
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, HANDLERS),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    target = f"127.0.0.1:{port}"
    interceptors = kgrpc.aio_client_interceptors(
        client_metrics, tracer=Tracer(processor=client_spans), target=target
    )
    result = Result(
        grpc.StatusCode.OK,
        None,
        server_metrics,
        client_metrics,
        server_spans.spans,
        client_spans.spans,
    )
    try:
        async with grpc.aio.insecure_channel(target, interceptors=interceptors) as channel:
            path = f"/{SERVICE}/{method}"
            request = {"mode": mode}
            try:
                if method in ("Unary", "Nope"):
                    result.body = await channel.unary_unary(path, _enc, _dec)(
                        request, timeout=timeout
                    )
                elif method.startswith("ServerStream"):
                    call = channel.unary_stream(path, _enc, _dec)(request, timeout=timeout)
                    result.body = [item async for item in call]
                elif method == "ClientStream":
                    result.body = await channel.stream_unary(path, _enc, _dec)(
                        _requests(mode), timeout=timeout
                    )
                else:
                    call = channel.stream_stream(path, _enc, _dec)(_requests(mode), timeout=timeout)
                    result.body = [item async for item in call]
            except grpc.aio.AioRpcError as err:
                result.code = err.code()
            await wait_for(result)
    finally:
        await server.stop(None)
    return result


def _run(method: str, mode: str, timeout: float | None = None) -> Result:
    async def both_recorded(result: Result) -> None:
        # The client reads the status in a task after the call; the server records before
        # answering, except when the client gave up first.
        await _eventually(lambda: len(result.client_spans) == 1 and len(result.server_spans) == 1)

    return asyncio.run(_exchange(method, mode, timeout, both_recorded))


def _labels(method: str, status: str, error_type: str) -> dict[str, str]:
    return {
        "rpc_system_name": "grpc",
        "rpc_method": f"{SERVICE}/{method}",
        "rpc_status_code": status,
        "error_type": error_type,
    }


KINDS = ["Unary", "ServerStream", "ServerStreamWrite", "ClientStream", "Bidi"]


@pytest.mark.parametrize("method", KINDS)
def test_ok_call(method: str) -> None:
    result = _run(method, "ok")
    assert result.code is grpc.StatusCode.OK

    result.server_metrics.assert_histogram(SERVER, count=1, **_labels(method, "OK", ""))
    result.client_metrics.assert_histogram(CLIENT, count=1, **_labels(method, "OK", ""))
    [server], [client] = result.server_spans, result.client_spans
    assert (server.kind, client.kind) == (SpanKind.SERVER, SpanKind.CLIENT)
    assert server.name == client.name == f"{SERVICE}/{method}"
    assert server.trace_id == client.trace_id
    assert server.parent_id == client.span_id
    assert server.status_code is StatusCode.UNSET
    assert client.status_code is StatusCode.UNSET
    replies = result.body if isinstance(result.body, list) else [result.body]
    assert {tuple(reply["ids"]) for reply in replies} == {server.hex_ids()}


@pytest.mark.parametrize("method", KINDS)
def test_abort_not_found(method: str) -> None:
    result = _run(method, "not_found")
    assert result.code is grpc.StatusCode.NOT_FOUND

    labels = _labels(method, "NOT_FOUND", "NOT_FOUND")
    result.server_metrics.assert_histogram(SERVER, count=1, **labels)
    result.client_metrics.assert_histogram(CLIENT, count=1, **labels)
    [server], [client] = result.server_spans, result.client_spans
    assert server.status_code is StatusCode.UNSET
    assert client.status_code is StatusCode.ERROR
    assert server.events is None


@pytest.mark.parametrize("method", KINDS)
def test_handler_raising_is_unknown(method: str) -> None:
    result = _run(method, "raise")
    assert result.code is grpc.StatusCode.UNKNOWN

    result.server_metrics.assert_histogram(
        SERVER, count=1, **_labels(method, "UNKNOWN", "ValueError")
    )
    result.client_metrics.assert_histogram(CLIENT, count=1, **_labels(method, "UNKNOWN", "UNKNOWN"))
    [server], [client] = result.server_spans, result.client_spans
    assert server.status_code is StatusCode.ERROR
    assert client.status_code is StatusCode.ERROR


@pytest.mark.parametrize("method", ["Unary", "ServerStream", "Bidi"])
def test_client_deadline_exceeded(method: str) -> None:
    result = _run(method, "wait", timeout=0.2)
    assert result.code is grpc.StatusCode.DEADLINE_EXCEEDED

    labels = _labels(method, "DEADLINE_EXCEEDED", "DEADLINE_EXCEEDED")
    result.client_metrics.assert_histogram(CLIENT, count=1, **labels)
    result.server_metrics.assert_histogram(SERVER, count=1, **labels)
    [server], [client] = result.server_spans, result.client_spans
    assert server.status_code is StatusCode.ERROR
    assert client.status_code is StatusCode.ERROR


def test_unknown_method_is_other() -> None:
    result = _run("Nope", "ok")
    assert result.code is grpc.StatusCode.UNIMPLEMENTED

    result.server_metrics.assert_histogram(
        SERVER,
        count=1,
        rpc_system_name="grpc",
        rpc_method=kgrpc.OTHER_METHOD,
        rpc_status_code="UNIMPLEMENTED",
        error_type="UNIMPLEMENTED",
    )
    [server] = result.server_spans
    assert server.attributes is not None
    assert server.attributes["rpc.method_original"] == f"{SERVICE}/Nope"


def test_client_cancel_is_cancelled() -> None:
    async def main() -> tuple[memory.Provider, memory.Provider]:
        server_metrics, client_metrics = memory.Provider(), memory.Provider()
        server = grpc.aio.server(interceptors=[kgrpc.AioServerInterceptor(server_metrics)])
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, HANDLERS),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        interceptors = kgrpc.aio_client_interceptors(client_metrics)
        labels = _labels("ServerStream", "CANCELLED", "CANCELLED")
        try:
            async with grpc.aio.insecure_channel(
                f"127.0.0.1:{port}", interceptors=interceptors
            ) as channel:
                call = channel.unary_stream(f"/{SERVICE}/ServerStream", _enc, _dec)(
                    {"mode": "wait"}
                )
                await call.read()
                await call.read()  # both items; the handler now waits
                call.cancel()
                await _eventually(
                    lambda: (
                        bool(client_metrics.observations(CLIENT, **labels))
                        and bool(server_metrics.observations(SERVER, **labels))
                    )
                )
        finally:
            await server.stop(None)
        return server_metrics, client_metrics

    server_metrics, client_metrics = asyncio.run(main())
    labels = _labels("ServerStream", "CANCELLED", "CANCELLED")
    server_metrics.assert_histogram(SERVER, count=1, **labels)
    client_metrics.assert_histogram(CLIENT, count=1, **labels)
