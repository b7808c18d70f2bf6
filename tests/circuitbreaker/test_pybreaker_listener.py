"""An existing pybreaker breaker, recorded like a kitobs breaker."""

from __future__ import annotations

import asyncio
from typing import Any

import pybreaker
import pytest

from kitobs.circuitbreaker import OpenError
from kitobs.circuitbreaker.pybreaker_listener import instrument, protecting
from kitobs.endpoint.instrument import instrumenting
from kitobs.errors import ConfigError
from tests.support.resilience import recording

STATE = "kitobs_breaker_state"
TRANSITIONS = "kitobs_breaker_transitions_total"
REJECTED = "kitobs_breaker_rejected_total"
DURATION = "kitobs_endpoint_duration_seconds"


class Down(Exception):
    pass


def _down(request: Any) -> Any:
    raise Down


def test_state_changes_and_rejections_are_recorded() -> None:
    rec = recording()
    breaker = pybreaker.CircuitBreaker(fail_max=2, reset_timeout=60, name="legacy")
    endpoint = instrumenting(rec.kit, name="charge")(protecting(breaker, kit=rec.kit)(_down))
    rec.metrics.assert_gauge(STATE, 0, breaker="legacy")
    rec.metrics.assert_counter(REJECTED, 0, breaker="legacy", reason="open")
    with rec.kit.tracer.span("checkout"), pytest.raises(Down):
        endpoint(1)
    with rec.kit.tracer.span("checkout"), pytest.raises(pybreaker.CircuitBreakerError):
        endpoint(1)  # the tripping call: pybreaker's own error
    with pytest.raises(OpenError) as refused:
        endpoint(1)
    assert refused.value.headers == {"Retry-After": "60"}
    rec.metrics.assert_gauge(STATE, 2, breaker="legacy")
    rec.metrics.assert_counter(TRANSITIONS, 1, breaker="legacy", **{"from": "closed"}, to="open")
    rec.metrics.assert_counter(REJECTED, 1, breaker="legacy", reason="open")
    assert len(rec.metrics.observations(DURATION, endpoint="charge", outcome="rejected")) == 1
    [opened] = [r for r in rec.logs if r.get("to") == "open"]
    assert (opened["level"], opened["fail_counter"]) == ("warn", 2)
    events = [e for s in rec.spans.spans for e in (s.events or [])]
    [(_, _, attrs)] = [e for e in events if e[0] == "kitobs.breaker.transition"]
    assert attrs is not None
    assert attrs["kitobs.breaker.fail_counter"] == 2


def test_half_open_names_follow_the_contract() -> None:
    rec = recording()
    breaker = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=60, name="legacy")
    instrument(breaker, kit=rec.kit)
    breaker.half_open()
    rec.metrics.assert_gauge(STATE, 1, breaker="legacy")
    rec.metrics.assert_counter(
        TRANSITIONS, 1, breaker="legacy", **{"from": "closed"}, to="half_open"
    )
    breaker.close()
    rec.metrics.assert_gauge(STATE, 0, breaker="legacy")


def test_a_nameless_breaker_and_an_async_endpoint_are_refused_at_construction() -> None:
    rec = recording()
    with pytest.raises(ConfigError):
        instrument(pybreaker.CircuitBreaker(), kit=rec.kit)

    async def ep(request: Any) -> Any:
        await asyncio.sleep(0)
        return request

    with pytest.raises(TypeError):
        protecting(pybreaker.CircuitBreaker(name="x"), kit=rec.kit)(ep)
