"""The limits library's strategies behind the erroring and delaying middleware."""

from __future__ import annotations

from typing import Any

import pytest

from kitobs.endpoint import context
from kitobs.endpoint.instrument import instrumenting
from kitobs.errors import ConfigError
from kitobs.ratelimit import LimitedError, delaying, erroring, from_metadata
from kitobs.ratelimit.limits_strategy import Limiter
from tests.support.resilience import recording

DECISIONS = "kitobs_ratelimit_decisions_total"
DURATION = "kitobs_endpoint_duration_seconds"


@pytest.mark.parametrize("strategy", ["moving-window", "fixed-window"])
def test_a_limits_strategy_refuses_over_the_rate_per_key(strategy: str) -> None:
    rec = recording()
    limiter = Limiter(
        "api", "2/hour", strategy=strategy, key=from_metadata("x-client"), kit=rec.kit
    )
    endpoint = instrumenting(rec.kit, name="hello")(erroring(limiter)(lambda r: r))

    def as_client(name: str) -> Any:
        with context.scoped(metadata={"x-client": name}):
            return endpoint(name)

    assert as_client("a") == "a"
    assert as_client("a") == "a"
    with pytest.raises(LimitedError) as refused:
        as_client("a")
    assert 1 <= int(refused.value.headers["Retry-After"]) <= 3600
    assert as_client("b") == "b"  # its own window
    rec.metrics.assert_counter(DECISIONS, 3, limiter="api", decision="allowed")
    rec.metrics.assert_counter(DECISIONS, 1, limiter="api", decision="limited")
    assert len(rec.metrics.observations(DURATION, endpoint="hello", outcome="limited")) == 1


def test_the_delaying_form_refuses_a_wait_past_the_deadline() -> None:
    rec = recording()
    limiter = Limiter("slow", "1/hour", kit=rec.kit)
    endpoint = delaying(limiter)(lambda r: r)
    assert endpoint(1) == 1
    with context.scoped(timeout=0.1), pytest.raises(LimitedError):
        endpoint(2)
    rec.metrics.assert_counter(DECISIONS, 1, limiter="slow", decision="limited")


def test_bad_parameters_fail_at_construction() -> None:
    with pytest.raises(ConfigError):
        Limiter("x", "2/hour", strategy="token-bucket", kit=recording().kit)
    with pytest.raises(ConfigError):
        Limiter("x", "lots", kit=recording().kit)
