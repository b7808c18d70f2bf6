"""Multi-process scrape: kitobs against prometheus_client 0.26's MultiProcessCollector.

Run: ``python benchmarks/bench_multiprocess.py [--quick]``. Forked workers (alive, as gunicorn's)
each write the same counter series and histogram series on both sides; the parent then scrapes
both, timing one scrape at a time with the thread's CPU time (the workers are idle meanwhile).
Two cases per size: a scrape with nothing changed since the last one, and a scrape after every
worker changed every series. Both sides' totals are checked against what the workers did.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

_PROM_DIR = tempfile.mkdtemp(prefix="bench-prom-mp-")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _PROM_DIR  # read when prometheus_client is imported

import prometheus_client  # noqa: E402
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.multiprocess import MultiProcessCollector  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from kitobs.metrics import multiprocess  # noqa: E402

HISTOGRAM_SERIES = 50


def _worker(kdir: Path, series: int, cmd: int, ack: int) -> None:
    kp = multiprocess.Provider(kdir, max_label_sets=series + 10)
    kc = kp.counter("bench_mp", help="x", labels=("series",))
    kh = kp.histogram("bench_mp_duration", help="x", unit="seconds", labels=("route",))
    pc = prometheus_client.Counter("bench_mp", "x", ["series"])
    ph = prometheus_client.Histogram("bench_mp_duration_seconds", "x", ["route"])
    kcs = [kc.labels(str(s)) for s in range(series)]
    pcs = [pc.labels(str(s)) for s in range(series)]
    khs = [kh.labels(str(s)) for s in range(HISTOGRAM_SERIES)]
    phs = [ph.labels(str(s)) for s in range(HISTOGRAM_SERIES)]
    while True:
        what = os.read(cmd, 1)
        if what != b"u":
            return
        for k, p in zip(kcs, pcs, strict=True):
            k.add()
            p.inc()
        for kx, px in zip(khs, phs, strict=True):
            kx.observe(0.3)
            px.observe(0.3)
        os.write(ack, b"1")


def _totals(text: str) -> tuple[float, float, int]:
    """Sum of the counter, sum of the histograms' counts, and the number of counter series."""
    counter = hcount = 0.0
    n = 0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "bench_mp_total":
                counter += s.value
                n += 1
            elif s.name == "bench_mp_duration_seconds_count":
                hcount += s.value
    return counter, hcount, n


def run(workers: int, series: int, repeats: int) -> None:
    kdir = Path(tempfile.mkdtemp(prefix="bench-kitobs-mp-"))
    pipes = []
    pids = []
    for _ in range(workers):
        cmd_r, cmd_w = os.pipe()
        ack_r, ack_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                _worker(kdir, series, cmd_r, ack_w)
            except BaseException:
                traceback.print_exc()
                os.write(ack_w, b"!")  # the parent stops instead of waiting
            finally:
                os._exit(0)
        pids.append(pid)
        pipes.append((cmd_w, ack_r))
    rounds = 0

    def update() -> None:
        nonlocal rounds
        for cmd_w, _ in pipes:
            os.write(cmd_w, b"u")
        for _, ack_r in pipes:
            if os.read(ack_r, 1) != b"1":
                raise RuntimeError("a worker failed; its traceback is above")
        rounds += 1

    reader = multiprocess.Provider(kdir)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=_PROM_DIR)
    update()
    results: dict[str, tuple[list[float], list[float]]] = {
        "unchanged": ([], []),
        "changed": ([], []),
    }
    try:
        for _ in range(repeats):
            for case in ("changed", "unchanged"):
                if case == "changed":
                    update()
                t = time.thread_time()
                ours = reader.exposition()
                a = time.thread_time() - t
                t = time.thread_time()
                theirs = generate_latest(registry)
                b = time.thread_time() - t
                results[case][0].append(a)
                results[case][1].append(b)
                want = (workers * series * rounds, workers * HISTOGRAM_SERIES * rounds, series)
                assert _totals(ours.decode()) == want, (_totals(ours.decode()), want)
                assert _totals(theirs.decode()) == want, (_totals(theirs.decode()), want)
    finally:
        for cmd_w, ack_r in pipes:
            os.write(cmd_w, b"q")
            os.close(cmd_w)
            os.close(ack_r)
        for pid in pids:
            os.waitpid(pid, 0)
        reader.close()
        shutil.rmtree(kdir, ignore_errors=True)
        for f in Path(_PROM_DIR).iterdir():
            f.unlink()
    for case, (a, b) in results.items():
        ma, mb = statistics.median(a), statistics.median(b)
        name = f"scrape, {workers} workers x {series:,} series, {case}"
        print(
            f"{name:<52} kitobs {ma * 1e3:8.1f} ms  MultiProcessCollector {mb * 1e3:8.1f} ms"
            f"  ratio {ma / mb:5.3f} (goal <= 0.200) {'ok' if ma / mb <= 0.2 else 'MISSED'}"
        )


def main() -> None:
    quick = "--quick" in sys.argv
    repeats = 3 if quick else 9
    sizes = [(2, 200)] if quick else [(4, 1_000), (8, 2_000)]
    try:
        for workers, series in sizes:
            run(workers, series, repeats)
    finally:
        shutil.rmtree(_PROM_DIR, ignore_errors=True)


if __name__ == "__main__":
    main()
