"""Type checks only (mypy): every kitobs tracing part matches its Protocol, spans are OTel spans."""

from __future__ import annotations

from collections.abc import Callable

import opentelemetry.trace

import kitobs.log
from kitobs import tracing
from kitobs.endpoint import Middleware
from kitobs.endpoint.tracing import tracing_middleware
from kitobs.tracing import log, memory, otlp, propagation, sampler, zipkin
from kitobs.tracing._batch import BatchProcessor


def _span_is_otel_span(s: tracing.Span) -> opentelemetry.trace.Span:
    return s


def _always_on(s: sampler.AlwaysOn) -> tracing.Sampler:
    return s


def _always_off(s: sampler.AlwaysOff) -> tracing.Sampler:
    return s


def _ratio(s: sampler.TraceIdRatio) -> tracing.Sampler:
    return s


def _parent_based(s: sampler.ParentBased) -> tracing.Sampler:
    return s


def _batch(p: BatchProcessor) -> tracing.Processor:
    return p


def _recorder_processor(r: memory.Recorder) -> tracing.Processor:
    return r


def _recorder_exporter(r: memory.Recorder) -> tracing.Exporter:
    return r


def _zipkin(e: zipkin.Exporter) -> tracing.Exporter:
    return e


def _log(e: log.Exporter) -> tracing.Exporter:
    return e


def _otlp(e: otlp.Exporter) -> tracing.Exporter:
    return e


def _sdk(e: otlp.SdkExporter) -> tracing.Exporter:
    return e


def _tracecontext(p: propagation.TraceContext) -> tracing.Propagator:
    return p


def _baggage(p: propagation.Baggage) -> tracing.Propagator:
    return p


def _b3(p: propagation.B3Single) -> tracing.Propagator:
    return p


def _b3multi(p: propagation.B3Multi) -> tracing.Propagator:
    return p


def _middleware(t: tracing.Tracer) -> Middleware:
    return tracing_middleware(t)


def _hooks() -> None:
    hook: Callable[[], tuple[str, str] | None] = tracing.current_ids
    hook = tracing.current_sampled_ids
    del hook


def _kitobs_logger(logger: kitobs.log.ContextLogger) -> tracing.Logger:
    return logger
