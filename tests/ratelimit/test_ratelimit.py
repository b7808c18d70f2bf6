"""Token buckets exact on an injected clock, keyed limits, the two middleware forms, metrics."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from kitobs.endpoint import context
from kitobs.endpoint.instrument import instrumenting
from kitobs.errors import ConfigError
from kitobs.ratelimit import (
    LimitedError,
    Limiter,
    TokenBucket,
    delaying,
    erroring,
    from_config,
    from_metadata,
    from_value,
)
from tests.support.resilience import FakeClock, recording

DECISIONS = "kitobs_ratelimit_decisions_total"
WAIT = "kitobs_ratelimit_wait_duration_seconds"
EVICTED = "kitobs_ratelimit_keys_evicted_total"
DURATION = "kitobs_endpoint_duration_seconds"


def test_bucket_is_exact_against_the_clock() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=2.0, burst=3, clock=clock)
    assert [bucket.allow() for _ in range(4)] == [True, True, True, False]  # starts full
    assert bucket.retry_after() == 0.5
    clock.advance(0.25)
    assert not bucket.allow()  # half a token
    clock.advance(0.25)
    assert bucket.allow()
    assert not bucket.allow()
    clock.advance(100.0)  # refills to burst, no more
    assert [bucket.allow() for _ in range(4)] == [True, True, True, False]


def test_reserve_takes_ahead_and_respects_the_bound() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=4.0, burst=1, clock=clock)
    assert bucket.reserve() == 0.0
    assert bucket.reserve() == 0.25  # the next token, in debt
    assert bucket.reserve(max_wait=0.4) is None  # the one after comes at 0.5 s
    assert bucket.reserve(max_wait=0.5) == 0.5
    bucket.refund()
    assert bucket.reserve(max_wait=0.5) == 0.5  # the refunded token is the next one


def test_wait_is_bounded_by_the_request_deadline() -> None:
    bucket = TokenBucket(rate=0.01, burst=1)
    assert bucket.wait() is True  # the burst
    with context.scoped(timeout=0.05):
        assert bucket.wait() is False  # the next token is 100 s away: refused at once
    assert bucket.wait(timeout=1.0) is False

    async def main() -> bool:
        with context.scoped(timeout=0.05):
            return await bucket.wait_async()

    assert asyncio.run(main()) is False


def test_wait_sleeps_for_a_near_token() -> None:
    bucket = TokenBucket(rate=200.0, burst=1)
    assert bucket.allow()
    assert bucket.wait(timeout=1.0) is True

    async def main() -> bool:
        return await bucket.wait_async(timeout=1.0)

    assert asyncio.run(main()) is True


def test_eight_threads_never_get_more_than_rate_times_elapsed_plus_burst() -> None:
    rate, burst = 2000.0, 50
    begin = time.monotonic()
    bucket = TokenBucket(rate=rate, burst=burst)
    allowed = [0] * 8
    start = threading.Barrier(8)

    def worker(i: int) -> None:
        start.wait(timeout=10)
        for _ in range(5000):
            if bucket.allow():
                allowed[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    elapsed = time.monotonic() - begin
    assert sum(allowed) >= burst  # the burst is there at once
    assert sum(allowed) <= rate * elapsed + burst + 1e-6


def test_the_erroring_form_refuses_with_retry_after_and_counts() -> None:
    rec, clock = recording(), FakeClock()
    limiter = Limiter("api", rate=0.5, burst=1, kit=rec.kit, clock=clock)
    rec.metrics.assert_counter(DECISIONS, 0, limiter="api", decision="limited")  # shown at 0
    endpoint = instrumenting(rec.kit, name="hello")(erroring(limiter)(lambda r: r))
    assert endpoint(1) == 1
    with pytest.raises(LimitedError) as refused:
        endpoint(2)
    err = refused.value
    assert (err.status_code, err.grpc_status, err.headers) == (
        429,
        "RESOURCE_EXHAUSTED",
        {"Retry-After": "2"},
    )
    rec.metrics.assert_counter(DECISIONS, 1, limiter="api", decision="allowed")
    rec.metrics.assert_counter(DECISIONS, 1, limiter="api", decision="limited")
    assert len(rec.metrics.observations(DURATION, endpoint="hello", outcome="limited")) == 1
    clock.advance(2.0)
    assert endpoint(3) == 3


def test_async_erroring_and_delaying() -> None:
    rec = recording()
    limiter = Limiter("aio", rate=100.0, burst=1, kit=rec.kit)

    async def hello(request: Any) -> Any:
        return request

    erroring_ep = erroring(limiter)(hello)
    delaying_ep = delaying(limiter, max_wait=1.0)(hello)
    assert asyncio.iscoroutinefunction(erroring_ep)
    assert asyncio.iscoroutinefunction(delaying_ep)

    async def main() -> None:
        assert await erroring_ep(1) == 1
        with pytest.raises(LimitedError):
            await erroring_ep(2)
        assert await delaying_ep(3) == 3  # waited for the next token

    asyncio.run(main())
    [waited] = rec.metrics.observations(WAIT, limiter="aio")
    assert 0.0 < waited <= 0.01


def test_the_delaying_form_refuses_what_would_outlast_the_deadline() -> None:
    rec = recording()
    limiter = Limiter("slow", rate=0.01, burst=1, kit=rec.kit)
    endpoint = delaying(limiter)(lambda r: r)
    assert endpoint(1) == 1
    with context.scoped(timeout=0.5), pytest.raises(LimitedError) as refused:
        endpoint(2)
    assert refused.value.headers["Retry-After"] == "100"
    rec.metrics.assert_counter(DECISIONS, 1, limiter="slow", decision="limited")
    assert rec.metrics.observations(WAIT, limiter="slow") == [0.0]


def test_keyed_limits_per_client_with_a_bounded_map() -> None:
    rec, clock = recording(), FakeClock()
    limiter = Limiter(
        "per_client",
        rate=1.0,
        burst=1,
        key=from_metadata("x-client"),
        max_keys=2,
        kit=rec.kit,
        clock=clock,
    )
    endpoint = erroring(limiter)(lambda r: r)

    def as_client(name: str) -> Any:
        with context.scoped(metadata={"X-Client": name}):
            return endpoint(name)

    assert as_client("a") == "a"
    assert as_client("b") == "b"  # its own bucket
    with pytest.raises(LimitedError):
        as_client("a")
    assert as_client("c") == "c"  # evicts b, the least recently used
    assert len(limiter) == 2
    rec.metrics.assert_counter(EVICTED, 1, limiter="per_client")
    assert as_client("b") == "b"  # b starts again with a full bucket (and evicts a)
    rec.metrics.assert_counter(EVICTED, 2, limiter="per_client")


def test_a_flood_of_keys_stays_within_max_keys() -> None:
    rec = recording()
    limiter = Limiter("flood", rate=1.0, burst=1, key=lambda r: r, max_keys=100, kit=rec.kit)
    for i in range(5000):
        assert limiter.allow(i)
    assert len(limiter) == 100
    rec.metrics.assert_counter(EVICTED, 4900, limiter="flood")


def test_keys_from_context_values() -> None:
    key = from_value("claims", "sub", default="anonymous")
    with context.scoped(values={"claims": {"sub": "ada"}}):
        assert key(None) == "ada"
    assert key(None) == "anonymous"


def test_from_config_reads_the_settings_and_arguments_win() -> None:
    rec = recording(**{"ratelimit.rate": 5.0, "ratelimit.burst": 2})
    limiter = from_config(rec.kit, "api", burst=3)
    assert (limiter.rate, limiter.burst, limiter.max_keys, limiter.max_wait) == (
        5.0,
        3,
        10000,
        None,
    )
    # The delaying form takes the configured max_wait: a token 0.2 s away is past 0.1 s.
    waits = from_config(recording(**{"ratelimit.max_wait": 0.1}).kit, "w", rate=5.0, burst=1)
    endpoint = delaying(waits)(lambda r: r)
    assert endpoint(1) == 1
    with pytest.raises(LimitedError):
        endpoint(2)


def test_the_default_kit_is_resolved_at_the_first_decision() -> None:
    from kitobs.kit import reset_default, set_default

    rec = recording()
    reset_default()
    try:
        limiter = Limiter("late", rate=1.0, burst=1)
        set_default(rec.kit)
        assert limiter.allow()
        rec.metrics.assert_counter(DECISIONS, 1, limiter="late", decision="allowed")
    finally:
        reset_default()


@pytest.mark.parametrize(
    "bad",
    [{"rate": 0.0}, {"rate": float("inf")}, {"burst": 0}, {"max_keys": 0}],
)
def test_bad_parameters_fail_at_construction(bad: dict[str, Any]) -> None:
    params: dict[str, Any] = {"rate": 1.0, "burst": 1, **bad}
    with pytest.raises(ConfigError):
        Limiter("x", kit=recording().kit, **params)
