"""Interop with real OpenTelemetry instrumentation (``opentelemetry-instrumentation-requests``).

Both ways, over a real loopback HTTP server traced by kitobs: the instrumentation's CLIENT span
inside a kitobs span is its child, and a kitobs span inside an SDK span is the SDK span's child;
the server's kitobs span continues the trace the instrumentation injected.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from kitobs.tracing import Span, Tracer, memory


@pytest.fixture
def world() -> Iterator[tuple[str, Tracer, memory.Recorder, Any, InMemorySpanExporter]]:
    recorder = memory.Recorder()
    tracer = Tracer(processor=recorder)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ctx = tracer.extract(self.headers)  # type: ignore[arg-type]
            with tracer.span("GET /", kind=SpanKind.SERVER, context=ctx):
                pass
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = RequestsInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", tracer, recorder, provider, exporter
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
        server.shutdown()
        server.server_close()


def _server_span(recorder: memory.Recorder) -> Span:
    (span,) = [s for s in recorder.spans if s.kind is SpanKind.SERVER]
    return span


def test_instrumented_requests_inside_kitobs_span(
    world: tuple[str, Tracer, memory.Recorder, Any, InMemorySpanExporter],
) -> None:
    url, tracer, recorder, _, exporter = world
    with tracer.span("checkout") as parent, requests.Session() as session:
        assert session.get(url, timeout=10).status_code == 204
    (client,) = exporter.get_finished_spans()
    assert client.kind is SpanKind.CLIENT
    assert client.parent is not None
    assert client.parent.span_id == parent.span_id
    assert client.context.trace_id == parent.trace_id
    server = _server_span(recorder)
    assert server.trace_id == parent.trace_id
    assert server.parent_id == client.context.span_id
    assert server.remote_parent


def test_kitobs_span_inside_sdk_span(
    world: tuple[str, Tracer, memory.Recorder, Any, InMemorySpanExporter],
) -> None:
    url, tracer, recorder, provider, exporter = world
    sdk = provider.get_tracer("app")
    with (
        sdk.start_as_current_span("sdk-root") as root,
        tracer.span("kitobs-step") as step,
        requests.Session() as session,
    ):
        assert session.get(url, timeout=10).status_code == 204
    root_ctx = root.get_span_context()
    assert step.parent_id == root_ctx.span_id
    assert step.trace_id == root_ctx.trace_id
    client = next(s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT)
    assert client.parent is not None
    assert client.parent.span_id == step.span_id
    assert _server_span(recorder).parent_id == client.context.span_id
