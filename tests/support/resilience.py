"""Parts the circuit breaker and rate limiter tests share: a Kit that records in memory."""

from __future__ import annotations

from dataclasses import dataclass

from kitobs.config import load
from kitobs.kit import Kit
from kitobs.log import capture
from kitobs.metrics import memory
from kitobs.tracing._tracer import Tracer
from kitobs.tracing.memory import Recorder as SpanRecorder


@dataclass
class Recording:
    """A Kit whose metrics, log lines and spans are kept for the test to read."""

    kit: Kit
    metrics: memory.Provider
    logs: list[dict[str, object]]
    spans: SpanRecorder


def recording(**overrides: object) -> Recording:
    provider = memory.Provider()
    spans = SpanRecorder()
    logger, records = capture.new()
    kit = Kit(
        load(path=None, env={}, search=False, overrides=overrides),
        logger=logger,
        metrics=provider,
        tracer=Tracer(processor=spans),
    )
    return Recording(kit, provider, records, spans)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
