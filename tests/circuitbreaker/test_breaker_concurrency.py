"""One breaker under 8 threads, and under an asyncio task group: trip, open, exact probes, close.

The probes block inside the endpoint until all of them are in: a breaker that held a lock across
the call (as pybreaker does) would let only one in and the test would fail on the barrier.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kitobs.circuitbreaker import Breaker, HalfOpenFullError, OpenError
from tests.support.resilience import FakeClock, recording

THREADS = 8
PROBES = 3
TRANSITIONS = "kitobs_breaker_transitions_total"
REJECTED = "kitobs_breaker_rejected_total"


class Down(Exception):
    pass


def _hammer(fn: Callable[[], Any], n: int) -> list[Any]:
    """Run *fn* n times on each of 8 threads at once; gather what each call returned or raised."""
    start = threading.Barrier(THREADS)

    def worker() -> list[Any]:
        start.wait(timeout=10)
        out: list[Any] = []
        for _ in range(n):
            try:
                out.append(fn())
            except Exception as exc:
                out.append(exc)
        return out

    with ThreadPoolExecutor(THREADS) as pool:
        futures = [pool.submit(worker) for _ in range(THREADS)]
        return [r for f in futures for r in f.result(timeout=30)]


def test_threads_trip_wait_and_recover_with_exactly_the_probes() -> None:
    rec, clock = recording(), FakeClock()
    breaker = Breaker(
        "shared",
        consecutive_failures=5,
        open_timeout=30.0,
        half_open_requests=PROBES,
        kit=rec.kit,
        clock=clock,
    )
    mode = {"fail": True}
    entered: list[int] = []
    lock = threading.Lock()
    probes_in = threading.Barrier(PROBES)
    release = threading.Event()

    def call(request: Any) -> Any:
        with lock:
            entered.append(request)
        if mode["fail"]:
            raise Down
        probes_in.wait(timeout=10)  # every probe is inside at the same time
        release.wait(timeout=10)
        return request

    guarded = breaker(call)

    # Trip: every call either reached the failing endpoint or was refused as open.
    results = _hammer(lambda: guarded(1), 50)
    downs = sum(isinstance(r, Down) for r in results)
    opens = sum(type(r) is OpenError for r in results)
    assert downs + opens == THREADS * 50
    assert downs == len(entered) >= 5
    assert breaker.state == "open"
    rec.metrics.assert_counter(TRANSITIONS, 1, breaker="shared", **{"from": "closed"}, to="open")

    # The open period: nothing reaches the endpoint.
    entered.clear()
    results = _hammer(lambda: guarded(2), 20)
    assert all(type(r) is OpenError for r in results)
    assert entered == []

    # Half-open: of 8 concurrent callers exactly PROBES get in; the others are refused at once.
    clock.advance(30.0)
    mode["fail"] = False
    refused: list[BaseException] = []
    done = threading.Event()

    def caller() -> Any:
        try:
            return guarded(3)
        except HalfOpenFullError as err:
            with lock:
                refused.append(err)
                if len(refused) == THREADS - PROBES:
                    done.set()
            return err

    with ThreadPoolExecutor(THREADS) as pool:
        futures = [pool.submit(caller) for _ in range(THREADS)]
        assert done.wait(timeout=10)  # the refusals came while the probes were still running
        release.set()
        answers = [f.result(timeout=10) for f in futures]
    assert entered == [3] * PROBES
    assert answers.count(3) == PROBES
    assert len(refused) == THREADS - PROBES
    assert breaker.state == "closed"
    rec.metrics.assert_counter(
        REJECTED, THREADS - PROBES, breaker="shared", reason="half_open_full"
    )
    rec.metrics.assert_counter(
        TRANSITIONS, 1, breaker="shared", **{"from": "half_open"}, to="closed"
    )


def test_a_task_group_trips_waits_and_recovers_with_exactly_the_probes() -> None:
    rec, clock = recording(), FakeClock()
    breaker = Breaker(
        "aio",
        consecutive_failures=5,
        open_timeout=30.0,
        half_open_requests=PROBES,
        kit=rec.kit,
        clock=clock,
    )

    async def main() -> None:
        mode = {"fail": True}
        entered: list[int] = []
        release = asyncio.Event()

        async def call(request: Any) -> Any:
            entered.append(request)
            await asyncio.sleep(0)
            if mode["fail"]:
                raise Down
            await release.wait()
            return request

        guarded = breaker(call)

        async def attempt(request: int) -> Any:
            try:
                return await guarded(request)
            except Exception as exc:
                return exc

        async def gather(request: int, n: int) -> list[Any]:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(attempt(request)) for _ in range(n)]
            return [t.result() for t in tasks]

        results = await gather(1, 64)
        downs = sum(isinstance(r, Down) for r in results)
        assert downs == len(entered) >= 5
        assert downs + sum(type(r) is OpenError for r in results) == 64
        assert breaker.state == "open"

        entered.clear()
        assert all(type(r) is OpenError for r in await gather(2, 16))
        assert entered == []

        clock.advance(30.0)
        mode["fail"] = False
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(attempt(3)) for _ in range(16)]
            while sum(t.done() for t in tasks) < 16 - PROBES:
                await asyncio.sleep(0)  # the refusals finish while the probes wait
            assert entered == [3] * PROBES
            release.set()
        answers = [t.result() for t in tasks]
        assert answers.count(3) == PROBES
        assert sum(isinstance(a, HalfOpenFullError) for a in answers) == 16 - PROBES

    asyncio.run(main())
    assert breaker.state == "closed"
    rec.metrics.assert_counter(REJECTED, 16 - PROBES, breaker="aio", reason="half_open_full")
    rec.metrics.assert_counter(TRANSITIONS, 1, breaker="aio", **{"from": "half_open"}, to="closed")
