"""teststat: the conformance suite every metrics backend passes, without pytest.

Each check records on an instrument, reads the result back through a reader of the backend's
own output, and raises ``AssertionError("want …, have …")`` on a mismatch (go-kit's teststat):

- `check_counter`: random deltas sum exactly;
- `check_gauge`: a random walk of sets and adds ends at the right value;
- `check_histogram`: a seeded normal sample of 12,345 values (mean 500, sd 25) gives exact
  bucket counts where the backend keeps buckets, and p50/p90/p95/p99 within 1% of
  ``NormalDist(500, 25).inv_cdf(q)`` where it computes quantiles;
- `check_concurrent_adds`: 8 threads x 100,000 adds lose nothing.

Example::

    >>> from kitobs.metrics import memory
    >>> p = memory.Provider()
    >>> c = p.counter("jobs", help="Jobs.", labels=("queue",))
    >>> check_counter(c.with_labels(queue="a"), lambda: p.value("jobs", queue="a"))
"""

from __future__ import annotations

import math
import random
import statistics
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kitobs.metrics import Counter, Gauge, Histogram

__all__ = [
    "BUCKETS",
    "QUANTILES",
    "SAMPLE_SIZE",
    "HistogramReading",
    "normal_sample",
    "check_counter",
    "check_gauge",
    "check_histogram",
    "check_concurrent_adds",
]

#: SAMPLE_SIZE is the number of values `check_histogram` observes.
SAMPLE_SIZE = 12_345
#: QUANTILES are the quantiles checked where a backend computes them.
QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.95, 0.99)
#: BUCKETS are the bounds to declare the checked histogram with, around mean 500, sd 25.
BUCKETS: tuple[float, ...] = (425.0, 450.0, 475.0, 490.0, 500.0, 510.0, 525.0, 550.0, 575.0)


@dataclass(frozen=True, slots=True)
class HistogramReading:
    """HistogramReading is what a reader saw of one histogram series, e.g. from an exposition.

    Attributes:
        count: observations counted.
        sum: their sum, or None if the backend does not report it.
        buckets: cumulative counts by upper bound (``le``), or None if it keeps no buckets.
        quantiles: values by quantile (0.5 …), or None if it computes none.
    """

    count: int
    sum: float | None = None
    buckets: Mapping[float, int] | None = None
    quantiles: Mapping[float, float] | None = None


def normal_sample(seed: int = 0, n: int = SAMPLE_SIZE) -> list[float]:
    """normal_sample gives *n* seeded values from N(500, 25), e.g. ``normal_sample()[:3]``."""
    rng = random.Random(seed)
    return [rng.gauss(500.0, 25.0) for _ in range(n)]


def check_counter(counter: Counter, read: Callable[[], float], seed: int = 0) -> None:
    """check_counter adds random deltas; raises AssertionError unless *read()* is their sum."""
    rng = random.Random(seed)
    deltas = [float(rng.randrange(100)) for _ in range(rng.randrange(1, 100))]
    deltas.append(0.5)  # one fraction, so a backend rounding to integers is caught
    for delta in deltas:
        counter.add(delta)
    want, have = math.fsum(deltas), read()
    if not math.isclose(want, have, rel_tol=1e-9):
        raise AssertionError(f"counter: want {want}, have {have}")


def check_gauge(gauge: Gauge, read: Callable[[], float], seed: int = 0) -> None:
    """check_gauge sets and adds at random; raises AssertionError unless *read()* follows."""
    rng = random.Random(seed)
    want = 0.0
    for _ in range(rng.randrange(10, 100)):
        if rng.random() < 0.3:
            want = float(rng.randrange(-1000, 1000))
            gauge.set(want)
        else:
            delta = float(rng.randrange(-50, 50))
            gauge.add(delta)
            want += delta
        have = read()
        if not math.isclose(want, have, rel_tol=1e-9, abs_tol=1e-9):
            raise AssertionError(f"gauge: want {want}, have {have}")


def check_histogram(
    histogram: Histogram,
    read: Callable[[], HistogramReading],
    seed: int = 0,
    *,
    tolerance: float = 0.01,
) -> None:
    """check_histogram observes `normal_sample`; raises AssertionError on what *read()* shows.

    Checks the count and the sum (when reported), the cumulative bucket counts exactly (when
    kept, for every bound the backend reports), and each quantile (when computed) within
    *tolerance* of the normal distribution's.
    """
    sample = normal_sample(seed)
    for value in sample:
        histogram.observe(value)
    got = read()
    if got.count != len(sample):
        raise AssertionError(f"histogram count: want {len(sample)}, have {got.count}")
    if got.sum is not None:
        want_sum = math.fsum(sample)
        if not math.isclose(want_sum, got.sum, rel_tol=1e-9):
            raise AssertionError(f"histogram sum: want {want_sum}, have {got.sum}")
    if got.buckets is None and got.quantiles is None:
        raise AssertionError("histogram: the reader gave neither buckets nor quantiles")
    if got.buckets is not None:
        if not got.buckets:
            raise AssertionError("histogram buckets: want some, have none")
        for bound, have_count in sorted(got.buckets.items()):
            want_count = sum(1 for v in sample if v <= bound)
            if have_count != want_count:
                raise AssertionError(
                    f"histogram bucket le={bound}: want {want_count}, have {have_count}"
                )
    if got.quantiles is not None:
        dist = statistics.NormalDist(500.0, 25.0)
        for q in QUANTILES:
            if q not in got.quantiles:
                raise AssertionError(f"histogram quantile {q}: want one, have none")
            want_q, have_q = dist.inv_cdf(q), got.quantiles[q]
            if abs(have_q - want_q) > tolerance * abs(want_q):
                raise AssertionError(
                    f"histogram quantile {q}: want {want_q:.3f} ±{tolerance:.0%}, have {have_q}"
                )


def check_concurrent_adds(
    counter: Counter,
    read: Callable[[], float],
    *,
    threads: int = 8,
    adds: int = 100_000,
) -> None:
    """check_concurrent_adds adds 1 from *threads* threads *adds* times each; nothing is lost.

    The switch interval is lowered meanwhile so threads interleave as much as they can.
    """
    start = threading.Barrier(threads)

    def work() -> None:
        start.wait()
        add = counter.add
        for _ in range(adds):
            add(1.0)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        workers = [threading.Thread(target=work) for _ in range(threads)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
    finally:
        sys.setswitchinterval(old)
    want, have = float(threads * adds), read()
    if want != have:
        raise AssertionError(f"concurrent adds: want {want}, have {have}")
