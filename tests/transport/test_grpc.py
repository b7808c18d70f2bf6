"""The gRPC interceptors against a real grpcio server and real clients on 127.0.0.1 (sync API).

Two "services": the server records into its own metrics provider and tracer, the client into
its own, so a shared trace id and the parent link prove that context crossed the wire.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client.parser import text_string_to_metric_families

from kitobs import config
from kitobs.contract import (
    RPC_CLIENT_CALL_DURATION,
    RPC_SERVER_CALL_DURATION,
    TELEMETRY_DROPPED,
)
from kitobs.errors import ConfigError
from kitobs.kit import Kit
from kitobs.log import nop as nop_logger
from kitobs.metrics import memory, prometheus
from kitobs.tracing import Span, Tracer, current_ids
from kitobs.tracing.memory import Recorder
from kitobs.tracing.propagation import B3Multi
from kitobs.transport import grpc as kgrpc

SERVICE = "kitobs.test.Echo"
SERVER = RPC_SERVER_CALL_DURATION.name
CLIENT = RPC_CLIENT_CALL_DURATION.name


def _enc(value: Any) -> bytes:
    return json.dumps(value).encode()


def _dec(data: bytes) -> Any:
    return json.loads(data)


def _act(request: dict[str, Any], context: grpc.ServicerContext) -> None:
    """Do what the request's mode asks: nothing, abort, raise, or outlive the deadline."""
    mode = request.get("mode", "ok")
    if mode == "not_found":
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    if mode == "raise":
        raise ValueError("boom")
    if mode == "wait":
        # Outlive the deadline: return only once the call is over (so no answer can beat the
        # client's deadline) and its time is up. Bounded so a broken test cannot hang.
        for _ in range(1000):
            if not context.is_active() and context.time_remaining() <= 0:
                break
            time.sleep(0.01)
    if mode == "hold":
        # Wait for the client to go away; bounded so a broken test cannot hang.
        for _ in range(1000):
            if not context.is_active():
                break
            time.sleep(0.01)


def _seen(context: grpc.ServicerContext) -> dict[str, Any]:
    ids = current_ids()
    metadata = dict(context.invocation_metadata())
    return {"ids": list(ids) if ids else None, "user": metadata.get("x-user")}


def unary(request: dict[str, Any], context: grpc.ServicerContext) -> dict[str, Any]:
    _act(request, context)
    return _seen(context)


def server_stream(request: dict[str, Any], context: grpc.ServicerContext) -> Iterator[Any]:
    for i in range(request.get("n", 3)):
        yield {"i": i, **_seen(context)}
    _act(request, context)


def client_stream(requests: Iterator[dict[str, Any]], context: grpc.ServicerContext) -> Any:
    items = list(requests)
    _act(items[-1], context)
    return {"count": len(items), **_seen(context)}


def bidi(requests: Iterator[dict[str, Any]], context: grpc.ServicerContext) -> Iterator[Any]:
    for item in requests:
        _act(item, context)
        yield {"echo": item.get("mode", "ok"), **_seen(context)}


HANDLERS = {
    "Unary": grpc.unary_unary_rpc_method_handler(unary, _dec, _enc),
    "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream, _dec, _enc),
    "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream, _dec, _enc),
    "Bidi": grpc.stream_stream_rpc_method_handler(bidi, _dec, _enc),
}


@dataclass
class Rig:
    target: str
    channel: grpc.Channel
    server_metrics: memory.Provider
    client_metrics: memory.Provider
    server_spans: Recorder
    client_spans: Recorder

    def stub(self, method: str) -> Any:
        path = f"/{SERVICE}/{method}"
        if method in ("Unary", "Nope"):
            return self.channel.unary_unary(path, _enc, _dec)
        if method == "ServerStream":
            return self.channel.unary_stream(path, _enc, _dec)
        if method == "ClientStream":
            return self.channel.stream_unary(path, _enc, _dec)
        return self.channel.stream_stream(path, _enc, _dec)

    def server_span(self) -> Span:
        return _only(self.server_spans.spans)

    def client_span(self) -> Span:
        return _only(self.client_spans.spans)


def _only(spans: list[Span]) -> Span:
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


