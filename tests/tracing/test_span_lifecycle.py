"""Spans from start to end: spans built without __init__, the lighter unsampled span, the endpoint
middleware's own wrapper, and the batching processor's wake-once enqueue.

Each test pins a behaviour the fast paths must keep: unsampled spans are current, propagate with
the sampled flag off, give log lines their ids, and interoperate with the OpenTelemetry SDK both
ways.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.request import Request, urlopen

import pytest
from opentelemetry import baggage
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.trace import SpanKind, StatusCode

from kitobs.endpoint.tracing import tracing_middleware
from kitobs.tracing import Span, Tracer, current_ids, current_sampled_ids, memory, sampler
from kitobs.tracing._batch import BatchProcessor
from kitobs.tracing.propagation import TraceContext

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"


def test_unsampled_root_ids_agree_everywhere() -> None:
    tracer = Tracer(sampler=sampler.AlwaysOff())
    with tracer.span("quiet") as span:
        assert otel_trace.get_current_span() is span
        assert not span.is_recording()
        ids = current_ids()
        assert ids is not None
        assert current_sampled_ids() is None
        trace_id, span_id = span.trace_id, span.span_id
        assert ids == (f"{trace_id:032x}", f"{span_id:016x}")
        ctx = span.get_span_context()
        assert (ctx.trace_id, ctx.span_id, ctx.trace_flags.sampled) == (trace_id, span_id, False)
        headers: dict[str, str] = {}
        tracer.inject(headers)
    assert headers["traceparent"] == f"00-{ids[0]}-{ids[1]}-00"
    assert (span.trace_id, span.span_id) == (trace_id, span_id)
    assert span.start_ns == 0
    assert span.end_ns == 0  # no clock read for an unsampled span
    assert otel_trace.get_current_span() is otel_trace.INVALID_SPAN


def test_unsampled_ids_are_valid_and_distinct() -> None:
    tracer = Tracer(sampler=sampler.AlwaysOff())
    trace_ids, span_ids = set(), set()
    for _ in range(500):
        with tracer.span("s") as span:
            trace_hex, span_hex = span.hex_ids()
        assert len(trace_hex) == 32
        assert len(span_hex) == 16
        assert span.trace_id > 0
        assert span.span_id > 0
        trace_ids.add(span.trace_id)
        span_ids.add(span.span_id)
    assert len(trace_ids) == 500
    assert len(span_ids) == 500


def test_children_of_unsampled_spans_take_their_ids() -> None:
    tracer = Tracer(sampler=sampler.AlwaysOff())
    with tracer.span("root") as root, tracer.span("child") as child:
        with tracer.span("grandchild") as grandchild:
            pass
        assert otel_trace.get_current_span() is child
    assert child.trace_id == root.trace_id
    assert child.parent_id == root.span_id
    assert grandchild.trace_id == root.trace_id
    assert grandchild.parent_id == child.span_id
    assert root.parent_id == 0
    assert not child.sampled
    assert child.span_id != root.span_id


def test_samplers_decide_children_of_kitobs_spans() -> None:
    recorder = memory.Recorder()
    on = Tracer(sampler=sampler.AlwaysOn(), processor=recorder)
    off = Tracer(sampler=sampler.AlwaysOff(), processor=recorder)
    with off.span("unsampled parent") as parent, on.span("sampled child") as child:
        pass
    assert not parent.sampled
    assert child.sampled
    assert child.trace_id == parent.trace_id
    assert child.parent_id == parent.span_id
    with on.span("sampled parent") as parent, off.span("unsampled child") as child:
        pass
    assert parent.sampled
    assert not child.sampled
    assert child.parent_id == parent.span_id
    assert [s.name for s in recorder.spans] == ["sampled child", "sampled parent"]
    # parent-based with a ratio root: children follow the parent whatever the ratio says
    ratio = Tracer(sampler=sampler.ParentBased(sampler.TraceIdRatio(0.0)), processor=recorder)
    with on.span("sampled root") as root, ratio.span("follows") as follower:
        pass
    assert follower.sampled
    assert follower.parent_id == root.span_id
    with ratio.span("root by ratio") as dropped:
        assert not dropped.sampled
        assert dropped.trace_id > 0  # the ratio sampler needed it, so it was drawn at start


def test_sdk_spans_and_unsampled_kitobs_spans_nest_both_ways() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(ALWAYS_OFF))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sdk = provider.get_tracer("test")
    tracer = Tracer(sampler=sampler.AlwaysOff())
    try:
        with tracer.span("kitobs root") as root, sdk.start_as_current_span("sdk") as middle:
            sdk_ctx = middle.get_span_context()
            with tracer.span("kitobs leaf") as leaf:
                pass
        # The SDK saw the kitobs root as its (unsampled) parent: same trace, nothing exported.
        assert sdk_ctx.trace_id == root.trace_id
        assert not sdk_ctx.trace_flags.sampled
        assert exporter.get_finished_spans() == ()
        assert leaf.trace_id == root.trace_id
        assert leaf.parent_id == sdk_ctx.span_id
    finally:
        provider.shutdown()


def test_trace_state_and_baggage_reach_fast_path_children() -> None:
    tracer = Tracer(sampler=sampler.ParentBased(sampler.AlwaysOn()))
    incoming = {"traceparent": TRACEPARENT, "tracestate": "vendor=abc", "baggage": "user=7"}
    ctx = tracer.extract(incoming)
    with tracer.span("server", kind=SpanKind.SERVER, context=ctx) as server:
        assert baggage.get_baggage("user") == "7"
        with tracer.span("inner") as inner:
            headers: dict[str, str] = {}
            tracer.inject(headers)
            assert baggage.get_baggage("user") == "7"
    assert not server.sampled  # the caller's flag was off
    assert server.kind is SpanKind.SERVER
    assert inner.parent_id == server.span_id
    assert inner.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert headers["traceparent"] == f"00-{inner.trace_id:032x}-{inner.span_id:016x}-00"
    assert headers["tracestate"] == "vendor=abc"


def test_unsampled_root_in_a_given_context_keeps_its_kind_and_baggage() -> None:
    tracer = Tracer(sampler=sampler.AlwaysOff())
    ctx = tracer.extract({"baggage": "tenant=acme"})
    with tracer.span("job", kind=SpanKind.CONSUMER, context=ctx) as span:
        assert baggage.get_baggage("tenant") == "acme"
        assert otel_trace.get_current_span() is span
    assert span.kind is SpanKind.CONSUMER
    assert span.parent_id == 0
    assert baggage.get_baggage("tenant") is None


def test_exception_in_unsampled_span_propagates_and_restores_context() -> None:
    tracer = Tracer(sampler=sampler.AlwaysOff())
    with pytest.raises(KeyError), tracer.span("outer"), tracer.span("inner"):
        raise KeyError("gone")
    assert otel_trace.get_current_span() is otel_trace.INVALID_SPAN


def test_sampled_fast_path_copies_attributes_and_records() -> None:
    recorder = memory.Recorder()
    tracer = Tracer(processor=recorder)
    attrs: dict[str, Any] = {"a": 1}
    with tracer.span("parent", attributes=attrs) as parent, tracer.span("child") as child:
        attrs["a"] = 2
        child.set_attribute("b", "x")
    assert parent.attributes == {"a": 1}
    assert child.attributes == {"b": "x"}
    assert child.parent_id == parent.span_id
    assert child.trace_id == parent.trace_id
    assert 0 < parent.start_ns <= child.start_ns <= child.end_ns <= parent.end_ns
    assert recorder.spans == [child, parent]


def test_a_raising_processor_does_not_reach_the_caller() -> None:
    class Broken:
        def on_end(self, span: Span) -> None:
            raise RuntimeError("processor bug")

        def flush(self, timeout: float | None = None) -> bool:
            return True

        def shutdown(self) -> None:
            pass

    tracer = Tracer(processor=Broken())
    with tracer.span("outer") as outer:
        with tracer.span("inner"):
            pass
        assert otel_trace.get_current_span() is outer  # restored before the processor ran
    span = tracer.start_span("explicit")
    span.end()
    assert span.end_ns > 0
    assert otel_trace.get_current_span() is otel_trace.INVALID_SPAN


# -- propagation over a real loopback HTTP exchange ---------------------------------------------


@pytest.fixture
def server() -> Iterator[tuple[str, list[Span]]]:
    spans: list[Span] = []
    tracer = Tracer(sampler=sampler.ParentBased(sampler.AlwaysOn()))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ctx = tracer.extract(dict(self.headers.items()))
            with tracer.span("GET /", kind=SpanKind.SERVER, context=ctx) as span:
                spans.append(span)
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", spans
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_unsampled_root_propagates_over_http(server: tuple[str, list[Span]]) -> None:
    url, spans = server
    tracer = Tracer(sampler=sampler.AlwaysOff(), propagators=[TraceContext()])
    with tracer.span("client call", kind=SpanKind.CLIENT) as client:
        headers: dict[str, str] = {}
        tracer.inject(headers)
        with urlopen(Request(url, headers=headers), timeout=10) as response:
            assert response.status == 204
    (served,) = spans
    assert served.trace_id == client.trace_id
    assert served.parent_id == client.span_id
    assert not served.sampled  # parent-based: the caller's flag was off
    assert served.remote_parent


# -- the endpoint middleware ------------------------------------------------------------------


def test_middleware_keeps_the_endpoint_name_and_passes_the_kind() -> None:
    recorder = memory.Recorder()
    tracer = Tracer(processor=recorder)

    def lookup(request: int) -> dict[str, int]:
        """Look a user up."""
        return {"id": request}

    endpoint = tracing_middleware(tracer, kind=SpanKind.SERVER)(lookup)
    assert endpoint(3) == {"id": 3}
    assert endpoint.__name__ == "lookup"
    assert endpoint.__doc__ == "Look a user up."
    assert endpoint.__wrapped__ is lookup  # type: ignore[attr-defined]
    (span,) = recorder.spans
    assert span.kind is SpanKind.SERVER
    assert span.name.endswith("lookup")
    assert span.attributes == {"kitobs.outcome": "success"}
    assert span.status_code is StatusCode.UNSET


def test_middleware_async_business_error_and_unsampled() -> None:
    class Reply:
        def __init__(self, err: Exception | None) -> None:
            self.err = err

        def failed(self) -> Exception | None:
            return self.err

    async def pay(request: int) -> Reply:
        await asyncio.sleep(0)
        assert current_ids() is not None
        return Reply(ValueError("card declined") if request else None)

    recorder = memory.Recorder()
    endpoint = tracing_middleware(Tracer(processor=recorder))(pay)
    assert asyncio.run(endpoint(1)).err is not None
    (span,) = recorder.spans
    assert span.status_code is StatusCode.ERROR
    assert span.status_description == "ValueError: card declined"
    assert span.attributes == {"kitobs.outcome": "business_error"}
    assert getattr(endpoint, "_kitobs_async", False)

    quiet = tracing_middleware(Tracer(sampler=sampler.AlwaysOff(), processor=recorder))(pay)
    assert asyncio.run(quiet(0)).err is None
    assert len(recorder.spans) == 1  # the unsampled call exported nothing


# -- the batching processor ---------------------------------------------------------------------


class _Collect:
    def __init__(self) -> None:
        self.batches: list[int] = []
        self.arrived = threading.Event()

    def export(self, spans: Sequence[Span], timeout: float) -> None:
        self.batches.append(len(spans))
        self.arrived.set()


def test_a_full_batch_wakes_the_sender_before_the_interval() -> None:
    exporter = _Collect()
    processor = BatchProcessor(exporter, batch_size=10, flush_interval=3600.0)
    try:
        tracer = Tracer(processor=processor)
        for _ in range(9):
            with tracer.span("s"):
                pass
        assert exporter.batches == []  # below a batch, and the interval is an hour away
        with tracer.span("tenth"):
            pass
        assert exporter.arrived.wait(10), "a full batch should wake the sender"
        assert processor.flush(10)
        assert sum(exporter.batches) == 10
    finally:
        processor.shutdown()


def test_batches_never_exceed_batch_size_and_all_spans_arrive() -> None:
    exporter = _Collect()
    processor = BatchProcessor(exporter, batch_size=7, queue_size=1000, flush_interval=3600.0)
    tracer = Tracer(processor=processor)
    for _ in range(52):
        with tracer.span("s"):
            pass
    processor.shutdown()
    assert sum(exporter.batches) == 52
    assert max(exporter.batches) <= 7


@pytest.mark.parametrize("sampled", [True, False])
def test_a_span_is_made_current_once_then_restores_its_parent(sampled: bool) -> None:
    tracer = Tracer(sampler=None if sampled else sampler.AlwaysOff())
    with tracer.span("outer") as outer:
        span = tracer.span("inner")
        with span:
            assert otel_trace.get_current_span() is span
        assert otel_trace.get_current_span() is outer
        ended = span.end_ns
        with span:  # used once already: not made current again, not ended again
            assert otel_trace.get_current_span() is outer
        assert otel_trace.get_current_span() is outer
        assert span.end_ns == ended
        assert span.parent_id == outer.span_id
    assert otel_trace.get_current_span() is otel_trace.INVALID_SPAN


@pytest.mark.parametrize("sampled", [True, False])
def test_start_span_in_a_with_block_never_becomes_current(sampled: bool) -> None:
    tracer = Tracer(sampler=None if sampled else sampler.AlwaysOff())
    with tracer.span("outer") as outer:
        with tracer.start_span("background") as background:
            assert otel_trace.get_current_span() is outer
        assert otel_trace.get_current_span() is outer  # its exit restored nothing
        assert (background.end_ns > 0) is sampled  # an unsampled span reads no clock
        assert background.parent_id == outer.span_id
    assert otel_trace.get_current_span() is otel_trace.INVALID_SPAN


def test_span_given_a_context_becomes_current_in_it_with_its_baggage() -> None:
    tracer = Tracer()
    incoming = tracer.extract({"traceparent": TRACEPARENT, "baggage": "tenant=acme"})
    with tracer.span("outer"):
        with tracer.span("server", context=incoming) as span:
            assert baggage.get_baggage("tenant") == "acme"
            assert f"{span.trace_id:032x}" == TRACEPARENT.split("-")[1]
        assert baggage.get_baggage("tenant") is None


def test_a_span_never_entered_is_still_freed() -> None:
    tracer = Tracer(sampler=sampler.AlwaysOff())
    ref = weakref.ref(tracer.span("never entered"))
    gc.collect()  # its prepared context refers back to it: a cycle the collector frees
    assert ref() is None
