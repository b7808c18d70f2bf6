"""Correlation: log lines and metric exemplars carry the ids of the span they were written in."""

from __future__ import annotations

import functools
import io
import json

from opentelemetry.trace import SpanKind

from kitobs import contract
from kitobs.tracing import Tracer, current_ids, current_sampled_ids, sampler
from kitobs.tracing._batch import BatchProcessor
from kitobs.tracing.zipkin import Exporter
from tests.support.zipkin import Receiver, receiver

__all__ = ["receiver"]


def test_log_line_in_span_carries_ids_that_reach_zipkin(receiver: Receiver) -> None:
    from kitobs import log

    out = io.StringIO()
    logger = log.new(out, format="json", time_format="none", trace_context=current_ids)
    processor = BatchProcessor(Exporter(receiver.url, service_name="shop"), flush_interval=0.05)
    tracer = Tracer(processor=processor)
    with tracer.span("checkout", kind=SpanKind.SERVER):
        logger.log("msg", "charged")
    logger.log("msg", "outside")
    processor.shutdown()
    inside, outside = (json.loads(line) for line in out.getvalue().splitlines())
    (span,) = receiver.spans()
    assert (inside["trace_id"], inside["span_id"]) == (span["traceId"], span["id"])
    assert "trace_id" not in outside


def test_unsampled_span_still_gives_log_ids() -> None:
    from kitobs import log

    out = io.StringIO()
    logger = log.new(out, format="json", time_format="none", trace_context=current_ids)
    tracer = Tracer(sampler=sampler.AlwaysOff())
    with tracer.span("quiet") as span:
        logger.log("msg", "hello")
    record = json.loads(out.getvalue())
    assert (record["trace_id"], record["span_id"]) == span.hex_ids()


def test_openmetrics_exemplar_carries_sampled_trace_id() -> None:
    from kitobs.metrics import prometheus

    provider = prometheus.Provider(exemplar_context=current_sampled_ids)
    duration = provider.declare(contract.ENDPOINT_DURATION)
    on, off = Tracer(), Tracer(sampler=sampler.AlwaysOff())
    with on.span("sampled") as kept:
        duration.labels("checkout", "success").observe(0.02)
    with off.span("unsampled"):
        duration.labels("refund", "success").observe(0.02)
    text = provider.exposition(openmetrics=True).decode()
    provider.close()
    lines = [
        line for line in text.splitlines() if "kitobs_endpoint_duration_seconds_bucket" in line
    ]
    with_exemplar = [line for line in lines if " # {" in line]
    assert with_exemplar, text
    assert all('endpoint="checkout"' in line for line in with_exemplar)
    assert any(f'trace_id="{kept.hex_ids()[0]}"' in line for line in with_exemplar)


def test_drop_counter_from_metrics_provider() -> None:
    from kitobs.metrics import prometheus

    provider = prometheus.Provider()
    processor = BatchProcessor(
        Exporter("http://127.0.0.1:9/api/v2/spans", service_name="x", timeout=0.2),
        queue_size=1,
        flush_interval=60.0,
        shutdown_timeout=0.0,
        dropped=functools.partial(provider.dropped, "spans"),
    )
    tracer = Tracer(processor=processor)
    for _ in range(5):
        tracer.start_span("s").end()
    processor.flush(5)
    processor.shutdown()
    text = provider.exposition().decode()
    provider.close()
    assert 'kitobs_telemetry_dropped_total{signal="spans",reason="queue_full"} 4.0' in text, text
    # The one queued span failed to send: nothing listens on the discard port.
    assert 'kitobs_telemetry_dropped_total{signal="spans",reason="export_failed"} 1.0' in text