def _eventually(check: Callable[[], bool]) -> None:
    """Poll *check* until true; the deadline only bounds a broken test, nothing is timed."""
    for _ in range(500):
        if check():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met")


@pytest.fixture
def rig() -> Iterator[Rig]:
    server_metrics, client_metrics = memory.Provider(), memory.Provider()
    server_spans, client_spans = Recorder(), Recorder()
    pool = futures.ThreadPoolExecutor(max_workers=4)
    server = grpc.server(
        pool,
        interceptors=[
            kgrpc.ServerInterceptor(server_metrics, tracer=Tracer(processor=server_spans))
        ],
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, HANDLERS),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    target = f"127.0.0.1:{port}"
    interceptor = kgrpc.ClientInterceptor(
        client_metrics, tracer=Tracer(processor=client_spans), target=target
    )
    channel = grpc.intercept_channel(grpc.insecure_channel(target), interceptor)
    try:
        yield Rig(target, channel, server_metrics, client_metrics, server_spans, client_spans)
    finally:
        channel.close()
        server.stop(None).wait()
        pool.shutdown(wait=True)


def _call(rig: Rig, method: str, mode: str, **kw: Any) -> tuple[grpc.StatusCode, Any]:
    """Make one call of *method*'s shape; return its status and what came back."""
    stub = rig.stub(method)
    request = {"mode": mode, "n": 2}
    try:
        if method in ("Unary", "Nope"):
            return grpc.StatusCode.OK, stub(request, **kw)
        if method == "ServerStream":
            return grpc.StatusCode.OK, list(stub(request, **kw))
        if method == "ClientStream":
            return grpc.StatusCode.OK, stub(iter([{"mode": "ok"}, request]), **kw)
        return grpc.StatusCode.OK, list(stub(iter([{"mode": "ok"}, request]), **kw))
    except grpc.RpcError as err:
        return err.code(), None


def _labels(method: str, status: str, error_type: str) -> dict[str, str]:
    return {
        "rpc_system_name": "grpc",
        "rpc_method": f"{SERVICE}/{method}",
        "rpc_status_code": status,
        "error_type": error_type,
    }


KINDS = ["Unary", "ServerStream", "ClientStream", "Bidi"]


@pytest.mark.parametrize("method", KINDS)
def test_ok_call_is_measured_on_both_sides_in_one_trace(rig: Rig, method: str) -> None:
    code, body = _call(rig, method, "ok")
    assert code is grpc.StatusCode.OK

    rig.server_metrics.assert_histogram(SERVER, count=1, **_labels(method, "OK", ""))
    rig.client_metrics.assert_histogram(CLIENT, count=1, **_labels(method, "OK", ""))
    assert rig.server_metrics.series(SERVER) == [_labels(method, "OK", "")]
    server, client = rig.server_span(), rig.client_span()
    assert (server.kind, client.kind) == (SpanKind.SERVER, SpanKind.CLIENT)
    assert server.name == client.name == f"{SERVICE}/{method}"
    assert server.trace_id == client.trace_id
    assert server.parent_id == client.span_id
    assert server.attributes is not None
    assert client.attributes is not None
    assert server.attributes["rpc.system.name"] == "grpc"
    assert server.attributes["rpc.method"] == f"{SERVICE}/{method}"
    assert server.attributes["rpc.response.status_code"] == "OK"
    assert client.attributes["server.address"] == "127.0.0.1"
    assert client.attributes["server.port"] == int(rig.target.rsplit(":", 1)[1])
    assert server.status_code is StatusCode.UNSET
    assert client.status_code is StatusCode.UNSET
    # The server span is current while the handler runs (and between stream messages).
    replies = body if isinstance(body, list) else [body]
    assert {tuple(reply["ids"]) for reply in replies} == {server.hex_ids()}


@pytest.mark.parametrize("method", KINDS)
def test_abort_with_a_client_error_code(rig: Rig, method: str) -> None:
    code, _ = _call(rig, method, "not_found")
    assert code is grpc.StatusCode.NOT_FOUND

    labels = _labels(method, "NOT_FOUND", "NOT_FOUND")
    rig.server_metrics.assert_histogram(SERVER, count=1, **labels)
    rig.client_metrics.assert_histogram(CLIENT, count=1, **labels)
    server, client = rig.server_span(), rig.client_span()
    # NOT_FOUND is not the server's fault: only the client span is an error.
    assert server.status_code is StatusCode.UNSET
    assert client.status_code is StatusCode.ERROR
    assert server.attributes is not None
    assert server.attributes["rpc.response.status_code"] == "NOT_FOUND"
    assert server.attributes["error.type"] == "NOT_FOUND"
    assert server.events is None  # an abort is not an exception to report


