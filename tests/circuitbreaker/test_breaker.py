"""The circuit breaker's state machine, metrics, log lines and span events, on a fake clock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kitobs.circuitbreaker import (
    Breaker,
    Counts,
    HalfOpenFullError,
    OpenError,
    failure_ratio,
    from_config,
)
from kitobs.endpoint import RequestError, context
from kitobs.endpoint.instrument import instrumenting
from kitobs.errors import ConfigError
from tests.support.resilience import FakeClock, recording

STATE = "kitobs_breaker_state"
TRANSITIONS = "kitobs_breaker_transitions_total"
REJECTED = "kitobs_breaker_rejected_total"
DURATION = "kitobs_endpoint_duration_seconds"


class Down(Exception):
    pass


class Failed:
    """A response carrying a business error (a `kitobs.endpoint.Failer`)."""

    def failed(self) -> BaseException | None:
        return ValueError("declined")


def _flaky() -> tuple[Any, dict[str, Any]]:
    state: dict[str, Any] = {"fail": True, "calls": 0}

    def call(request: Any) -> Any:
        state["calls"] += 1
        if state["fail"]:
            raise Down("dependency down")
        return request

    return call, state


def test_every_known_series_starts_at_zero() -> None:
    rec = recording()
    Breaker("payments", kit=rec.kit)
    m = rec.metrics
    m.assert_gauge(STATE, 0, breaker="payments")
    assert {tuple(s.values()) for s in m.series(TRANSITIONS)} == {
        ("payments", "closed", "open"),
        ("payments", "open", "half_open"),
        ("payments", "half_open", "open"),
        ("payments", "half_open", "closed"),
    }
    assert {s["reason"] for s in m.series(REJECTED)} == {"open", "half_open_full"}


def test_trip_open_half_open_and_recovery() -> None:
    rec, clock = recording(), FakeClock()
    breaker = Breaker(
        "payments", consecutive_failures=3, open_timeout=10.0, kit=rec.kit, clock=clock
    )
    call, state = _flaky()
    guarded = breaker(call)
    for _ in range(3):  # the call that trips the breaker gets its own error
        with pytest.raises(Down):
            guarded(1)
    assert breaker.state == "open"
    assert state["calls"] == 3
    clock.advance(4.0)
    with pytest.raises(OpenError) as refused:
        guarded(1)
    assert not isinstance(refused.value, HalfOpenFullError)
    assert refused.value.headers == {"Retry-After": "6"}
    assert (refused.value.status_code, refused.value.grpc_status) == (503, "UNAVAILABLE")
    assert state["calls"] == 3  # failed fast: the endpoint was not called
    rec.metrics.assert_counter(REJECTED, 1, breaker="payments", reason="open")
    rec.metrics.assert_gauge(STATE, 2, breaker="payments")

    clock.advance(6.0)  # the timeout ran out: one probe goes through
    state["fail"] = False
    assert guarded(7) == 7
    assert breaker.state == "closed"
    rec.metrics.assert_gauge(STATE, 0, breaker="payments")
    for before, after in (("closed", "open"), ("open", "half_open"), ("half_open", "closed")):
        rec.metrics.assert_counter(TRANSITIONS, 1, breaker="payments", **{"from": before}, to=after)
    rec.metrics.assert_counter(
        TRANSITIONS, 0, breaker="payments", **{"from": "half_open"}, to="open"
    )


def test_a_failed_probe_opens_again_for_a_full_timeout() -> None:
    rec, clock = recording(), FakeClock()
    breaker = Breaker("db", consecutive_failures=1, open_timeout=5.0, kit=rec.kit, clock=clock)
    call, _ = _flaky()
    guarded = breaker(call)
    with pytest.raises(Down):
        guarded(1)
    clock.advance(5.0)
    with pytest.raises(Down):  # the probe fails
        guarded(1)
    assert breaker.state == "open"
    rec.metrics.assert_counter(TRANSITIONS, 1, breaker="db", **{"from": "half_open"}, to="open")
    clock.advance(4.9)
    with pytest.raises(OpenError):
        guarded(1)


def test_half_open_lets_only_the_configured_probes_through() -> None:
    rec, clock = recording(), FakeClock()
    breaker = Breaker(
        "db",
        consecutive_failures=1,
        open_timeout=1.0,
        half_open_requests=2,
        kit=rec.kit,
        clock=clock,
    )
    with pytest.raises(Down):
        breaker(_flaky()[0])(1)
    clock.advance(1.0)
    # Two probes in flight (each one calls the next from inside): the third call is refused.
    refused: list[BaseException] = []

    def third(request: Any) -> Any:
        try:
            breaker(lambda r: r)(request)
        except HalfOpenFullError as err:
            refused.append(err)
        return request

    def second(request: Any) -> Any:
        return breaker(third)(request)

    assert breaker(second)(1) == 1
    assert len(refused) == 1
    assert refused[0].headers == {"Retry-After": "1"}
    rec.metrics.assert_counter(REJECTED, 1, breaker="db", reason="half_open_full")
    assert breaker.state == "closed"  # two probe successes close it


def test_a_probe_runs_with_the_probe_deadline() -> None:
    rec, clock = recording(), FakeClock()
    breaker = Breaker(
        "db",
        consecutive_failures=1,
        open_timeout=1.0,
        probe_timeout=0.5,
        kit=rec.kit,
        clock=clock,
    )
    seen: list[float | None] = []

    def call(request: Any) -> Any:
        seen.append(context.current().deadline)
        if request == "fail":
            raise Down
        return request

    guarded = breaker(call)
    with context.scoped(timeout=60.0) as outer, pytest.raises(Down):
        guarded("fail")  # closed: the caller's deadline as it is
    clock.advance(1.0)
    with context.scoped(timeout=60.0) as probing:
        assert guarded("ok") == "ok"  # the probe: its deadline moved earlier
    assert guarded("ok") == "ok"  # closed again: no deadline added
    assert seen[0] == outer.deadline
    assert seen[1] is not None
    assert probing.deadline is not None
    assert seen[1] < probing.deadline
    assert seen[2] is None


def test_the_transition_reports_the_counts_that_caused_it() -> None:
    rec = recording()
    breaker = Breaker("payments", consecutive_failures=2, kit=rec.kit)
    guarded = breaker(_flaky()[0])
    with rec.kit.tracer.span("checkout"):
        for _ in range(2):
            with pytest.raises(Down):
                guarded(1)
    [opened] = [r for r in rec.logs if r.get("to") == "open"]
    assert opened["level"] == "warn"
    assert opened["from"] == "closed"
    assert (opened["requests"], opened["total_failures"], opened["consecutive_failures"]) == (
        2,
        2,
        2,
    )
    [span] = rec.spans.spans
    [(name, _, attrs)] = span.events or []
    assert name == "kitobs.breaker.transition"
    assert attrs is not None
    assert attrs["kitobs.breaker.to"] == "open"
    assert attrs["kitobs.breaker.consecutive_failures"] == 2
    assert attrs["kitobs.breaker.total_successes"] == 0
    assert breaker.counts() == Counts()  # the new state starts from zero


@pytest.mark.parametrize(
    ("failures", "business_trips", "exception_trips"),
    [("both", True, True), ("exception", False, True), ("business", True, False)],
)
def test_what_counts_as_a_failure_is_configurable(
    failures: str, business_trips: bool, exception_trips: bool
) -> None:
    rec = recording()
    business = Breaker("b", consecutive_failures=1, failures=failures, kit=rec.kit)
    assert isinstance(business(lambda r: Failed())(1), Failed)
    assert business.state == ("open" if business_trips else "closed")
    raised = Breaker("e", consecutive_failures=1, failures=failures, kit=rec.kit)
    with pytest.raises(Down):
        raised(_flaky()[0])(1)
    assert raised.state == ("open" if exception_trips else "closed")


def test_a_refusal_from_inner_middleware_is_not_a_failure() -> None:
    rec = recording()
    breaker = Breaker("b", consecutive_failures=1, kit=rec.kit)

    def refuse(request: Any) -> Any:
        raise RequestError("no")

    with pytest.raises(RequestError):
        breaker(refuse)(1)
    assert breaker.state == "closed"


def test_a_custom_failure_predicate_and_trip_rule() -> None:
    rec = recording()
    breaker = Breaker(
        "b",
        trip=failure_ratio(0.5, minimum=4),
        is_failure=lambda response, exc: response == "bad",
        kit=rec.kit,
    )
    guarded = breaker(lambda r: r)
    for answer in ("ok", "bad", "ok"):
        guarded(answer)
    assert breaker.state == "closed"  # 1 failure of 3 calls: below the minimum of 4
    guarded("bad")
    assert breaker.state == "open"  # 2 of 4


def test_a_predicate_that_raises_judges_a_failure_and_frees_the_probe() -> None:
    rec, clock = recording(), FakeClock()

    def broken(response: Any, exc: BaseException | None) -> bool:
        raise RuntimeError("bug in the predicate")

    breaker = Breaker(
        "b", consecutive_failures=1, open_timeout=1.0, is_failure=broken, kit=rec.kit, clock=clock
    )
    guarded = breaker(lambda r: r)
    assert guarded(1) == 1  # the caller gets the endpoint's answer
    assert breaker.state == "open"
    clock.advance(1.0)
    assert guarded(2) == 2  # the probe is judged (a failure), not left holding its slot
    assert breaker.state == "open"
    rec.metrics.assert_counter(TRANSITIONS, 1, breaker="b", **{"from": "half_open"}, to="open")


def test_the_counting_window_starts_the_counts_again() -> None:
    rec, clock = recording(), FakeClock()
    breaker = Breaker("b", consecutive_failures=3, interval=10.0, kit=rec.kit, clock=clock)
    guarded = breaker(_flaky()[0])
    for _ in range(2):
        with pytest.raises(Down):
            guarded(1)
    clock.advance(10.0)
    assert breaker.counts() == Counts(requests=0)
    with pytest.raises(Down):
        guarded(1)
    assert breaker.state == "closed"  # 1 failure in this window
    assert breaker.counts().consecutive_failures == 1


def test_a_rejected_call_is_outcome_rejected() -> None:
    rec = recording()
    breaker = Breaker("payments", consecutive_failures=1, kit=rec.kit)
    endpoint = instrumenting(rec.kit, name="charge")(breaker(_flaky()[0]))
    with pytest.raises(Down):
        endpoint(1)
    with pytest.raises(OpenError):
        endpoint(1)
    assert len(rec.metrics.observations(DURATION, endpoint="charge", outcome="exception")) == 1
    assert len(rec.metrics.observations(DURATION, endpoint="charge", outcome="rejected")) == 1


def test_async_endpoints_are_guarded_alike() -> None:
    rec, clock = recording(), FakeClock()
    breaker = Breaker("a", consecutive_failures=1, open_timeout=1.0, kit=rec.kit, clock=clock)
    fail = True

    async def call(request: Any) -> Any:
        await asyncio.sleep(0)
        if fail:
            raise Down
        return request

    guarded = breaker(call)
    assert asyncio.iscoroutinefunction(guarded)

    async def main() -> None:
        nonlocal fail
        with pytest.raises(Down):
            await guarded(1)
        with pytest.raises(OpenError):
            await guarded(1)
        clock.advance(1.0)
        fail = False
        assert await guarded(2) == 2

    asyncio.run(main())
    assert breaker.state == "closed"


def test_the_default_kit_is_resolved_at_the_first_call() -> None:
    from kitobs.kit import reset_default, set_default

    rec = recording()
    reset_default()
    try:
        breaker = Breaker("late", consecutive_failures=1)
        guarded = breaker(_flaky()[0])
        set_default(rec.kit)
        with pytest.raises(Down):
            guarded(1)
        rec.metrics.assert_gauge(STATE, 2, breaker="late")
        rec.metrics.assert_counter(TRANSITIONS, 1, breaker="late", **{"from": "closed"}, to="open")
    finally:
        reset_default()


def test_from_config_reads_the_settings_and_arguments_win() -> None:
    rec = recording(
        **{"circuitbreaker.consecutive_failures": 2, "circuitbreaker.open_timeout": 7.0}
    )
    breaker = from_config(rec.kit, "payments", half_open_requests=3)
    assert (breaker.open_timeout, breaker.half_open_requests) == (7.0, 3)
    assert breaker.probe_timeout is None
    guarded = breaker(_flaky()[0])
    for _ in range(2):
        with pytest.raises(Down):
            guarded(1)
    assert breaker.state == "open"


@pytest.mark.parametrize(
    "bad",
    [
        {"open_timeout": -1.0},
        {"half_open_requests": 0},
        {"consecutive_failures": 0},
        {"failures": "sometimes"},
        {"interval": -2.0},
        {"probe_timeout": 0.0},
    ],
)
def test_bad_parameters_fail_at_construction(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        Breaker("b", kit=recording().kit, **bad)
