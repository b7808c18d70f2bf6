"""Endpoint benchmark: one instrumented call, kitobs against the peer stack a user would build.

One process, rows measured in interleaved repeats (the order rotates every repeat), medians of
the repeats, in ns per call, as CPU time of the calling thread (steady on a shared machine) and
as wall time (which also pays for the GIL the exporter threads take):

- ``bare``: the function itself, called directly;
- ``kitobs``: the function under ``@instrument(kit)``: a JSON log line to a file, the endpoint
  histogram with two labels (``endpoint``, ``outcome``) on the Prometheus backend, a sampled span
  made current, ended and enqueued on the batching processor (exporter that drops);
- ``peer typical``: a hand-written decorator doing the same with structlog in its fastest setup
  without orjson (filtering bound logger, cached, add_log_level + ISO TimeStamper + a processor
  adding the current span's ids + JSONRenderer, WriteLogger to the file), a prometheus_client
  ``Histogram`` with its two children bound up front, and the OpenTelemetry SDK's
  ``start_as_current_span`` with ``BatchSpanProcessor`` (exporter that drops);
- ``peer tuned``: the same with ``tracer.start_span`` (not made current; the span's ids passed to
  the log line by hand), the cheapest OpenTelemetry path.

Fairness: both log lines carry the same fields (timestamp, level, trace and span id, endpoint,
duration, outcome) to a real file, both measure the duration alike (``perf_counter_ns`` difference
in seconds, as kitobs does: a float with few digits, cheaper to write), and both sides flush alike: ``--sink flushed`` (default; one
write to the OS per line, each library's default) or ``--sink buffered`` (64 KiB blocks on both
sides). Both spans are sampled and queued for a batch export; the exporters count what they
receive, and the run prints how many spans each side exported.

Overhead = row - bare. Goal: kitobs' overhead <= 1/5 of the peer's (aim 1/6). The per-layer
breakdown adds one layer at a time, each written as plainly as possible: ``span`` (the span
alone), ``+log line`` (and the log line with a measured duration, inside the span, so with the
span's ids), ``+metric`` (and the histogram observe); "rest" is the full row minus the last of
those: the wrapper's own frames, the outcome checks, the span attribute, wrapt's proxy.
``kitobs chain`` is the same instrumentation as the three endpoint middlewares chained
(`kitobs.endpoint.chain`), for comparison with the fused wrapper of ``@instrument``.

    python benchmarks/bench_endpoint.py                 # about a minute
    python benchmarks/bench_endpoint.py --sink buffered
    python benchmarks/bench_endpoint.py --quick         # a smoke run
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import prometheus_client
import structlog
from _common import NoFlush
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from kitobs import log as kitlog
from kitobs.config import load
from kitobs.contract import ENDPOINT_DURATION
from kitobs.endpoint import chain
from kitobs.endpoint.instrument import instrument
from kitobs.endpoint.logging import logging_middleware
from kitobs.endpoint.metrics import metrics_middleware
from kitobs.endpoint.tracing import tracing_middleware
from kitobs.kit import Kit
from kitobs.metrics import prometheus
from kitobs.tracing import current_ids
from kitobs.tracing._batch import BatchProcessor
from kitobs.tracing._tracer import Tracer

NAME = "handler"
QUEUE = 1 << 17  # larger than the spans of one repeat: nothing is dropped on either side


def handler(request: int) -> int:
    return request + 1


class _CountingKitobsExporter:
    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[Any], timeout: float) -> None:
        self.spans += len(spans)


class _CountingOtelExporter(SpanExporter):
    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


Fn = Callable[[int], int]


@dataclass
class Stack:
    """One side's rows (full, then its layers), its spans made, and how to finish it."""

    rows: dict[str, Fn] = field(default_factory=dict)
    exporter: Any = None
    made: int = 0
    files: list[str] = field(default_factory=list)
    close: Callable[[], None] = lambda: None