@pytest.mark.parametrize("method", KINDS)
def test_handler_raising_is_unknown(rig: Rig, method: str) -> None:
    code, _ = _call(rig, method, "raise")
    assert code is grpc.StatusCode.UNKNOWN

    rig.server_metrics.assert_histogram(SERVER, count=1, **_labels(method, "UNKNOWN", "ValueError"))
    rig.client_metrics.assert_histogram(CLIENT, count=1, **_labels(method, "UNKNOWN", "UNKNOWN"))
    server, client = rig.server_span(), rig.client_span()
    assert server.status_code is StatusCode.ERROR
    assert client.status_code is StatusCode.ERROR
    assert server.events is not None
    [(name, _, attrs)] = server.events
    assert name == "exception"
    assert attrs is not None
    assert attrs["exception.type"] == "ValueError"


@pytest.mark.parametrize("method", ["Unary", "ServerStream"])
def test_client_deadline_exceeded(rig: Rig, method: str) -> None:
    code, _ = _call(rig, method, "wait", timeout=0.2)
    assert code is grpc.StatusCode.DEADLINE_EXCEEDED

    labels = _labels(method, "DEADLINE_EXCEEDED", "DEADLINE_EXCEEDED")
    rig.client_metrics.assert_histogram(CLIENT, count=1, **labels)
    # The handler outlives the deadline; the server records when it returns.
    _eventually(lambda: bool(rig.server_metrics.observations(SERVER, **labels)))
    rig.server_metrics.assert_histogram(SERVER, count=1, **labels)
    assert rig.client_span().status_code is StatusCode.ERROR
    _eventually(lambda: len(rig.server_spans.spans) == 1)
    assert rig.server_span().status_code is StatusCode.ERROR


def test_client_cancelling_a_stream_is_cancelled(rig: Rig) -> None:
    call = rig.stub("ServerStream")({"mode": "hold", "n": 2})
    assert [next(call)["i"], next(call)["i"]] == [0, 1]
    call.cancel()

    labels = _labels("ServerStream", "CANCELLED", "CANCELLED")
    _eventually(lambda: bool(rig.client_metrics.observations(CLIENT, **labels)))
    _eventually(lambda: bool(rig.server_metrics.observations(SERVER, **labels)))
    rig.client_metrics.assert_histogram(CLIENT, count=1, **labels)
    rig.server_metrics.assert_histogram(SERVER, count=1, **labels)
    assert rig.client_span().status_code is StatusCode.ERROR
    _eventually(lambda: len(rig.server_spans.spans) == 1)
    # CANCELLED is not a server error.
    assert rig.server_span().status_code is StatusCode.UNSET


def test_unknown_method_is_other_and_unimplemented(rig: Rig) -> None:
    code, _ = _call(rig, "Nope", "ok")
    assert code is grpc.StatusCode.UNIMPLEMENTED

    rig.server_metrics.assert_histogram(
        SERVER,
        count=1,
        rpc_system_name="grpc",
        rpc_method=kgrpc.OTHER_METHOD,
        rpc_status_code="UNIMPLEMENTED",
        error_type="UNIMPLEMENTED",
    )
    # The client named the method itself, so its label keeps the name.
    rig.client_metrics.assert_histogram(
        CLIENT, count=1, **_labels("Nope", "UNIMPLEMENTED", "UNIMPLEMENTED")
    )
    server = rig.server_span()
    assert server.attributes is not None
    assert server.attributes["rpc.method_original"] == f"{SERVICE}/Nope"
    assert server.status_code is StatusCode.ERROR


def test_future_call_is_recorded_when_done(rig: Rig) -> None:
    future = rig.stub("Unary").future({"mode": "ok"})
    assert future.result(timeout=10)["ids"] is not None
    _eventually(lambda: bool(rig.client_metrics.observations(CLIENT, **_labels("Unary", "OK", ""))))
    rig.client_metrics.assert_histogram(CLIENT, count=1, **_labels("Unary", "OK", ""))


