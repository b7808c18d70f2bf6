"""bench_tracing: kitobs spans against the OpenTelemetry SDK, in one process.

Cases, each per span, interleaved over several repeats, medians reported with ratios:

- sampled: a span started, made current, ended and enqueued for export. kitobs: ``with
  tracer.span(...)`` with the batching processor and a no-op exporter. SDK:
  ``start_as_current_span`` with ``BatchSpanProcessor`` and a no-op exporter.
- unsampled: the same with ``always_off`` in both.
- unsampled floor (no goal; the bound on the unsampled goal): the least any pure-Python span can
  do and still be an OpenTelemetry current span. A ``with`` block over an object with three
  slots, ids from ``random.getrandbits``, a new OpenTelemetry ``Context`` holding it, and the
  context variable set and reset. No sampler, no kind or parent, no checks. kitobs' unsampled span
  does all of that and those few things more, so its ratio cannot beat this row's.
- zipkin encoding: kitobs' `kitobs.tracing.zipkin.encode` against the OpenTelemetry Zipkin JSON
  v2 encoder, over the same 100 finished spans (4 attributes, one event) each.
- endpoint span (no goal, for issue 5's endpoint benchmark): the cost a traced endpoint adds,
  ``kitobs.endpoint.tracing.tracing_middleware`` against a hand-written SDK wrapper
  (``start_as_current_span``), both sampled and enqueued, minus the bare function.

Both batching processors get a 65536-span queue, so neither side measures its drop path, and
every queue is drained (untimed) before each case, so no sender thread runs into the next case.

Goals (issue 4): sampled <= 1/8 of the SDK, unsampled <= 1/12, encoding <= 1/3.

Run: ``python benchmarks/bench_tracing.py [--repeats 7] [--number 20000] [--clock wall|cpu]``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.context.context import Context
from opentelemetry.exporter.zipkin.json.v2 import JsonV2Encoder
from opentelemetry.exporter.zipkin.node_endpoint import NodeEndpoint
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import Span as OtelSpan
from opentelemetry.trace import SpanContext, SpanKind, get_current_span
from opentelemetry.util.types import AnyValue

from kitobs._otel_context import SPAN_KEY, attach, detach, get_current
from kitobs.endpoint.tracing import tracing_middleware
from kitobs.tracing import Span, Tracer, sampler, zipkin
from kitobs.tracing._batch import BatchProcessor
from kitobs.tracing.otlp import adapt


class NopSdkExporter(SpanExporter):
    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class FloorSpan(OtelSpan):
    """The least a pure-Python span can be while it is current: see ``unsampled floor``.

    It must be an OpenTelemetry ``Span`` for ``get_current_span()`` to return it; the abstract
    methods do nothing.
    """

    __slots__ = ("_scope", "_token", "span_id", "trace_id")
    _scope: Any
    _token: Any
    span_id: int
    trace_id: int

    def get_span_context(self) -> SpanContext:
        return SpanContext(self.trace_id, self.span_id, False)

    def end(self, end_time: int | None = None) -> None:
        pass

    def is_recording(self) -> bool:
        return False

    def set_attribute(self, key: str, value: Any) -> None:
        pass

    def set_attributes(self, attributes: Any) -> None:
        pass

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        pass

    def update_name(self, name: str) -> None:
        pass

    def set_status(self, status: Any, description: str | None = None) -> None:
        pass

    def record_exception(
        self,
        exception: BaseException,
        attributes: Any = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        pass

    def __enter__(self) -> FloorSpan:
        self._token = _attach(self._scope)
        self._scope = None  # the context holds the span: else each span is a reference cycle
        return self

    def __exit__(self, *exc: object) -> None:
        _detach(self._token)


def floor_span(name: str) -> FloorSpan:
    base = _get_current()
    span = FloorSpan()
    span.trace_id = _getrandbits(128)
    span.span_id = _getrandbits(64)
    scope = Context(base) if base else Context()
    _set_item(scope, SPAN_KEY, span)
    span._scope = scope
    return span


class NopExporter:
    def export(self, spans: Sequence[Span], timeout: float) -> None:
        pass


QUEUE = 65536

_getrandbits = random.getrandbits
_get_current = get_current
_attach = attach
_detach = detach
_set_item = dict.__setitem__


def handler(request: int) -> int:
    return request + 1


def per_call(fn: Callable[[], None], number: int, clock: Callable[[], float]) -> float:
    begin = clock()
    for _ in range(number):
        fn()
    return (clock() - begin) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--number", type=int, default=20000)
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall time (default), or the calling thread's CPU time: steadier on a shared "
        "machine, but blind to time the sender threads take from the caller",
    )
    args = parser.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.thread_time

    processors: list[Any] = []

    def kitobs_tracer(off: bool) -> Tracer:
        processor = BatchProcessor(NopExporter(), queue_size=QUEUE, flush_interval=0.2)
        processors.append(processor)
        return Tracer(sampler=sampler.AlwaysOff() if off else None, processor=processor)

    def sdk_tracer(off: bool) -> Any:
        provider = TracerProvider(sampler=ALWAYS_OFF) if off else TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(NopSdkExporter(), max_queue_size=QUEUE))
        processors.append(provider)
        return provider.get_tracer("bench")

    k_on, k_off = kitobs_tracer(False), kitobs_tracer(True)
    s_on, s_off = sdk_tracer(False), sdk_tracer(True)

    def kitobs_case(tracer: Tracer) -> Callable[[], None]:
        span = tracer.span

        def run() -> None:
            with span("GET /items/{id}"):
                pass

        return run

    def sdk_case(tracer: Any) -> Callable[[], None]:
        start = tracer.start_as_current_span

        def run() -> None:
            with start("GET /items/{id}"):
                pass

        return run

    def floor_case() -> None:
        with floor_span("GET /items/{id}"):
            pass

    with floor_span("check") as floor:  # it is a current span, as the row claims
        assert get_current_span() is floor
    assert get_current_span() is not floor

    # Encoding: the same 100 finished spans, in each library's own shape.
    attrs: dict[str, AnyValue] = {
        "http.request.method": "GET",
        "http.route": "/items/{id}",
        "http.response.status_code": 200,
        "server.port": 8080,
    }
    tracer = Tracer()
    spans = []
    for _ in range(100):
        s = tracer.start_span("GET /items/{id}", kind=SpanKind.SERVER, attributes=attrs)
        s.add_event("cache miss")
        s.end()
        spans.append(s)
    resource = Resource.create({"service.name": "shop"})
    sdk_spans: list[Any] = [adapt(s, resource) for s in spans]  # the SDK's ReadableSpan
    encoder = JsonV2Encoder()
    endpoint = NodeEndpoint()
    endpoint.service_name = "shop"

    def kitobs_encode() -> None:
        zipkin.encode(spans, "shop")

    def sdk_encode() -> None:
        encoder.serialize(sdk_spans, endpoint)

    traced = tracing_middleware(k_on, name="handler")(handler)

    def kitobs_endpoint() -> None:
        traced(1)

    sdk_start = s_on.start_as_current_span

    def sdk_traced(request: int) -> int:
        with sdk_start("handler"):
            return handler(request)

    def sdk_endpoint() -> None:
        sdk_traced(1)

    def bare_endpoint() -> None:
        handler(1)

    cases: dict[str, tuple[Callable[[], None], int]] = {
        "sampled kitobs": (kitobs_case(k_on), args.number),
        "sampled sdk": (sdk_case(s_on), args.number),
        "unsampled kitobs": (kitobs_case(k_off), args.number),
        "unsampled sdk": (sdk_case(s_off), args.number),
        "unsampled floor": (floor_case, args.number),
        "zipkin encode kitobs": (kitobs_encode, max(1, args.number // 100)),
        "zipkin encode sdk": (sdk_encode, max(1, args.number // 100)),
        "endpoint bare": (bare_endpoint, args.number),
        "endpoint span kitobs": (kitobs_endpoint, args.number),
        "endpoint span sdk": (sdk_endpoint, args.number),
    }
    results: dict[str, list[float]] = {name: [] for name in cases}

    def settle() -> None:
        # Drain every queue between cases, untimed: else one side's sender thread, still
        # exporting the last case's spans, takes the GIL from the next case.
        for p in processors:
            if isinstance(p, BatchProcessor):
                p.flush(30.0)
            else:
                p.force_flush(30_000)

    for _ in range(args.repeats):  # interleaved: every case once per round
        for name, (fn, number) in cases.items():
            settle()
            value = per_call(fn, number, clock)
            if name.startswith("zipkin"):
                value /= len(spans)
            results[name].append(value)
    med = {name: statistics.median(values) for name, values in results.items()}
    for name in ("endpoint span kitobs", "endpoint span sdk"):  # the added cost only
        med[name] -= med["endpoint bare"]
    for name, value in med.items():
        spread = f"{min(results[name]):.3f}-{max(results[name]):.3f}"
        if name.startswith("endpoint span"):
            spread += ", minus bare"
        print(f"{name:24s} {value:8.3f} us/span  (range {spread}, {args.clock} clock)")
    for what, goal in (("sampled", 8), ("unsampled", 12), ("zipkin encode", 3)):
        ratio = med[f"{what} sdk"] / med[f"{what} kitobs"]
        verdict = "meets" if ratio >= goal else "MISSES"
        print(f"{what:14s} kitobs is 1/{ratio:.1f} of the SDK (goal 1/{goal}: {verdict})")
    ratio = med["unsampled sdk"] / med["unsampled floor"]
    print(
        f"unsampled floor is 1/{ratio:.1f} of the SDK: the best ratio a pure-Python span can get "
        f"(kitobs' unsampled span takes {med['unsampled kitobs'] / med['unsampled floor']:.2f}x "
        "the floor's time)"
    )
    ratio = med["endpoint span sdk"] / med["endpoint span kitobs"]
    print(f"endpoint span  kitobs is 1/{ratio:.1f} of the SDK (no goal of its own)")
    for p in processors:
        p.shutdown()


if __name__ == "__main__":
    main()
