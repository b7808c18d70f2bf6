"""Log benchmark: kitobs logfmt and JSON against structlog and the standard logging module.

Every logger writes the same fields (``ts``, ``level`` and five key/values) to a real file in a
temporary directory, first flushed per line (the default on every side), then buffered. Rows are
measured in interleaved repeats in one process; the table shows medians in ns per call (CPU time
of the calling thread, which a busy shared machine disturbs less, and wall time) and the ratio to
structlog (or, for filtered-out calls, to an empty function taking the same arguments), as the
median of the ratios within each repeat.

    python benchmarks/bench_log.py            # full run, about a minute
    python benchmarks/bench_log.py --quick    # a few thousand calls per row, for smoke tests

Goals: a flushed kitobs line <= 1/3 of structlog's, a buffered one <= 1/4, a filtered-out call
<= 1.5x the empty function called with the same arguments.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import structlog
from _common import NoFlush

from kitobs import log as kitlog

ARGS = ("msg", "hello", "user", 7, "path", "/users/7", "ratio", 0.25, "ok", True)


#: What each logger setup returns: an info call, a filtered-out debug call, and a closer.
Setup = tuple[Callable[[], None], Callable[[], None], Callable[[], None]]


def _empty(*args: object) -> None:
    pass


def _empty_noargs() -> None:
    pass


def _kitobs(path: str, fmt: str, buffered: bool) -> Setup:
    logger = kitlog.new(path, format=fmt, buffered=buffered, level="info")
    info, debug = logger.info, logger.debug
    a = ARGS
    return (lambda: info(*a)), (lambda: debug(*a)), logger.close


def _structlog(path: str, buffered: bool) -> Setup:
    # structlog's fastest documented setup without orjson: filtering bound logger, lean
    # processors, JSON renderer, a concrete bound logger built once (no proxy, no global config).
    f: Any = open(path, "a", buffering=65536 if buffered else -1)  # noqa: SIM115
    out = NoFlush(f) if buffered else f
    wrapper = structlog.make_filtering_bound_logger(logging.INFO)
    logger = wrapper(
        structlog.WriteLogger(out),
        [
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        {},
    )
    info, debug = logger.info, logger.debug

    def close() -> None:
        f.flush()
        f.close()

    return (
        lambda: info("hello", user=7, path="/users/7", ratio=0.25, ok=True),
        lambda: debug("hello", user=7, path="/users/7", ratio=0.25, ok=True),
        close,
    )


def _stdlib(path: str, buffered: bool) -> Setup:
    f: Any = open(path, "a", buffering=65536 if buffered else -1)  # noqa: SIM115
    handler = logging.StreamHandler(NoFlush(f) if buffered else f)
    handler.setFormatter(logging.Formatter("ts=%(asctime)s level=%(levelname)s %(message)s"))
    logger = logging.getLogger(f"bench_log.{os.path.basename(path)}")
    logger.propagate = False
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    info, debug = logger.info, logger.debug
    fmt = "msg=%s user=%s path=%s ratio=%s ok=%s"

    def close() -> None:
        logger.removeHandler(handler)
        f.flush()
        f.close()

    return (
        lambda: info(fmt, "hello", 7, "/users/7", 0.25, True),
        lambda: debug(fmt, "hello", 7, "/users/7", 0.25, True),
        close,
    )


def _time(fn: Callable[[], None], n: int) -> tuple[float, float]:
    """Return CPU time of this thread and wall time per call, in ns."""
    start, wall = time.thread_time_ns(), time.perf_counter_ns()
    for _ in range(n):
        fn()
    return (time.thread_time_ns() - start) / n, (time.perf_counter_ns() - wall) / n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few calls, for smoke tests")
    parser.add_argument("--calls", type=int, default=20000, help="calls per row per repeat")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved repeats")
    opts = parser.parse_args(argv)
    calls, repeats = (500, 2) if opts.quick else (opts.calls, opts.repeats)

    a = ARGS
    rows: dict[str, Callable[[], None]] = {
        "empty function": _empty_noargs,
        "empty function, same args": lambda: _empty(*a),
    }
    closers: list[Callable[[], None]] = []
    with tempfile.TemporaryDirectory(prefix="bench_log") as tmp:
        for mode, buffered in (("flushed", False), ("buffered", True)):
            for name, make in (
                ("kitobs logfmt", lambda p, b: _kitobs(p, "logfmt", b)),
                ("kitobs json", lambda p, b: _kitobs(p, "json", b)),
                ("structlog", _structlog),
                ("stdlib logging", _stdlib),
            ):
                path = os.path.join(tmp, f"{name}-{mode}.log".replace(" ", "_"))
                info, debug, close = make(path, buffered)
                rows[f"{name}, {mode}"] = info
                if buffered:
                    rows[f"{name}, filtered debug"] = debug
                closers.append(close)
        cpu: dict[str, list[float]] = {name: [] for name in rows}
        wall: dict[str, list[float]] = {name: [] for name in rows}
        for fn in rows.values():  # warm caches and files once
            _time(fn, min(calls, 200))
        for _ in range(repeats):
            for name, fn in rows.items():
                c, w = _time(fn, calls)
                cpu[name].append(c)
                wall[name].append(w)
        for close in closers:
            close()
    med = {name: statistics.median(v) for name, v in cpu.items()}
    med_wall = {name: statistics.median(v) for name, v in wall.items()}

    def base(name: str) -> str | None:
        if name.endswith("filtered debug"):
            return "empty function, same args"
        if name.startswith(("kitobs", "stdlib")):
            return "structlog, " + name.rsplit(", ", 1)[1]
        return None

    def ratio_of(name: str, ref: str) -> float:
        # The median of each repeat's ratio: both rows of a repeat ran seconds apart, so a load
        # change on the shared machine moves both, where a ratio of medians would mix repeats.
        return statistics.median(c / r for c, r in zip(cpu[name], cpu[ref], strict=True))

    width = max(map(len, rows))
    print(f"{'case':<{width}}  {'cpu ns':>8}  {'wall ns':>8}  ratio (cpu)")
    for name in rows:
        ref = base(name)
        ratio = f"{ratio_of(name, ref):.2f}x {ref}" if ref else ""
        print(f"{name:<{width}}  {med[name]:>8.0f}  {med_wall[name]:>8.0f}  {ratio}")
    print()
    goals = [
        ("flushed", "kitobs logfmt, flushed", "structlog, flushed", 1 / 3),
        ("flushed", "kitobs json, flushed", "structlog, flushed", 1 / 3),
        ("buffered", "kitobs logfmt, buffered", "structlog, buffered", 1 / 4),
        ("buffered", "kitobs json, buffered", "structlog, buffered", 1 / 4),
        ("filtered", "kitobs logfmt, filtered debug", "empty function, same args", 1.5),
        ("filtered", "kitobs json, filtered debug", "empty function, same args", 1.5),
    ]
    for _, name, ref, limit in goals:
        ratio = ratio_of(name, ref)
        spread = sorted(c / r for c, r in zip(cpu[name], cpu[ref], strict=True))
        verdict = "met" if ratio <= limit else "MISSED"
        print(
            f"goal: {name} <= {limit:.2f}x {ref}: {ratio:.2f}x {verdict}"
            f" (repeats {spread[0]:.2f}-{spread[-1]:.2f})"
        )
    print(
        f"python {sys.version.split()[0]}, {calls} calls x {repeats} interleaved repeats,"
        " medians; cpu = this thread's CPU time (steadier on a shared machine), wall = elapsed;"
        " ratios = median of per-repeat ratios"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
