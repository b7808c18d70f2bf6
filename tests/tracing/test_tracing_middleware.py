"""The tracing middleware: one span per call, named after the endpoint, error on failure."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.trace import StatusCode

from kitobs.endpoint import chain
from kitobs.endpoint.tracing import tracing_middleware
from kitobs.tracing import Tracer, memory


@dataclass
class Reply:
    value: int
    err: Exception | None = None

    def failed(self) -> Exception | None:
        return self.err


def add_one(request: int) -> Reply:
    if request < 0:
        raise ValueError("negative")
    return Reply(request + 1, ZeroDivisionError("business") if request == 0 else None)


def test_sync_success_business_error_and_exception() -> None:
    recorder = memory.Recorder()
    endpoint = tracing_middleware(Tracer(processor=recorder))(add_one)
    assert endpoint(1).value == 2
    assert endpoint(0).value == 1
    with pytest.raises(ValueError, match="negative"):
        endpoint(-1)
    ok, business, raised = recorder.spans
    assert {s.name for s in recorder.spans} == {"add_one"}
    assert ok.status_code is StatusCode.UNSET
    assert ok.attributes == {"kitobs.outcome": "success"}
    assert business.status_code is StatusCode.ERROR
    assert business.status_description == "ZeroDivisionError: business"
    assert business.attributes == {"kitobs.outcome": "business_error"}
    assert raised.status_code is StatusCode.ERROR
    assert raised.attributes == {"kitobs.outcome": "exception"}
    assert raised.events is not None
    assert raised.events[0][0] == "exception"


def test_span_is_current_inside_the_endpoint_and_nests() -> None:
    recorder = memory.Recorder()
    tracer = Tracer(processor=recorder)
    seen: list[Any] = []

    def inner(request: Any) -> Any:
        seen.append(otel_trace.get_current_span())
        return request

    endpoint = chain(tracing_middleware(tracer, name="outer"), tracing_middleware(tracer))(inner)
    endpoint("x")
    inner_span, outer_span = recorder.spans
    assert seen == [inner_span]
    assert inner_span.name.endswith("inner")
    assert outer_span.name == "outer"
    assert inner_span.parent_id == outer_span.span_id
    assert otel_trace.get_current_span() is otel_trace.INVALID_SPAN


def test_async_endpoint() -> None:
    recorder = memory.Recorder()
    tracer = Tracer(processor=recorder)

    async def fetch(request: int) -> int:
        await asyncio.sleep(0)
        assert otel_trace.get_current_span() is not otel_trace.INVALID_SPAN
        if request < 0:
            raise KeyError(request)
        return request * 2

    endpoint = tracing_middleware(tracer)(fetch)

    async def main() -> list[Any]:
        return await asyncio.gather(endpoint(1), endpoint(2), endpoint(-1), return_exceptions=True)

    results = asyncio.run(main())
    assert results[:2] == [2, 4]
    assert isinstance(results[2], KeyError)
    assert sorted(s.attributes["kitobs.outcome"] for s in recorder.spans if s.attributes) == [
        "exception",
        "success",
        "success",
    ]
    assert len({s.trace_id for s in recorder.spans}) == 3  # concurrent calls, separate traces