def test_user_metadata_is_kept(rig: Rig) -> None:
    reply = rig.stub("Unary")({"mode": "ok"}, metadata=[("x-user", "ada")])
    assert reply["user"] == "ada"
    assert tuple(reply["ids"]) == rig.server_span().hex_ids()


def test_b3_headers_are_lowercased_for_grpc() -> None:
    # B3 writes X-B3-TraceId; gRPC refuses uppercase metadata keys.
    server_spans, client_spans = Recorder(), Recorder()
    pool = futures.ThreadPoolExecutor(max_workers=2)
    server = grpc.server(
        pool,
        interceptors=[
            kgrpc.ServerInterceptor(
                memory.Provider(), tracer=Tracer(processor=server_spans, propagators=[B3Multi()])
            )
        ],
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, HANDLERS),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    client_tracer = Tracer(processor=client_spans, propagators=[B3Multi()])
    interceptor = kgrpc.ClientInterceptor(memory.Provider(), tracer=client_tracer)
    try:
        with grpc.intercept_channel(grpc.insecure_channel(f"127.0.0.1:{port}"), interceptor) as ch:
            ch.unary_unary(f"/{SERVICE}/Unary", _enc, _dec)({"mode": "ok"})
    finally:
        server.stop(None).wait()
        pool.shutdown(wait=True)
    [server_span], [client_span] = server_spans.spans, client_spans.spans
    assert server_span.trace_id == client_span.trace_id
    assert server_span.parent_id == client_span.span_id


