"""The gRPC servers' access line, against real grpcio servers and clients on 127.0.0.1.

One line per call, as the HTTP servers write: ``transport=grpc method=... status=... duration=...``
inside the call's SERVER span, at error with ``error=`` for server errors only.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import grpc.aio
import pytest

from kitobs import config, log
from kitobs.contract import TELEMETRY_DROPPED
from kitobs.kit import Kit
from kitobs.metrics import memory
from kitobs.tracing import Tracer, current_ids
from kitobs.tracing.memory import Recorder
from kitobs.transport import grpc as kgrpc

SERVICE = "kitobs.test.Log"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


def _enc(value: Any) -> bytes:
    return json.dumps(value).encode()


def _dec(data: bytes) -> Any:
    return json.loads(data)


def unary(request: dict[str, Any], context: grpc.ServicerContext) -> dict[str, Any]:
    if request["mode"] == "not_found":
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    if request["mode"] == "raise":
        raise ValueError("boom")
    return {}


def stream(request: dict[str, Any], context: grpc.ServicerContext) -> Iterator[dict[str, Any]]:
    for i in range(2):
        yield {"i": i}


HANDLERS = {
    "Unary": grpc.unary_unary_rpc_method_handler(unary, _dec, _enc),
    "Stream": grpc.unary_stream_rpc_method_handler(stream, _dec, _enc),
}


async def aio_unary(request: dict[str, Any], context: grpc.aio.ServicerContext) -> Any:
    if request["mode"] == "raise":
        raise ValueError("boom")
    return {}


AIO_HANDLERS = {"Unary": grpc.unary_unary_rpc_method_handler(aio_unary, _dec, _enc)}


class Lines:
    """A JSON logger whose lines the test reads back, with the current span's ids."""

    def __init__(self) -> None:
        self.out = io.StringIO()
        self.logger = log.new(self.out, format="json", trace_context=current_ids)

    def read(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.getvalue().splitlines()]


def _ids(span: Any) -> tuple[str, str]:
    return f"{span.trace_id:032x}", f"{span.span_id:016x}"


def _eventually(check: Callable[[], bool]) -> None:
    """Poll *check* until true; the bound only stops a broken test, nothing is timed."""
    for _ in range(500):
        if check():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met")


def _serve(interceptor: Any) -> tuple[Any, futures.ThreadPoolExecutor, str]:
    pool = futures.ThreadPoolExecutor(max_workers=2)
    server = grpc.server(pool, interceptors=[interceptor])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, HANDLERS),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, pool, f"127.0.0.1:{port}"


def test_sync_server_writes_one_line_per_call_inside_its_span() -> None:
    lines, spans = Lines(), Recorder()
    interceptor = kgrpc.ServerInterceptor(
        memory.Provider(), tracer=Tracer(processor=spans), logger=lines.logger
    )
    server, pool, target = _serve(interceptor)
    metadata = (("traceparent", TRACEPARENT),)
    try:
        with grpc.insecure_channel(target) as channel:
            call = channel.unary_unary(f"/{SERVICE}/Unary", _enc, _dec)
            call({"mode": "ok"}, metadata=metadata)
            for mode, code in (("not_found", "NOT_FOUND"), ("raise", "UNKNOWN")):
                with pytest.raises(grpc.RpcError) as failed:
                    call({"mode": mode}, metadata=metadata)
                assert failed.value.code().name == code
            assert len(list(channel.unary_stream(f"/{SERVICE}/Stream", _enc, _dec)({}))) == 2
            with pytest.raises(grpc.RpcError):
                channel.unary_unary(f"/{SERVICE}/Nope", _enc, _dec)({})
        _eventually(lambda: len(lines.read()) == 5)
    finally:
        server.stop(None).wait()
        pool.shutdown(wait=True)
    ok, not_found, raised, streamed, unknown = lines.read()
    method = f"{SERVICE}/Unary"
    assert {k: ok[k] for k in ("level", "transport", "method", "status")} == {
        "level": "info",
        "transport": "grpc",
        "method": method,
        "status": "OK",
    }
    assert isinstance(ok["duration"], float)
    assert ok["duration"] > 0
    assert "error" not in ok
    # A client's mistake is not the server's error: info, as HTTP's 4xx.
    assert (not_found["level"], not_found["status"], "error" in not_found) == (
        "info",
        "NOT_FOUND",
        False,
    )
    assert (raised["level"], raised["status"], raised["error"]) == (
        "error",
        "UNKNOWN",
        "ValueError",
    )
    assert (streamed["method"], streamed["status"]) == (f"{SERVICE}/Stream", "OK")
    assert (unknown["method"], unknown["status"], unknown["level"]) == (
        kgrpc.OTHER_METHOD,
        "UNIMPLEMENTED",
        "error",
    )
    # Each line names its own SERVER span; the first three continue the caller's trace.
    by_name: dict[str, list[Any]] = {}
    for span in spans.spans:
        by_name.setdefault(span.name, []).append(span)
    for line, span in zip((ok, not_found, raised), by_name[method], strict=True):
        assert (line["trace_id"], line["span_id"]) == _ids(span)
        assert line["trace_id"] == TRACE
    [stream_span] = by_name[f"{SERVICE}/Stream"]
    # A streaming call's span is current only while its handler runs: the line is still inside.
    assert (streamed["trace_id"], streamed["span_id"]) == _ids(stream_span)


