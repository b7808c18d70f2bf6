"""Resilience middleware hot paths: kitobs against pybreaker and limits, in one process.

Run: ``python benchmarks/bench_resilience.py [--quick]``. Two cases, each the cost a call pays
for the protection, beyond calling the endpoint itself:

- a closed circuit breaker: a `kitobs.circuitbreaker.Breaker` wrapping the endpoint, against
  ``pybreaker.CircuitBreaker.call(endpoint, request)``; goal: at most 1/3 of pybreaker's;
- an allowing rate limiter: `kitobs.ratelimit.erroring` around the endpoint, against the
  ``limits`` library's in-memory moving-window ``hit`` before calling it; goal: at most 1/5.

Both kitobs sides record on a Kit with the in-memory metrics provider (the limiter counts every
decision). Each statement is compiled by `timeit` into its loop, kitobs and peer timed in
interleaved repeats on the thread's CPU time; the bare endpoint call is timed the same way and
subtracted from both, and the medians and their ratio are printed.
"""

from __future__ import annotations

import statistics
import sys
import time
import timeit

import limits
import pybreaker
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from kitobs.circuitbreaker import Breaker
from kitobs.config import load
from kitobs.kit import Kit
from kitobs.log import nop
from kitobs.metrics import memory
from kitobs.ratelimit import Limiter, erroring
from kitobs.tracing import Tracer


def endpoint(request: object) -> object:
    return request


def timed(stmt: str, ns: dict[str, object], number: int) -> float:
    return timeit.Timer(stmt, globals=ns, timer=time.thread_time).timeit(number) / number


def case(
    name: str,
    ours: str,
    peer: str,
    peer_name: str,
    ns: dict[str, object],
    number: int,
    repeats: int,
    goal: float,
) -> float:
    """Time *ours*, *peer* and the bare call; print the added costs and their ratio."""
    bare: list[float] = []
    a: list[float] = []
    b: list[float] = []
    for _ in range(repeats):  # interleaved, so drift hits all three alike
        bare.append(timed("endpoint(1)", ns, number))
        a.append(timed(ours, ns, number))
        b.append(timed(peer, ns, number))
    floor = statistics.median(bare)
    ma = max(statistics.median(a) - floor, 1e-12)
    mb = max(statistics.median(b) - floor, 1e-12)
    ratio = ma / mb
    verdict = "ok" if ratio <= goal else "MISSED"
    print(
        f"{name:<26} kitobs {ma * 1e6:7.3f} us  {peer_name} {mb * 1e6:7.3f} us"
        f"  ratio {ratio:5.3f} (goal <= {goal:.3f}) {verdict}"
    )
    return ratio


def main() -> None:
    quick = "--quick" in sys.argv
    number, repeats = (2000, 3) if quick else (200_000, 9)
    kit = Kit(
        load(path=None, env={}, search=False),
        logger=nop(),
        metrics=memory.Provider(),
        tracer=Tracer(),
    )
    guarded = Breaker("bench", kit=kit)(endpoint)
    peer_breaker = pybreaker.CircuitBreaker()
    limited = erroring(Limiter("bench", rate=1e12, burst=10**9, kit=kit))(endpoint)
    window = MovingWindowRateLimiter(MemoryStorage())
    item = limits.parse("1000000000/second")
    ns: dict[str, object] = {
        "endpoint": endpoint,
        "guarded": guarded,
        "peer_breaker": peer_breaker,
        "limited": limited,
        "window": window,
        "item": item,
    }
    print(f"added cost per call, median of {repeats} x {number} calls (thread CPU time)")
    case(
        "closed breaker",
        "guarded(1)",
        "peer_breaker.call(endpoint, 1)",
        "pybreaker call",
        ns,
        number,
        repeats,
        1 / 3,
    )
    case(
        "allowing limiter",
        "limited(1)",
        "window.hit(item, 'bench') and endpoint(1)",
        "limits moving-window hit",
        ns,
        number,
        repeats,
        1 / 5,
    )


if __name__ == "__main__":
    main()
