"""OTLP export: kitobs spans adapted at export time reach an OTLP/HTTP receiver intact."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from kitobs.tracing import Tracer
from kitobs.tracing._batch import BatchProcessor
from tests.support import servers

otlp = servers.require_module("kitobs.tracing.otlp", "needs the kitobs[otlp] extra")
trace_service_pb2 = servers.require_module(
    "opentelemetry.proto.collector.trace.v1.trace_service_pb2", "needs opentelemetry-proto"
)


@pytest.fixture
def collector() -> Iterator[tuple[str, list[Any]]]:
    """A loopback OTLP/HTTP receiver that decodes each ExportTraceServiceRequest."""
    received: list[Any] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            request = trace_service_pb2.ExportTraceServiceRequest()
            request.ParseFromString(body)
            received.append(request)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", received
    finally:
        server.shutdown()
        server.server_close()


def test_spans_reach_otlp_receiver(collector: tuple[str, list[Any]]) -> None:
    url, received = collector
    processor = BatchProcessor(otlp.Exporter(url, service_name="shop"), flush_interval=0.05)
    tracer = Tracer(processor=processor)
    with (
        tracer.span("parent", kind=SpanKind.SERVER) as parent,
        tracer.span("child", attributes={"k": "v"}) as child,
    ):
        child.set_status(StatusCode.ERROR, "bad")
    processor.shutdown()
    spans = [
        span
        for request in received
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]
    resource = received[0].resource_spans[0].resource
    assert {a.key: a.value.string_value for a in resource.attributes}["service.name"] == "shop"
    by_name = {s.name: s for s in spans}
    assert by_name["child"].parent_span_id == parent.span_id.to_bytes(8, "big")
    assert by_name["child"].trace_id == parent.trace_id.to_bytes(16, "big")
    assert by_name["child"].status.message == "bad"
    assert by_name["parent"].span_id == parent.span_id.to_bytes(8, "big")
    assert by_name["child"].span_id == child.span_id.to_bytes(8, "big")


def test_secret_attributes_never_reach_the_otlp_receiver(
    collector: tuple[str, list[Any]],
) -> None:
    url, received = collector
    processor = BatchProcessor(otlp.Exporter(url, service_name="shop"), flush_interval=0.05)
    tracer = Tracer(processor=processor)
    attrs = {"authorization": "Bearer hunter2", "user.password": "hunter2", "max_tokens": 5}
    with tracer.span("login", attributes=attrs) as span:
        span.add_event("retry", {"api_key": "hunter2"})
    processor.shutdown()
    (sent,) = [
        span
        for request in received
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]
    assert b"hunter2" not in b"".join(r.SerializeToString() for r in received)
    values = {a.key: a.value for a in sent.attributes}
    assert values["authorization"].string_value == "[REDACTED]"
    assert values["user.password"].string_value == "[REDACTED]"
    assert values["max_tokens"].int_value == 5
    (event,) = sent.events
    assert {a.key: a.value.string_value for a in event.attributes} == {"api_key": "[REDACTED]"}
