"""The breaker against a plain model of gobreaker's state machine: random steps, one caller."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kitobs.circuitbreaker import Breaker, Counts, HalfOpenFullError, OpenError
from tests.support.resilience import FakeClock, recording


class Down(Exception):
    pass


class Model:
    """gobreaker's rules, written out: counts per generation, timers, transitions."""

    def __init__(self, threshold: int, timeout: float, probes: int, interval: float) -> None:
        self.threshold, self.timeout, self.probes, self.interval = (
            threshold,
            timeout,
            probes,
            interval,
        )
        self.state = "closed"
        self.counts = [0, 0, 0, 0, 0]  # requests, successes, failures, consecutive s, f
        self.expiry = interval if interval else math.inf
        self.moves: Counter[tuple[str, str]] = Counter()

    def move(self, to: str, now: float) -> None:
        self.moves[self.state, to] += 1
        self.state = to
        self.renew(now)

    def renew(self, now: float) -> None:
        self.counts = [0, 0, 0, 0, 0]
        if self.state == "closed":
            self.expiry = now + self.interval if self.interval else math.inf
        elif self.state == "open":
            self.expiry = now + self.timeout
        else:
            self.expiry = math.inf

    def current(self, now: float) -> None:
        if self.state == "closed" and now >= self.expiry:
            self.renew(now)
        elif self.state == "open" and now >= self.expiry:
            self.move("half_open", now)

    def call(self, ok: bool, now: float) -> str:
        self.current(now)
        if self.state == "open":
            return "open"
        if self.state == "half_open" and self.counts[0] >= self.probes:
            return "full"
        c = self.counts
        c[0] += 1
        if ok:
            c[1], c[3], c[4] = c[1] + 1, c[3] + 1, 0
            if self.state == "half_open" and c[3] >= self.probes:
                self.move("closed", now)
            return "ok"
        c[2], c[4], c[3] = c[2] + 1, c[4] + 1, 0
        if self.state == "half_open" or c[4] >= self.threshold:
            self.move("open", now)
        return "down"


STEPS = st.lists(st.one_of(st.integers(0, 12), st.booleans()), max_size=80)


@settings(max_examples=80, deadline=None)
@given(
    threshold=st.integers(1, 4),
    timeout=st.integers(1, 5),
    probes=st.integers(1, 3),
    interval=st.sampled_from([0, 3, 7]),
    steps=STEPS,
)
def test_breaker_matches_the_model(
    threshold: int, timeout: int, probes: int, interval: int, steps: list[int | bool]
) -> None:
    rec, clock = recording(), FakeClock(0.0)
    breaker = Breaker(
        "m",
        consecutive_failures=threshold,
        open_timeout=timeout,
        half_open_requests=probes,
        interval=interval,
        kit=rec.kit,
        clock=clock,
    )
    model = Model(threshold, timeout, probes, interval)

    def endpoint(ok: bool) -> Any:
        if not ok:
            raise Down
        return "ok"

    guarded = breaker(endpoint)
    for step in steps:
        if not isinstance(step, bool):
            clock.advance(step / 4)  # quarter seconds
            continue
        want = model.call(step, clock.now)
        try:
            have = guarded(step)
        except Down:
            have = "down"
        except HalfOpenFullError:
            have = "full"
        except OpenError:
            have = "open"
        assert have == want
        assert breaker.counts() == Counts(*model.counts)
        assert breaker.state == model.state
    for (before, after), n in model.moves.items():
        rec.metrics.assert_counter(
            "kitobs_breaker_transitions_total", n, breaker="m", **{"from": before}, to=after
        )
    want_state = {"closed": 0, "half_open": 1, "open": 2}[model.state]
    rec.metrics.assert_gauge("kitobs_breaker_state", want_state, breaker="m")


@pytest.mark.parametrize("steps", [[False] * 3 + [20, True, True]])
def test_the_model_itself_trips_and_recovers(steps: list[int | bool]) -> None:
    # The model is checked on one known path, so a model that never trips cannot pass above.
    model = Model(threshold=3, timeout=5, probes=2, interval=0)
    now = 0.0
    results = []
    for step in steps:
        if isinstance(step, bool):
            results.append(model.call(step, now))
        else:
            now += step / 4
    assert results == ["down", "down", "down", "ok", "ok"]
    assert model.moves == {
        ("closed", "open"): 1,
        ("open", "half_open"): 1,
        ("half_open", "closed"): 1,
    }
