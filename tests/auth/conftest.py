"""Fixtures of the auth tests: a Kit recording into memory, and readers of the auth metrics."""

from __future__ import annotations

from typing import Any

import pytest

from kitobs.config import load
from kitobs.kit import Kit
from kitobs.log import capture
from kitobs.metrics import memory
from kitobs.tracing._tracer import Tracer
from kitobs.tracing.memory import Recorder as SpanRecorder

FAILURES = "kitobs_auth_failures"
DURATION = "kitobs_endpoint_duration_seconds"


class Parts:
    """A Kit whose metrics, log lines and spans the test reads back."""

    def __init__(self, **settings: Any) -> None:
        self.provider = memory.Provider()
        self.logger, self.records = capture.new()
        self.spans = SpanRecorder()
        self.kit = Kit(
            load(path=None, env={}, search=False, overrides=settings),
            logger=self.logger,
            metrics=self.provider,
            tracer=Tracer(processor=self.spans),
        )

    def failures(self, scheme: str) -> dict[str, float]:
        """Refusals counted for *scheme*, by reason, for every series that exists."""
        return {
            s["reason"]: self.provider.value(FAILURES, **s)
            for s in self.provider.series(FAILURES)
            if s["scheme"] == scheme
        }


@pytest.fixture
def parts() -> Parts:
    return Parts()
