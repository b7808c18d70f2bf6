"""What instrumenting records: one frame, the same records as the three middlewares chained."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse

from kitobs.config import load
from kitobs.endpoint import chain
from kitobs.endpoint.instrument import instrument, instrumenting
from kitobs.endpoint.logging import logging_middleware
from kitobs.endpoint.metrics import metrics_middleware
from kitobs.endpoint.tracing import tracing_middleware
from kitobs.kit import Kit, reset_default, set_default
from kitobs.log import capture
from kitobs.metrics import memory, prometheus
from kitobs.tracing import current_ids, current_sampled_ids
from kitobs.tracing._tracer import Tracer
from kitobs.tracing.memory import Recorder as SpanRecorder

ROOT = Path(__file__).resolve().parents[2]
DURATION = "kitobs_endpoint_duration_seconds"
OUTCOMES = ("success", "business_error", "exception")
INSTRUMENT = str(ROOT / "kitobs" / "endpoint" / "instrument.py")


class Parts:
    def __init__(self, *, caller: bool = False, metrics: Any = None) -> None:
        self.provider = metrics if metrics is not None else memory.Provider()
        self.logger, self.records = capture.new(trace_context=current_ids, caller=caller)
        self.spans = SpanRecorder()
        self.kit = Kit(
            load(path=None, env={}, search=False),
            logger=self.logger,
            metrics=self.provider,
            tracer=Tracer(processor=self.spans),
        )

    def counts(self, endpoint: str) -> dict[str, int]:
        return {
            o: len(self.provider.observations(DURATION, endpoint=endpoint, outcome=o))
            for o in OUTCOMES
        }


class Reply:
    """Reply is a Failer; it counts how often failed() is asked."""

    def __init__(self, err: BaseException | None) -> None:
        self.err = err
        self.asked = 0

    def failed(self) -> BaseException | None:
        self.asked += 1
        return self.err


class Broken:
    def failed(self) -> BaseException | None:
        raise RuntimeError("failed() broke")


def respond(request: Any) -> Any:
    kind = request["kind"]
    if kind == "raise":
        raise KeyError("missing id")
    if kind == "reply":
        return Reply(request.get("err"))
    if kind == "broken":
        return Broken()
    return request["value"]


CASES: dict[str, dict[str, Any]] = {
    "int": {"kind": "value", "value": 3},
    "none": {"kind": "value", "value": None},
    "dict": {"kind": "value", "value": {"a": 1}},
    "str": {"kind": "value", "value": "ok"},
    "reply ok": {"kind": "reply"},
    "reply failed": {"kind": "reply", "err": LookupError("no such user")},
    "broken failed()": {"kind": "broken"},
    "raise": {"kind": "raise"},
}


def _observe(parts: Parts, endpoint: Callable[[Any], Any], request: dict[str, Any]) -> Any:
    """Call *endpoint* once and return everything it recorded, without times and ids."""
    with contextlib.suppress(KeyError):
        endpoint(request)
    [span] = parts.spans.spans
    [record] = parts.records
    assert (record.pop("trace_id"), record.pop("span_id")) == span.hex_ids()
    assert isinstance(record.pop("duration"), float)
    events = [(name, dict(attrs or {})) for name, _, attrs in span.events or []]
    for _, attrs in events:
        attrs.pop("exception.stacktrace", None)  # the frames differ between the two wrappers
    return (
        record,
        parts.counts("respond"),
        (span.name, span.kind, span.status_code, span.status_description),
        dict(span.attributes or {}),
        events,
    )


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_records_exactly_what_the_three_middlewares_chained_record(case: dict[str, Any]) -> None:
    fused, chained = Parts(caller=True), Parts(caller=True)
    by_chain = chain(
        tracing_middleware(chained.kit.tracer),
        logging_middleware(chained.logger),
        metrics_middleware(chained.provider),
    )(respond)
    want = _observe(chained, by_chain, case)
    have = _observe(fused, instrumenting(fused.kit)(respond), case)
    assert have == want
    assert sum(have[1].values()) == 1


def test_a_failer_is_asked_once_per_call() -> None:
    parts = Parts()
    reply = Reply(ValueError("out of stock"))
    endpoint = instrument(parts.kit, name="order")(lambda: reply)
    assert endpoint() is reply
    assert reply.asked == 1
    assert parts.counts("order")["business_error"] == 1
    [span] = parts.spans.spans
    assert span.attributes == {"kitobs.outcome": "business_error"}
    assert span.status_description == "ValueError: out of stock"


def _kitobs_frames_between(inner: Any, outer_code: Any) -> list[str]:
    """Names of the frames between *inner* and the frame running *outer_code*."""
    names = []
    frame = inner.f_back
    while frame is not None and frame.f_code is not outer_code:
        names.append(f"{Path(frame.f_code.co_filename).name}:{frame.f_code.co_name}")
        frame = frame.f_back
    assert frame is not None
    return names


def test_one_python_frame_between_caller_and_endpoint() -> None:
    parts = Parts()
    seen: list[list[str]] = []
    here = sys._getframe().f_code

    def work(request: Any) -> Any:
        seen.append(_kitobs_frames_between(sys._getframe(), here))
        return request

    instrumenting(parts.kit)(work)(1)
    instrument(parts.kit)(work)(1)
    # The middleware and the decorator: the same one wrapper frame (no wrapt frame).
    assert seen == [["<kitobs.endpoint._record>:call"], ["<kitobs.endpoint._record>:call"]]


def test_log_duration_is_the_observed_duration() -> None:
    parts = Parts()
    endpoint = instrument(parts.kit, name="timed")(lambda n: sum(range(n)))
    for n in (10, 1000, 100000):
        endpoint(n)
    logged = [r["duration"] for r in parts.records]
    assert logged == parts.provider.observations(DURATION, endpoint="timed", outcome="success")
    assert len(logged) == 3
    assert all(isinstance(d, float) and d > 0 for d in logged)


def test_exemplar_and_log_line_point_at_the_calls_span() -> None:
    parts = Parts(metrics=prometheus.Provider(exemplar_context=current_sampled_ids))
    inside: list[tuple[str, str] | None] = []

    @instrument(parts.kit, name="lookup")
    def lookup(key: str) -> str:
        inside.append(current_ids())
        return key

    assert lookup("k") == "k"
    [span] = parts.spans.spans
    trace_id, span_id = span.hex_ids()
    assert inside == [(trace_id, span_id)]  # the span is current inside the endpoint
    assert (parts.records[0]["trace_id"], parts.records[0]["span_id"]) == (trace_id, span_id)
    text = parts.provider.exposition(openmetrics=True).decode()
    exemplars = [
        s.exemplar.labels
        for family in om_parse(text)
        for s in family.samples
        if s.name == f"{DURATION}_bucket" and s.exemplar is not None
    ]
    assert exemplars == [{"trace_id": trace_id, "span_id": span_id}]
    assert current_ids() is None  # and the previous context is back


def test_caller_is_the_decorated_function() -> None:
    parts = Parts(caller=True)

    @instrument(parts.kit)
    def located(x: int) -> int:
        return x

    def plain(x: int) -> int:
        return x

    located(1)
    instrumenting(parts.kit)(plain)(1)
    here = Path(__file__).name
    assert [r["caller"] for r in parts.records] == [
        f"{here}:{inspect.getsourcelines(located)[1]}",  # where the definition starts
        f"{here}:{inspect.getsourcelines(plain)[1]}",
    ]


class Exploding:
    """A logger and a metrics backend whose every recording call raises."""

    def log(self, *keyvals: object) -> None:
        raise RuntimeError("logger broke")

    def declare(self, spec: Any) -> Exploding:
        return self

    def labels(self, *values: str) -> Exploding:
        return self

    def observe(self, value: float) -> None:
        raise RuntimeError("backend broke")


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_recording_failures_never_reach_the_caller(case: dict[str, Any]) -> None:
    spans = SpanRecorder()
    broken = Exploding()
    kit = Kit(
        load(path=None, env={}, search=False),
        logger=broken,
        metrics=broken,  # type: ignore[arg-type]
        tracer=Tracer(processor=spans),
    )
    endpoint = instrumenting(kit)(respond)
    if case["kind"] == "raise":
        with pytest.raises(KeyError, match="missing id"):
            endpoint(case)
    else:
        response = endpoint(case)
        if case["kind"] == "value":
            assert response == case["value"]
        else:
            assert hasattr(response, "failed")
    assert len(spans.spans) == 1  # the span is still recorded and ended


def test_async_cancellation_is_recorded_as_an_exception() -> None:
    parts = Parts()
    started = asyncio.Event()

    @instrument(parts.kit, name="slow")
    async def slow() -> None:
        started.set()
        await asyncio.sleep(3600)

    async def main() -> None:
        task = asyncio.create_task(slow())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert parts.counts("slow") == {"success": 0, "business_error": 0, "exception": 1}
    [span] = parts.spans.spans
    assert span.attributes == {"kitobs.outcome": "exception"}
    assert span.status_code.name == "ERROR"
    assert parts.records[0]["error"] == "CancelledError"


def test_async_middleware_keeps_the_span_current_across_awaits() -> None:
    parts = Parts()

    async def fetch(request: str) -> tuple[Any, Any]:
        before = current_ids()
        await asyncio.sleep(0)
        return before, current_ids()

    endpoint = instrumenting(parts.kit)(fetch)
    assert inspect.iscoroutinefunction(endpoint)
    before, after = asyncio.run(endpoint("x"))
    [span] = parts.spans.spans
    assert before == after == span.hex_ids()
    assert parts.counts("test_async_middleware_keeps_the_span_current_across_awaits.fetch") == {
        "success": 1,
        "business_error": 0,
        "exception": 0,
    }


def test_a_bound_method_decorated_after_binding() -> None:
    parts = Parts()

    class Counter:
        def __init__(self) -> None:
            self.n = 0

        def bump(self, by: int) -> int:
            self.n += by
            return self.n

    counter = Counter()
    bump = instrument(parts.kit, name="bump")(counter.bump)
    assert bump(2) == 2
    assert bump(by=3) == 5
    assert counter.n == 5
    assert str(inspect.signature(bump)) == "(by: 'int') -> 'int'"
    assert parts.counts("bump")["success"] == 2


def test_default_kit_is_built_once_under_concurrent_first_calls() -> None:
    parts = Parts()
    reset_default()
    try:

        @instrument(name="ping")
        def ping() -> str:
            return "pong"

        set_default(parts.kit)
        barrier = threading.Barrier(8)
        results: list[str] = []

        def call() -> None:
            barrier.wait()
            results.append(ping())

        threads = [threading.Thread(target=call) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert results == ["pong"] * 8
        assert parts.counts("ping")["success"] == 8
        assert len(parts.spans.spans) == 8
    finally:
        reset_default()
