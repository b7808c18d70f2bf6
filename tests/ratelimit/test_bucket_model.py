"""The token bucket against an exact model: random steps on an injected clock.

Times are multiples of 1/64 s and rates small integers, so every float the bucket computes is
exact and its decisions must match the model's (fractions) one for one.
"""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from kitobs.ratelimit import TokenBucket
from tests.support.resilience import FakeClock

STEPS = st.lists(st.tuples(st.integers(0, 200), st.sampled_from(["allow", "reserve"])), max_size=60)


@settings(max_examples=80, deadline=None)
@given(rate=st.integers(1, 8), burst=st.integers(1, 5), steps=STEPS)
def test_bucket_matches_the_model(rate: int, burst: int, steps: list[tuple[int, str]]) -> None:
    clock = FakeClock(0.0)
    bucket = TokenBucket(rate=rate, burst=burst, clock=clock)
    tokens, now = Fraction(burst), Fraction(0)
    for ticks, op in steps:
        dt = Fraction(ticks, 64)
        clock.advance(float(dt))
        now += dt
        tokens = min(Fraction(burst), tokens + dt * rate)
        if op == "allow":
            want = tokens >= 1
            if want:
                tokens -= 1
            assert bucket.allow() is want
        else:
            delay = max(Fraction(0), (1 - tokens) / rate)
            got = bucket.reserve(max_wait=0.5)
            if delay > Fraction(1, 2):
                assert got is None
            else:
                tokens -= 1
                assert got == float(delay)
