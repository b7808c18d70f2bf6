"""Transport benchmark: one outgoing HTTP request, kitobs against OpenTelemetry's instrumentation.

One process, rows measured in interleaved repeats (the order rotates every repeat), medians of
the repeats, in ns per request, as CPU time of the calling thread and as wall time. Every row
sends a prepared request through ``requests.Session.send`` to an adapter that answers at once
with a canned 200 (no socket), so what differs is the instrumentation alone:

- ``bare``: the session, uninstrumented;
- ``kitobs``: the session with `kitobs.transport.httpclient.RequestsAdapter` (the transport
  core's path): ``http_client_request_duration_seconds`` on the Prometheus backend and a sampled
  CLIENT span, its context injected into the headers, ended and enqueued on the batching
  processor (exporter that drops);
- ``peer``: the session under ``opentelemetry-instrumentation-requests`` (what a user would
  otherwise install): its client duration histogram on an SDK ``MeterProvider`` and a sampled
  CLIENT span, injected, on the SDK's ``BatchSpanProcessor`` (exporter that drops).

Overhead = row - bare. Goal: kitobs' overhead <= 1/5 of the peer's (aim 1/6). The run prints how
many spans each side exported, to show none was dropped.

    python benchmarks/bench_transport.py             # about half a minute
    python benchmarks/bench_transport.py --quick     # a smoke run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import requests
import requests.adapters
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from kitobs.metrics import prometheus
from kitobs.tracing._batch import BatchProcessor
from kitobs.tracing._tracer import Tracer
from kitobs.transport.httpclient import RequestsAdapter

URL = "http://127.0.0.1:8080/users/7"
QUEUE = 1 << 17  # larger than the spans of one repeat: nothing is dropped on either side


class Canned(requests.adapters.HTTPAdapter):
    """An adapter answering every request with 200 at once: no socket, no server."""

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        response = requests.Response()
        response.status_code = 200
        response._content = b"ok"
        response.url = request.url or ""
        response.request = request
        response.connection = self
        return response


class KitobsCanned(RequestsAdapter, Canned):
    """kitobs' adapter over the canned answer: RequestsAdapter.send's super() is Canned.send."""


class _Drop:
    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[Any], timeout: float) -> None:
        self.spans += len(spans)


class _PeerDrop(SpanExporter):
    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def _session(adapter: requests.adapters.HTTPAdapter) -> requests.Session:
    session = requests.Session()
    session.mount("http://", adapter)
    return session


def measure(fn: Callable[[], Any], calls: int) -> tuple[float, float]:
    """measure gives the CPU and wall ns per call of *calls* calls of *fn*."""
    cpu, wall = time.thread_time_ns(), time.perf_counter_ns()
    for _ in range(calls):
        fn()
    return (time.thread_time_ns() - cpu) / calls, (time.perf_counter_ns() - wall) / calls


def _rotations(names: list[str], repeats: int) -> Iterator[list[str]]:
    for i in range(repeats):
        k = i % len(names)
        yield names[k:] + names[:k]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few calls, for smoke tests")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args(argv)
    calls = 300 if args.quick else args.calls
    repeats = 3 if args.quick else args.repeats

    kit_exporter = _Drop()
    kit_processor = BatchProcessor(kit_exporter, queue_size=QUEUE, flush_interval=60)
    kit_session = _session(
        KitobsCanned(prometheus.Provider(), tracer=Tracer(processor=kit_processor))
    )
    peer_exporter = _PeerDrop()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(peer_exporter, max_queue_size=QUEUE))
    meters = MeterProvider(metric_readers=[InMemoryMetricReader()])
    instrumentor = RequestsInstrumentor()
    plain = _session(Canned())
    peer_session = _session(Canned())

    # Session.send of a prepared request: Session.request's proxy and environment look-ups
    # (~200 us, the same in every row) would drown the differences.
    prepared = requests.Request("GET", URL).prepare()
    rows: dict[str, Callable[[], Any]] = {
        "bare": lambda: plain.send(prepared.copy()),
        "kitobs": lambda: kit_session.send(prepared.copy()),
        "peer": lambda: peer_session.send(prepared.copy()),
    }
    made = {"kitobs": 0, "peer": 0}

    def run(name: str, n: int) -> tuple[float, float]:
        if name == "peer":  # the instrumentor patches every Session: on for its row only
            instrumentor.instrument(tracer_provider=provider, meter_provider=meters)
        try:
            result = measure(rows[name], n)
        finally:
            if name == "peer":
                instrumentor.uninstrument()
        if name in made:
            made[name] += n
        return result

    for name in rows:  # warm up caches and first-use paths
        run(name, min(calls, 1000))
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in rows}
    for order in _rotations(list(rows), repeats + 1):
        for name in order:
            results[name].append(run(name, calls))
    for values in results.values():
        del values[0]  # the first rotation warms up what the short warm-up missed
    kit_processor.flush(10)
    provider.force_flush(10_000)
    _report(results, calls)
    print(f"kitobs spans exported: {kit_exporter.spans} of {made['kitobs']} made")
    print(f"peer spans exported: {peer_exporter.spans} of {made['peer']} made")
    kit_processor.shutdown()
    provider.shutdown()
    return 0


def _report(results: dict[str, list[tuple[float, float]]], calls: int) -> None:
    for col, label in ((0, "CPU time of the calling thread"), (1, "wall time")):
        median = {n: statistics.median(v[col] for v in values) for n, values in results.items()}
        best = {n: min(v[col] for v in values) for n, values in results.items()}
        print(f"{label}, ns per request ({calls} requests x {len(results['bare'])} repeats)")
        print(f"{'row':<10}{'median':>9}{'added':>9}{'best':>9}{'added':>9}")
        for name in results:
            print(
                f"{name:<10}{median[name]:>9.0f}{median[name] - median['bare']:>9.0f}"
                f"{best[name]:>9.0f}{best[name] - best['bare']:>9.0f}"
            )
        kit_added = median["kitobs"] - median["bare"]
        peer_added = median["peer"] - median["bare"]
        ratio = peer_added / kit_added if kit_added > 0 else float("inf")
        print(f"ratio: kitobs added cost is 1/{ratio:.1f} of peer's (goal 1/5, aim 1/6)")
        print()


if __name__ == "__main__":
    sys.exit(main())