def test_without_tracer_only_metrics_are_recorded() -> None:
    metrics = memory.Provider()
    pool = futures.ThreadPoolExecutor(max_workers=2)
    server = grpc.server(pool, interceptors=[kgrpc.ServerInterceptor(metrics)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, HANDLERS),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    interceptor = kgrpc.ClientInterceptor(metrics)
    try:
        with grpc.intercept_channel(grpc.insecure_channel(f"127.0.0.1:{port}"), interceptor) as ch:
            reply = ch.unary_unary(f"/{SERVICE}/Unary", _enc, _dec)({"mode": "ok"})
    finally:
        server.stop(None).wait()
        pool.shutdown(wait=True)
    assert reply["ids"] is None  # no span anywhere
    metrics.assert_histogram(SERVER, count=1, **_labels("Unary", "OK", ""))
    metrics.assert_histogram(CLIENT, count=1, **_labels("Unary", "OK", ""))


class BrokenPropagator:
    """A propagator that always fails, to prove a tracing failure never reaches the call."""

    def inject(self, carrier: Any, context: Any) -> None:
        raise RuntimeError("inject failed")

    def extract(self, carrier: Any, context: Any) -> Any:
        raise RuntimeError("extract failed")


def test_a_failing_tracer_never_reaches_the_call() -> None:
    metrics = memory.Provider()
    tracer = Tracer(processor=Recorder(), propagators=[BrokenPropagator()])
    pool = futures.ThreadPoolExecutor(max_workers=2)
    server = grpc.server(pool, interceptors=[kgrpc.ServerInterceptor(metrics, tracer=tracer)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, HANDLERS),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    interceptor = kgrpc.ClientInterceptor(metrics, tracer=tracer)
    try:
        with grpc.intercept_channel(grpc.insecure_channel(f"127.0.0.1:{port}"), interceptor) as ch:
            reply = ch.unary_unary(f"/{SERVICE}/Unary", _enc, _dec)({"mode": "ok"})
    finally:
        server.stop(None).wait()
        pool.shutdown(wait=True)
    assert reply["ids"] is None
    metrics.assert_histogram(SERVER, count=1, **_labels("Unary", "OK", ""))
    metrics.assert_histogram(CLIENT, count=1, **_labels("Unary", "OK", ""))
    metrics.assert_counter(TELEMETRY_DROPPED.name, 2.0, signal="spans", reason="grpc_error")
    metrics.assert_counter(TELEMETRY_DROPPED.name, 0.0, signal="metrics", reason="grpc_error")


@pytest.mark.parametrize(
    ("target", "attributes"),
    [
        ("127.0.0.1:50051", {"server.address": "127.0.0.1", "server.port": 50051}),
        ("dns:///svc.local:443", {"server.address": "svc.local", "server.port": 443}),
        ("[::1]:8080", {"server.address": "::1", "server.port": 8080}),
        ("unix:/tmp/sock", {"server.address": "unix:/tmp/sock"}),
    ],
)
def test_client_target_becomes_span_attributes(target: str, attributes: dict[str, Any]) -> None:
    spans = Recorder()
    interceptor = kgrpc.ClientInterceptor(
        memory.Provider(), tracer=Tracer(processor=spans), target=target
    )

    class Done:
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.OK

        def add_done_callback(self, fn: Callable[[Any], None]) -> None:
            fn(self)

    class Details:
        method = "/svc.S/M"
        timeout = metadata = credentials = wait_for_ready = compression = None

    interceptor.intercept_unary_unary(lambda details, request: Done(), Details(), None)
    [span] = spans.spans
    assert span.attributes is not None
    assert {k: v for k, v in span.attributes.items() if k.startswith("server.")} == attributes


def test_prometheus_exposition_over_http() -> None:
    metrics = prometheus.Provider(listen="127.0.0.1:0")
    pool = futures.ThreadPoolExecutor(max_workers=2)
    server = grpc.server(pool, interceptors=[kgrpc.ServerInterceptor(metrics)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, HANDLERS),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    interceptor = kgrpc.ClientInterceptor(metrics)
    try:
        with grpc.intercept_channel(grpc.insecure_channel(f"127.0.0.1:{port}"), interceptor) as ch:
            stub = ch.unary_unary(f"/{SERVICE}/Unary", _enc, _dec)
            for mode in ("ok", "ok", "ok", "not_found", "raise"):
                with pytest.raises(grpc.RpcError) if mode != "ok" else _nothing():
                    stub({"mode": mode})
        address = metrics.address
        assert address is not None
        url = f"http://{address[0]}:{address[1]}{metrics.path}"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
    finally:
        server.stop(None).wait()
        pool.shutdown(wait=True)
        metrics.close()

    counts: dict[tuple[str, str, str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_count") and sample.name.startswith("rpc_"):
                key = (
                    sample.name,
                    sample.labels["rpc_system_name"],
                    sample.labels["rpc_method"],
                    sample.labels["rpc_status_code"],
                    sample.labels.get("error_type", ""),
                )
                counts[key] = sample.value
    method = f"{SERVICE}/Unary"
    server_name = RPC_SERVER_CALL_DURATION.prometheus_name + "_count"
    client_name = RPC_CLIENT_CALL_DURATION.prometheus_name + "_count"
    assert counts == {
        (server_name, "grpc", method, "OK", ""): 3.0,
        (server_name, "grpc", method, "NOT_FOUND", "NOT_FOUND"): 1.0,
        (server_name, "grpc", method, "UNKNOWN", "ValueError"): 1.0,
        (client_name, "grpc", method, "OK", ""): 3.0,
        (client_name, "grpc", method, "NOT_FOUND", "NOT_FOUND"): 1.0,
        (client_name, "grpc", method, "UNKNOWN", "UNKNOWN"): 1.0,
    }


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_concurrent_calls_are_all_counted(rig: Rig) -> None:
    stub = rig.stub("Unary")
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(25):
                stub({"mode": "ok"})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    rig.server_metrics.assert_histogram(SERVER, count=100, **_labels("Unary", "OK", ""))
    rig.client_metrics.assert_histogram(CLIENT, count=100, **_labels("Unary", "OK", ""))
    assert len({s.trace_id for s in rig.server_spans.spans}) == 100


# -- serve_endpoints and Client ------------------------------------------------------------------


@dataclass(frozen=True)
class SumRequest:
    a: int
    b: int


@dataclass
class Reply:
    value: Any = None
    err: Exception | None = None

    def failed(self) -> BaseException | None:
        return self.err


def _kit(metrics: memory.Provider, spans: Recorder) -> Kit:
    return Kit(
        config.load(env={}), logger=nop_logger(), metrics=metrics, tracer=Tracer(processor=spans)
    )


def test_serve_endpoints_and_client() -> None:
    def add(request: SumRequest) -> Reply:
        if request.a < 0:
            return Reply(err=OverflowError("negative"))
        return Reply(request.a + request.b)

    def find(request: dict[str, Any]) -> Reply:
        raise kgrpc.StatusError(grpc.StatusCode.NOT_FOUND, f"no {request['name']}")

    def broken(request: Any) -> Reply:
        raise RuntimeError("broken")

    server_metrics, client_metrics = memory.Provider(), memory.Provider()
    server_spans, client_spans = Recorder(), Recorder()
    server_kit, client_kit = (
        _kit(server_metrics, server_spans),
        _kit(client_metrics, client_spans),
    )
    endpoints = {"sum": add, "demo.Users/find": find, "broken": broken}
    codec = kgrpc.JSONCodec(types={"sum": SumRequest})
    with (
        kgrpc.serve_endpoints(endpoints, server_kit, codec=codec) as server,
        kgrpc.Client(server.target, client_kit) as client,
    ):
        assert client.call("sum", {"a": 2, "b": 3}) == {"value": 5, "err": None}
        failed = client.call("sum", {"a": -1, "b": 3})
        assert failed["err"] == {"error": "OverflowError", "message": "negative"}
        with pytest.raises(grpc.RpcError) as not_found:
            client.call("demo.Users/find", {"name": "ada"})
        assert not_found.value.code() is grpc.StatusCode.NOT_FOUND
        assert not_found.value.details() == "no ada"
        with pytest.raises(grpc.RpcError) as unknown:
            client.call("broken", {})
        assert unknown.value.code() is grpc.StatusCode.UNKNOWN

    def labels(method: str, status: str, error_type: str) -> dict[str, str]:
        return {
            "rpc_system_name": "grpc",
            "rpc_method": method,
            "rpc_status_code": status,
            "error_type": error_type,
        }

    # A business error is a successful call at the transport (go-kit's convention).
    server_metrics.assert_histogram(SERVER, count=2, **labels("kitobs.Endpoints/sum", "OK", ""))
    client_metrics.assert_histogram(CLIENT, count=2, **labels("kitobs.Endpoints/sum", "OK", ""))
    server_metrics.assert_histogram(
        SERVER, count=1, **labels("demo.Users/find", "NOT_FOUND", "NOT_FOUND")
    )
    server_metrics.assert_histogram(
        SERVER, count=1, **labels("kitobs.Endpoints/broken", "UNKNOWN", "RuntimeError")
    )
    client_metrics.assert_histogram(
        CLIENT, count=1, **labels("kitobs.Endpoints/broken", "UNKNOWN", "UNKNOWN")
    )
    by_trace = {s.trace_id: s for s in server_spans.spans}
    assert len(client_spans.spans) == 4
    for client_span in client_spans.spans:
        assert by_trace[client_span.trace_id].parent_id == client_span.span_id


def test_serve_endpoints_refuses_nothing_to_serve() -> None:
    with pytest.raises(ConfigError, match="at least one endpoint"):
        kgrpc.serve_endpoints({}, _kit(memory.Provider(), Recorder()))


def test_serve_endpoints_refuses_a_taken_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            kgrpc.serve_endpoints(
                {"x": lambda r: r}, _kit(memory.Provider(), Recorder()), port=port
            )


def test_serve_endpoints_runs_async_endpoints() -> None:
    async def double(request: int) -> int:
        return request * 2

    metrics = memory.Provider()
    kit = _kit(metrics, Recorder())
    with (
        kgrpc.serve_endpoints({"double": double}, kit) as server,
        kgrpc.Client(server.target, kit) as client,
    ):
        assert client.call("double", 21) == 42
    labels = {
        "rpc_system_name": "grpc",
        "rpc_method": f"{kgrpc.DEFAULT_SERVICE}/double",
        "rpc_status_code": "OK",
        "error_type": "",
    }
    metrics.assert_histogram(SERVER, count=1, **labels)
    metrics.assert_histogram(CLIENT, count=1, **labels)


@pytest.mark.parametrize(
    ("path", "label"),
    [("/shop.Cart/Add", "shop.Cart/Add"), (b"/shop.Cart/Add", "shop.Cart/Add"), ("X/Y", "X/Y")],
)
def test_method_label(path: str | bytes, label: str) -> None:
    assert kgrpc.method_label(path) == label