def test_aio_server_writes_the_line_inside_its_span() -> None:
    lines, spans = Lines(), Recorder()

    async def exchange() -> None:
        server = grpc.aio.server(
            interceptors=[
                kgrpc.AioServerInterceptor(
                    memory.Provider(), tracer=Tracer(processor=spans), logger=lines.logger
                )
            ]
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, AIO_HANDLERS),)
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = channel.unary_unary(f"/{SERVICE}/Unary", _enc, _dec)
                await call({"mode": "ok"})
                with pytest.raises(grpc.aio.AioRpcError):
                    await call({"mode": "raise"})
        finally:
            await server.stop(None)

    asyncio.run(exchange())
    ok, raised = lines.read()
    first, second = spans.spans
    assert (ok["level"], ok["status"], ok["span_id"]) == ("info", "OK", _ids(first)[1])
    assert (raised["level"], raised["error"], raised["span_id"]) == (
        "error",
        "ValueError",
        _ids(second)[1],
    )


def _kit(lines: Lines, **env: str) -> Kit:
    return Kit(
        config.load(env=env),
        logger=lines.logger,
        metrics=memory.Provider(),
        tracer=Tracer(processor=Recorder()),
    )


def test_serve_endpoints_logs_through_the_kit_unless_switched_off() -> None:
    for env, want in (({}, 1), ({"KITOBS_TRANSPORT_GRPC_ACCESS_LOG": "false"}, 0)):
        lines = Lines()
        kit = _kit(lines, **env)
        with (
            kgrpc.serve_endpoints({"double": lambda r: r * 2}, kit) as server,
            kgrpc.Client(server.target, kit) as client,
        ):
            assert client.call("double", 21) == 42
        found = [line for line in lines.read() if line.get("transport") == "grpc"]
        assert len(found) == want, (env, found)
        if want:
            assert found[0]["method"] == f"{kgrpc.DEFAULT_SERVICE}/double"


class _BrokenLogger:
    """A logger (the bare `kitobs.log.Logger` protocol) that fails on every line."""

    def log(self, *keyvals: object) -> None:
        raise OSError("disk full")


def test_a_failing_access_line_is_counted_and_the_call_succeeds() -> None:
    metrics = memory.Provider()
    server, pool, target = _serve(kgrpc.ServerInterceptor(metrics, logger=_BrokenLogger()))
    try:
        with grpc.insecure_channel(target) as channel:
            assert channel.unary_unary(f"/{SERVICE}/Unary", _enc, _dec)({"mode": "ok"}) == {}
    finally:
        server.stop(None).wait()
        pool.shutdown(wait=True)
    metrics.assert_counter(TELEMETRY_DROPPED.name, 1.0, signal="logs", reason="grpc_error")
