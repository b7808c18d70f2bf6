"""Spans: OpenTelemetry context membership, sampling, recording, interop with the OTel SDK."""

from __future__ import annotations

import asyncio
import random

import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from opentelemetry.trace import SpanKind, StatusCode

from kitobs.errors import ConfigError
from kitobs.tracing import Tracer, current_ids, current_sampled_ids, memory, sampler


@pytest.fixture
def recorder() -> memory.Recorder:
    return memory.Recorder()


def test_span_is_current_in_opentelemetry_context(recorder: memory.Recorder) -> None:
    tracer = Tracer(processor=recorder)
    assert otel_trace.get_current_span() is otel_trace.INVALID_SPAN
    with tracer.span("outer") as outer:
        assert otel_trace.get_current_span() is outer
        with tracer.span("inner") as inner:
            assert otel_trace.get_current_span() is inner
            assert inner.parent_id == outer.span_id
            assert inner.trace_id == outer.trace_id
        assert otel_trace.get_current_span() is outer
    assert otel_trace.get_current_span() is otel_trace.INVALID_SPAN
    assert [s.name for s in recorder.spans] == ["inner", "outer"]
    assert outer.parent_id == 0
    ctx = outer.get_span_context()
    assert (ctx.trace_id, ctx.span_id, ctx.trace_flags.sampled) == (
        outer.trace_id,
        outer.span_id,
        True,
    )


def test_start_span_is_not_current_and_ends_once(recorder: memory.Recorder) -> None:
    tracer = Tracer(processor=recorder)
    span = tracer.start_span("job", attributes={"n": 1})
    assert otel_trace.get_current_span() is not span
    span.end(123)
    span.end(456)
    assert recorder.spans == [span]
    assert span.end_ns == 123
    span.set_attribute("late", True)
    assert span.attributes == {"n": 1}


def test_unsampled_span_is_current_propagates_and_is_not_exported(
    recorder: memory.Recorder,
) -> None:
    tracer = Tracer(sampler=sampler.AlwaysOff(), processor=recorder)
    with tracer.span("quiet", attributes={"a": "b"}) as span:
        ids = current_ids()
        assert ids == (f"{span.trace_id:032x}", f"{span.span_id:016x}")
        assert current_sampled_ids() is None
        assert not span.is_recording()
        span.set_attribute("x", 1)
        span.add_event("e")
        headers: dict[str, str] = {}
        tracer.inject(headers)
        with tracer.span("child") as child:
            assert child.trace_id == span.trace_id
            assert not child.sampled
    assert headers["traceparent"] == f"00-{ids[0]}-{ids[1]}-00"
    assert span.attributes is None
    assert span.events is None
    assert recorder.spans == []


def test_exception_marks_span_failed_and_propagates(recorder: memory.Recorder) -> None:
    tracer = Tracer(processor=recorder)
    with pytest.raises(KeyError), tracer.span("lookup"):
        raise KeyError("missing")
    (span,) = recorder.spans
    assert span.status_code is StatusCode.ERROR
    assert span.status_description == "KeyError: 'missing'"
    assert span.events is not None
    name, _, attrs = span.events[0]
    assert name == "exception"
    assert attrs is not None
    assert attrs["exception.type"] == "KeyError"
    assert otel_trace.get_current_span() is otel_trace.INVALID_SPAN


def test_status_ok_is_final(recorder: memory.Recorder) -> None:
    span = Tracer(processor=recorder).start_span("s")
    span.set_status(StatusCode.OK)
    span.set_status(StatusCode.ERROR, "late")
    assert span.status_code is StatusCode.OK
    assert span.status_description is None


def test_async_tasks_keep_their_own_current_span(recorder: memory.Recorder) -> None:
    tracer = Tracer(processor=recorder)

    async def work(name: str) -> tuple[int, int]:
        with tracer.span(name) as span:
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            current = otel_trace.get_current_span()
            assert current is span
            return span.span_id, current.get_span_context().span_id

    async def main() -> list[tuple[int, int]]:
        with tracer.span("root"):
            return await asyncio.gather(*(work(f"t{i}") for i in range(5)))

    results = asyncio.run(main())
    assert all(a == b for a, b in results)
    root = next(s for s in recorder.spans if s.name == "root")
    children = [s for s in recorder.spans if s.name != "root"]
    assert len(children) == 5
    assert {s.parent_id for s in children} == {root.span_id}


def test_sdk_span_inside_kitobs_span_is_its_child(recorder: memory.Recorder) -> None:
    memory_exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory_exporter))
    sdk_tracer = provider.get_tracer("test")
    tracer = Tracer(processor=recorder)
    try:
        with (
            tracer.span("kitobs-parent") as parent,
            sdk_tracer.start_as_current_span("sdk-child"),
            tracer.span("kitobs-grandchild") as grandchild,
        ):
            pass
        (sdk_span,) = memory_exporter.get_finished_spans()
        assert sdk_span.parent is not None
        assert sdk_span.parent.span_id == parent.span_id
        assert sdk_span.context.trace_id == parent.trace_id
        assert grandchild.parent_id == sdk_span.context.span_id
        assert grandchild.trace_id == parent.trace_id
    finally:
        provider.shutdown()


def test_public_edge_starts_new_trace_linking_incoming(recorder: memory.Recorder) -> None:
    incoming = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    trusting = Tracer(processor=recorder)
    with trusting.span("trusting", context=trusting.extract(incoming)) as span:
        assert span.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
        assert span.parent_id == 0xB7AD6B7169203331
    edge = Tracer(processor=recorder, public_edge=True)
    with edge.span("edge", kind=SpanKind.SERVER, context=edge.extract(incoming)) as span:
        assert span.trace_id != 0x0AF7651916CD43DD8448EB211C80319C
        assert span.parent_id == 0
        assert span.links is not None
        (link,) = span.links
        assert link.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
        assert link.context.span_id == 0xB7AD6B7169203331


def test_ratio_sampler_agrees_with_opentelemetry_sdk() -> None:
    rng = random.Random(7)
    for ratio in (0.0, 0.1, 0.5, 0.9, 1.0):
        ours = sampler.TraceIdRatio(ratio)
        theirs = TraceIdRatioBased(ratio)
        for _ in range(500):
            trace_id = rng.getrandbits(128)
            want = theirs.should_sample(None, trace_id, "x").decision.is_sampled()
            assert ours.sample(trace_id, None) == want


@pytest.mark.parametrize(
    ("name", "root", "parent_on", "parent_off"),
    [
        ("always_on", True, True, True),
        ("always_off", False, False, False),
        ("parentbased_always_on", True, True, False),
        ("parentbased_always_off", False, True, False),
    ],
)
def test_sampler_names(name: str, root: bool, parent_on: bool, parent_off: bool) -> None:
    s = sampler.from_name(name)
    assert (s.sample(5, None), s.sample(5, True), s.sample(5, False)) == (
        root,
        parent_on,
        parent_off,
    )
    tracer = Tracer(sampler=s)
    with tracer.span("root") as span:
        assert span.sampled is root


def test_sampler_errors() -> None:
    with pytest.raises(ConfigError, match=r"tracing\.sampler"):
        sampler.from_name("sometimes")
    with pytest.raises(ConfigError, match="sampler_arg"):
        sampler.from_name("traceidratio", 1.5)


def test_ids_are_distinct_and_well_formed() -> None:
    tracer = Tracer()
    seen = set()
    for _ in range(1000):
        span = tracer.start_span("s")
        trace_hex, span_hex = span.hex_ids()
        assert len(trace_hex) == 32
        assert len(span_hex) == 16
        seen.add(span.span_id)
    assert len(seen) == 1000
