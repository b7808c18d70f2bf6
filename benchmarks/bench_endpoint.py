"""Endpoint benchmark: one instrumented call, kitobs against the peer stack a user would build.

Rows, measured in interleaved repeats in one process (medians, ns per call):

- ``bare``: the function itself, called directly;
- ``kitobs``: the same function under ``@instrument(kit)``: a JSON log line to a file (buffered),
  ``kitobs_endpoint_duration_seconds{endpoint,outcome}`` on the Prometheus backend, a sampled span
  made current, ended and enqueued on the batching processor (no-op exporter);
- ``peer typical``: a hand-written decorator with structlog in its fastest setup (filtering bound
  logger, add_log_level + ISO TimeStamper + JSONRenderer, WriteLogger to a buffered file),
  prometheus_client ``Histogram`` children bound up front, and the OpenTelemetry SDK's
  ``start_as_current_span`` with ``BatchSpanProcessor`` (no-op exporter);
- ``peer tuned``: the same with ``tracer.start_span`` (not made current), the cheapest OTel path.

Overhead = row - bare, from medians and from the best repeat (steadier on a busy machine). Goal: kitobs' overhead <= 1/5 of the peer's (aim 1/6).

    python benchmarks/bench_endpoint.py            # about 30 s
    python benchmarks/bench_endpoint.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import prometheus_client
import structlog
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from kitobs import log as kitlog
from kitobs.config import load
from kitobs.endpoint.instrument import instrument
from kitobs.kit import Kit
from kitobs.metrics import prometheus
from kitobs.tracing import current_ids
from kitobs.tracing._batch import BatchProcessor
from kitobs.tracing._tracer import Tracer


def handler(request: int) -> int:
    return request + 1


class _NoopKitobsExporter:
    def export(self, spans: Sequence[Any], timeout: float) -> None:
        pass


class _NoopOtelExporter(SpanExporter):
    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def build_kitobs(path: str) -> tuple[Callable[[int], int], Callable[[], None]]:
    logger = kitlog.new(path, format="json", buffered=True, trace_context=current_ids)
    processor = BatchProcessor(_NoopKitobsExporter(), queue_size=65536)
    kit = Kit(
        load(path=None, env={}, search=False),
        logger=logger,
        metrics=prometheus.Provider(),
        tracer=Tracer(processor=processor),
    )
    fn = instrument(kit, name="handler")(handler)

    def close() -> None:
        kit.close()

    return fn, close


def build_peer(path: str, *, current: bool) -> tuple[Callable[[int], int], Callable[[], None]]:
    sink = open(path, "w")  # noqa: SIM115 - closed by the returned close()
    log = structlog.wrap_logger(
        structlog.WriteLogger(sink),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(20),
        cache_logger_on_first_use=True,
    ).bind()
    registry = prometheus_client.CollectorRegistry()
    histogram = prometheus_client.Histogram(
        "kitobs_endpoint_duration_seconds",
        "Duration of endpoint calls.",
        ("endpoint", "outcome"),
        registry=registry,
    )
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_NoopOtelExporter(), max_queue_size=65536))
    tracer = provider.get_tracer("bench")
    name = "handler"
    ok = histogram.labels(name, "success")
    failed = histogram.labels(name, "exception")
    clock = time.perf_counter

    def decorate(fn: Callable[[int], int]) -> Callable[[int], int]:
        if current:

            @functools.wraps(fn)
            def wrapper(request: int) -> int:
                begin = clock()
                with tracer.start_as_current_span(name):
                    try:
                        response = fn(request)
                    except Exception as exc:
                        duration = clock() - begin
                        failed.observe(duration)
                        log.error("call", endpoint=name, duration=duration, error=str(exc))
                        raise
                    duration = clock() - begin
                    ok.observe(duration)
                    log.info("call", endpoint=name, duration=duration, outcome="success")
                return response

            return wrapper

        @functools.wraps(fn)
        def tuned(request: int) -> int:
            begin = clock()
            span = tracer.start_span(name)
            try:
                response = fn(request)
            except Exception as exc:
                duration = clock() - begin
                failed.observe(duration)
                log.error("call", endpoint=name, duration=duration, error=str(exc))
                span.end()
                raise
            duration = clock() - begin
            ok.observe(duration)
            log.info("call", endpoint=name, duration=duration, outcome="success")
            span.end()
            return response

        return tuned

    def close() -> None:
        provider.shutdown()
        sink.close()

    return decorate(handler), close


def measure(fn: Callable[[int], int], calls: int) -> float:
    clock = time.perf_counter
    begin = clock()
    for i in range(calls):
        fn(i)
    return (clock() - begin) / calls * 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few calls, for smoke tests")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args(argv)
    calls = 2000 if args.quick else args.calls
    repeats = 3 if args.quick else args.repeats
    with tempfile.TemporaryDirectory() as tmp:
        kit_fn, kit_close = build_kitobs(os.path.join(tmp, "kitobs.log"))
        peer_fn, peer_close = build_peer(os.path.join(tmp, "peer.log"), current=True)
        tuned_fn, tuned_close = build_peer(os.path.join(tmp, "tuned.log"), current=False)
        rows: dict[str, Callable[[int], int]] = {
            "bare": handler,
            "kitobs": kit_fn,
            "peer typical": peer_fn,
            "peer tuned": tuned_fn,
        }
        for fn in rows.values():  # warm up caches, bound children, first-use paths
            measure(fn, min(calls, 2000))
        results: dict[str, list[float]] = {name: [] for name in rows}
        for _ in range(repeats):
            for name, fn in rows.items():
                results[name].append(measure(fn, calls))
        kit_close()
        peer_close()
        tuned_close()
    median = {name: statistics.median(values) for name, values in results.items()}
    best = {name: min(values) for name, values in results.items()}
    print(f"{'row':<14}{'median':>10}{'overhead':>10}{'best':>10}{'overhead':>10}")
    for name in rows:
        print(
            f"{name:<14}{median[name]:>10.0f}{median[name] - median['bare']:>10.0f}"
            f"{best[name]:>10.0f}{best[name] - best['bare']:>10.0f}"
        )
    # Medians on a quiet machine; the best repeat is the steadier figure on a busy one.
    for label, table in (("median", median), ("best", best)):
        kit_over = table["kitobs"] - table["bare"]
        for peer in ("peer typical", "peer tuned"):
            ratio = (table[peer] - table["bare"]) / kit_over if kit_over > 0 else float("inf")
            print(f"{label}: kitobs overhead is 1/{ratio:.1f} of {peer}'s (goal 1/5, aim 1/6)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
