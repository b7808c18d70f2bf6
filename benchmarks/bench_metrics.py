"""Metrics hot paths and exposition: kitobs against prometheus_client 0.26, in one process.

Run: ``python benchmarks/bench_metrics.py [--quick]``. Each case runs kitobs and its peer in
interleaved repeats and prints the medians and the ratio kitobs/peer with the goal from issue 3.
(The statsd case is in ``bench_statsd.py``.)

Each case is a statement as a user writes it (``c.labels("GET", "200").add()``), compiled by
`timeit` into its loop: wrapping it in a lambda would add one Python call to both sides and
measure the harness, not the libraries. The timer is the thread's CPU time, so other processes
on a shared machine do not land in one side's figure. The binding cases compare like with like:
positional with positional (``.labels("GET", "200")``), keyword with keyword
(``with_labels(method=..., code=...)`` against ``.labels(method=..., code=...)``).
"""

from __future__ import annotations

import statistics
import sys
import time
import timeit

import prometheus_client
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kitobs.metrics import prometheus

prometheus_client.disable_created_metrics()  # compare both without _created series


def case(
    name: str,
    ours: str,
    peer: str,
    ns: dict[str, object],
    number: int,
    repeats: int,
    goal: float,
) -> float:
    """Time statements *ours* and *peer* over names *ns*; print medians and their ratio."""
    mine = timeit.Timer(ours, globals=ns, timer=time.thread_time)
    theirs = timeit.Timer(peer, globals=ns, timer=time.thread_time)
    a: list[float] = []
    b: list[float] = []
    for _ in range(repeats):  # interleaved, so drift hits both alike
        a.append(mine.timeit(number) / number)
        b.append(theirs.timeit(number) / number)
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
    n, reps = (20_000, 5) if quick else (200_000, 9)
    k = prometheus.Provider()
    r = CollectorRegistry()

    kc = k.counter("bench_requests", help="x", labels=("method", "code"))
    pc = prometheus_client.Counter("bench_requests", "x", ["method", "code"], registry=r)
    kchild, pchild = kc.labels("GET", "200"), pc.labels("GET", "200")
    ns: dict[str, object] = {"kc": kc, "pc": pc, "kchild": kchild, "pchild": pchild}
    case("counter add, bound child", "kchild.add()", "pchild.inc()", ns, n, reps, 1 / 2)
    case(
        "bind 2 labels + add (positional)",
        'kc.labels("GET", "200").add()',
        'pc.labels("GET", "200").inc()',
        ns,
        n // 2,
        reps,
        1 / 8,
    )
    case(
        "bind 2 labels + add (keyword)",
        'kc.with_labels(method="GET", code="200").add()',
        'pc.labels(method="GET", code="200").inc()',
        ns,
        n // 2,
        reps,
        1 / 8,
    )
    # Both sides did the same adds on the same series: a broken statement cannot pass as fast.
    assert kchild.value == pchild._value.get() == (n + n) * reps, (kchild.value, pchild._value)

    kh = k.histogram("bench_duration", help="x", unit="seconds", labels=("route",))
    ph = prometheus_client.Histogram("bench_duration_seconds", "x", ["route"], registry=r)
    assert len(ph._upper_bounds) == 15
    ns = {"khc": kh.labels("/"), "phc": ph.labels("/")}
    case(
        "histogram observe, bound child (14 buckets)",
        "khc.observe(0.3)",
        "phc.observe(0.3)",
        ns,
        n,
        reps,
        1 / 3,
    )

    # The guard's limit is raised so that kitobs exposes all 10,000 series too (by default it
    # would fold past 2,000 and render far fewer lines than its peer).
    k2, r2 = prometheus.Provider(max_label_sets=20_000), CollectorRegistry()
    kc2 = k2.counter("bench_series", help="x", labels=("a", "b"))
    pc2 = prometheus_client.Counter("bench_series", "x", ["a", "b"], registry=r2)
    kchildren, pchildren = [], []
    for i in range(10_000):
        kchildren.append(kc2.labels(str(i % 100), str(i)))
        pchildren.append(pc2.labels(str(i % 100), str(i)))
        kchildren[-1].add(i)
        pchildren[-1].inc(i)
    ours, theirs = _series(k2.exposition()), _series(generate_latest(r2))
    assert len(ours) == 10_000, len(ours)
    assert ours == theirs, len(theirs)
    ns = {
        "k2": k2,
        "r2": r2,
        "generate_latest": generate_latest,
        "kchildren": kchildren,
        "pchildren": pchildren,
    }
    case(
        "exposition, 10,000 series",
        "k2.exposition()",
        "generate_latest(r2)",
        ns,
        3 if quick else 10,
        reps,
        1 / 2,
    )
    # Every series changed since the last scrape (the adds are timed on both sides).
    case(
        "add to 10,000 series + exposition",
        "for c in kchildren: c.add()\nk2.exposition()",
        "for c in pchildren: c.inc()\ngenerate_latest(r2)",
        ns,
        3 if quick else 10,
        reps,
        1 / 2,
    )
    assert _series(k2.exposition()) == _series(generate_latest(r2))


def _series(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The bench_series samples of an exposition: both sides must expose the same."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text.decode())
        for s in f.samples
        if s.name.startswith("bench_series")
    }


if __name__ == "__main__":
    main()
