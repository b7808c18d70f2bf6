"""Metrics hot paths and exposition: kitobs against prometheus_client 0.26, in one process.

Run: ``python benchmarks/bench_metrics.py [--quick]``. Each case runs kitobs and its peer in
interleaved repeats and prints the medians and the ratio kitobs/peer with the goal from issue 3.
(The statsd case is in ``bench_statsd.py``.)
"""

from __future__ import annotations

import statistics
import sys
import timeit
from collections.abc import Callable

import prometheus_client
from prometheus_client import CollectorRegistry, generate_latest

from kitobs.metrics import prometheus

prometheus_client.disable_created_metrics()  # compare both without _created series


def bench(stmt: Callable[[], object], number: int) -> float:
    """Seconds per call of one timing run."""
    return timeit.timeit(stmt, number=number) / number


def case(
    name: str,
    ours: Callable[[], object],
    peer: Callable[[], object],
    number: int,
    repeats: int,
    goal: float,
) -> float:
    a: list[float] = []
    b: list[float] = []
    for _ in range(repeats):  # interleaved, so drift hits both alike
        a.append(bench(ours, number))
        b.append(bench(peer, number))
    ma, mb = statistics.median(a), statistics.median(b)
    ratio = ma / mb
    unit, scale = ("ms", 1e3) if ma > 1e-4 else ("ns", 1e9)
    verdict = "ok" if ratio <= goal else "MISSED"
    print(
        f"{name:<44} kitobs {ma * scale:9.1f} {unit}  prometheus_client {mb * scale:9.1f} {unit}"
        f"  ratio {ratio:5.3f} (goal <= {goal:.3f}) {verdict}"
    )
    return ratio


def main() -> None:
    quick = "--quick" in sys.argv
    n, reps = (20_000, 5) if quick else (200_000, 7)
    k = prometheus.Provider()
    r = CollectorRegistry()

    kc = k.counter("bench_requests", help="x", labels=("method", "code"))
    pc = prometheus_client.Counter("bench_requests", "x", ["method", "code"], registry=r)
    kchild, pchild = kc.labels("GET", "200"), pc.labels("GET", "200")
    case("counter add, bound child", kchild.add, pchild.inc, n, reps, 1 / 2)

    case(
        "bind 2 labels + add (positional)",
        lambda: kc.labels("GET", "200").add(),
        lambda: pc.labels("GET", "200").inc(),
        n // 2,
        reps,
        1 / 8,
    )
    case(
        "bind 2 labels + add (keyword)",
        lambda: kc.with_labels(method="GET", code="200").add(),
        lambda: pc.labels(method="GET", code="200").inc(),
        n // 2,
        reps,
        1 / 8,
    )

    kh = k.histogram("bench_duration", help="x", unit="seconds", labels=("route",))
    ph = prometheus_client.Histogram("bench_duration_seconds", "x", ["route"], registry=r)
    khc, phc = kh.labels("/"), ph.labels("/")
    assert len(ph._upper_bounds) == 15
    case(
        "histogram observe, bound child (14 buckets)",
        lambda: khc.observe(0.3),
        lambda: phc.observe(0.3),
        n,
        reps,
        1 / 3,
    )

    k2, r2 = prometheus.Provider(), CollectorRegistry()
    kc2 = k2.counter("bench_series", help="x", labels=("a", "b"))
    pc2 = prometheus_client.Counter("bench_series", "x", ["a", "b"], registry=r2)
    for i in range(10_000):
        kc2.labels(str(i % 100), str(i)).add(i)
        pc2.labels(str(i % 100), str(i)).inc(i)
    case(
        "exposition, 10,000 series",
        k2.exposition,
        lambda: generate_latest(r2),
        3 if quick else 10,
        reps,
        1 / 2,
    )


if __name__ == "__main__":
    main()