def build_kitobs(tmp: str, buffered: bool) -> Stack:
    path = os.path.join(tmp, "kitobs.log")
    logger = kitlog.new(path, format="json", buffered=buffered, trace_context=current_ids)
    exporter = _CountingKitobsExporter()
    processor = BatchProcessor(exporter, queue_size=QUEUE)
    tracer = Tracer(processor=processor)
    provider = prometheus.Provider()
    kit = Kit(load(path=None, env={}, search=False), logger=logger, metrics=provider, tracer=tracer)
    full = instrument(kit, name=NAME)(handler)
    chained = chain(
        tracing_middleware(tracer, name=NAME),
        logging_middleware(logger, name=NAME),
        metrics_middleware(provider, name=NAME),
    )(handler)

    # The layers added one at a time, each written as cheaply as the fused wrapper runs it.
    span = tracer.span
    ok = logger.with_("endpoint", NAME).prepare("info", "duration", "outcome")
    observe = provider.declare(ENDPOINT_DURATION).labels(NAME, "success").observe
    clock = time.perf_counter_ns  # both sides: whole ns in seconds, as the kitobs wrapper does

    def span_only(request: int) -> int:
        with span(NAME):
            return handler(request)

    def span_log(request: int) -> int:
        with span(NAME):
            begin = clock()
            response = handler(request)
            ok((clock() - begin) / 1e9, "success")
        return response

    def span_log_metric(request: int) -> int:
        with span(NAME):
            begin = clock()
            response = handler(request)
            elapsed = (clock() - begin) / 1e9
            observe(elapsed)
            ok(elapsed, "success")
        return response

    stack = Stack(exporter=exporter, files=[path])
    stack.rows = {
        "kitobs": full,
        "kitobs chain": chained,
        "kitobs span": span_only,
        "kitobs +log line": span_log,
        "kitobs +metric": span_log_metric,
    }

    def close() -> None:
        kit.close()

    stack.close = close
    return stack


def _peer_logger(path: str, buffered: bool) -> tuple[Any, Callable[[], None]]:
    f: Any = open(path, "a", buffering=65536 if buffered else -1)  # noqa: SIM115
    out: Any = NoFlush(f) if buffered else f

    def add_span_ids(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        # The usual structlog + OpenTelemetry recipe: the current span's ids in every line.
        ctx = otel_trace.get_current_span().get_span_context()
        if ctx.is_valid:
            event["trace_id"] = format(ctx.trace_id, "032x")
            event["span_id"] = format(ctx.span_id, "016x")
        return event

    log = structlog.wrap_logger(
        structlog.WriteLogger(out),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            add_span_ids,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(20),
        cache_logger_on_first_use=True,
    ).bind(endpoint=NAME)
    return log, f.close


def build_peer(tmp: str, buffered: bool) -> Stack:
    path = os.path.join(tmp, "peer.log")
    log, close_log = _peer_logger(path, buffered)
    registry = prometheus_client.CollectorRegistry()
    histogram = prometheus_client.Histogram(
        "kitobs_endpoint_duration_seconds",
        "Duration of endpoint calls.",
        ("endpoint", "outcome"),
        registry=registry,
    )
    exporter = _CountingOtelExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=QUEUE))
    tracer = provider.get_tracer("bench")
    ok = histogram.labels(NAME, "success")
    failed = histogram.labels(NAME, "exception")
    clock = time.perf_counter_ns  # both sides: whole ns in seconds, as the kitobs wrapper does
    start_current = tracer.start_as_current_span
    start = tracer.start_span

    def typical(fn: Fn) -> Fn:
        @functools.wraps(fn)
        def wrapper(request: int) -> int:
            with start_current(NAME):
                begin = clock()
                try:
                    response = fn(request)
                except Exception as exc:
                    duration = (clock() - begin) / 1e9
                    failed.observe(duration)
                    log.error("call", duration=duration, outcome="exception", error=str(exc))
                    raise
                duration = (clock() - begin) / 1e9
                ok.observe(duration)
                log.info("call", duration=duration, outcome="success")
            return response

        return wrapper

    def tuned(fn: Fn) -> Fn:
        @functools.wraps(fn)
        def wrapper(request: int) -> int:
            span = start(NAME)
            ctx = span.get_span_context()
            ids = {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}
            begin = clock()
            try:
                response = fn(request)
            except Exception as exc:
                duration = (clock() - begin) / 1e9
                failed.observe(duration)
                log.error("call", duration=duration, outcome="exception", error=str(exc), **ids)
                span.end()
                raise
            duration = (clock() - begin) / 1e9
            ok.observe(duration)
            log.info("call", duration=duration, outcome="success", **ids)
            span.end()
            return response

        return wrapper

    def span_only(request: int) -> int:
        with start_current(NAME):
            return handler(request)

    def span_log(request: int) -> int:
        with start_current(NAME):
            begin = clock()
            response = handler(request)
            log.info("call", duration=(clock() - begin) / 1e9, outcome="success")
        return response

    def span_log_metric(request: int) -> int:
        with start_current(NAME):
            begin = clock()
            response = handler(request)
            duration = (clock() - begin) / 1e9
            ok.observe(duration)
            log.info("call", duration=duration, outcome="success")
        return response

    stack = Stack(exporter=exporter, files=[path])
    stack.rows = {
        "peer typical": typical(handler),
        "peer tuned": tuned(handler),
        "peer span": span_only,
        "peer +log line": span_log,
        "peer +metric": span_log_metric,
    }

    def close() -> None:
        provider.shutdown()
        close_log()

    stack.close = close
    return stack


def measure(fn: Fn, calls: int) -> tuple[float, float]:
    """Return (thread CPU, wall) ns per call of *calls* calls of *fn*."""
    cpu, wall = time.thread_time_ns(), time.perf_counter_ns()
    for i in range(calls):
        fn(i)
    cpu, wall = time.thread_time_ns() - cpu, time.perf_counter_ns() - wall
    return cpu / calls, wall / calls


def _rotations(names: list[str], repeats: int) -> Iterator[list[str]]:
    for r in range(repeats):
        k = r % len(names)
        yield names[k:] + names[:k]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few calls, for smoke tests")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--sink", choices=("flushed", "buffered"), default="flushed")
    args = parser.parse_args(argv)
    calls = 1000 if args.quick else args.calls
    repeats = 3 if args.quick else args.repeats
    buffered = args.sink == "buffered"
    with tempfile.TemporaryDirectory() as tmp:
        kit, peer = build_kitobs(tmp, buffered), build_peer(tmp, buffered)
        rows: dict[str, Fn] = {"bare": handler}
        rows.update(kit.rows)
        rows.update(peer.rows)
        owner = {name: kit for name in kit.rows} | {name: peer for name in peer.rows}
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in rows}
        made = {"kitobs": 0, "peer": 0}

        def run(name: str, n: int) -> tuple[float, float]:
            if name in owner:  # count the spans each side makes, to check none was dropped
                made["kitobs" if owner[name] is kit else "peer"] += n
            return measure(rows[name], n)

        for name in rows:  # warm up caches and first-use paths
            run(name, min(calls, 2000))
        for order in _rotations(list(rows), repeats + 1):
            for name in order:
                results[name].append(run(name, calls))
            for stack in (kit, peer):  # keep the log files small; both are opened to append
                for path in stack.files:
                    os.truncate(path, 0)
        for values in results.values():
            del values[0]  # the first rotation warms up what the short warm-up missed
        kit.close()
        peer.close()
    _report(results, rows, calls)
    for label, stack in (("kitobs", kit), ("peer", peer)):
        print(f"{label} spans exported: {stack.exporter.spans} of {made[label]} made")
    return 0


def _report(
    results: dict[str, list[tuple[float, float]]], rows: dict[str, Any], calls: int
) -> None:
    for col, label in ((0, "CPU time of the calling thread"), (1, "wall time")):
        median = {n: statistics.median(v[col] for v in values) for n, values in results.items()}
        best = {n: min(v[col] for v in values) for n, values in results.items()}
        print(f"{label}, ns per call ({calls} calls x {len(results['bare'])} repeats)")
        print(f"{'row':<18}{'median':>9}{'added':>9}{'best':>9}{'added':>9}")
        for name in rows:
            print(
                f"{name:<18}{median[name]:>9.0f}{median[name] - median['bare']:>9.0f}"
                f"{best[name]:>9.0f}{best[name] - best['bare']:>9.0f}"
            )
        for side, full in (("kitobs", "kitobs"), ("peer", "peer typical")):
            # Each cumulative row minus the one before it: what that layer adds.
            steps = ["bare", f"{side} span", f"{side} +log line", f"{side} +metric", full]
            added = [median[b] - median[a] for a, b in itertools.pairwise(steps)]
            parts = ", ".join(f"{n} {v:.0f}" for n, v in zip(_LAYERS, added, strict=True))
            print(f"{side} added cost by layer (median ns): {parts}")
        kit_added = median["kitobs"] - median["bare"]
        for peer in ("peer typical", "peer tuned"):
            ratio = (median[peer] - median["bare"]) / kit_added if kit_added > 0 else float("inf")
            print(f"ratio: kitobs added cost is 1/{ratio:.1f} of {peer}'s (goal 1/5, aim 1/6)")
        print()


_LAYERS = ("span", "log line", "metric", "rest")


if __name__ == "__main__":
    sys.exit(main())
