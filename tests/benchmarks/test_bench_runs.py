"""Every benchmark runs in a short mode and prints every row.

No timing is asserted (machines are noisy); these keep the benchmarks working and honest: each
case is run and reported, and each goal line is printed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOG_ROWS = [
    "empty function",
    "empty function, same args",
    *(
        f"{lib}, {mode}"
        for mode in ("flushed",)
        for lib in ("kitobs logfmt", "kitobs json", "structlog", "stdlib logging")
    ),
    *(
        row
        for lib in ("kitobs logfmt", "kitobs json", "structlog", "stdlib logging")
        for row in (f"{lib}, buffered", f"{lib}, filtered debug")
    ),
]


def _run(name: str, *args: str, timeout: float = 120) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / name), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=timeout,
        cwd=ROOT,
    )
    return result.stdout


def test_bench_tracing_prints_every_case_and_goal() -> None:
    out = _run("bench_tracing.py", "--number", "200", "--repeats", "1")
    cases = [
        "sampled kitobs",
        "sampled sdk",
        "unsampled kitobs",
        "unsampled sdk",
        "unsampled floor",
        "zipkin encode kitobs",
        "zipkin encode sdk",
        "endpoint bare",
        "endpoint span kitobs",
        "endpoint span sdk",
    ]
    timed = {
        m[1].strip(): float(m[2]) for m in re.finditer(r"^(.{24}) +(-?[\d.]+) us/span", out, re.M)
    }
    assert list(timed) == cases, out
    assert all(timed[c] > 0 for c in cases if not c.startswith("endpoint span")), out
    for what, goal in (("sampled", 8), ("unsampled", 12), ("zipkin encode", 3)):
        assert re.search(rf"^{what} +kitobs is 1/[\d.]+ of the SDK \(goal 1/{goal}: ", out, re.M), (
            out
        )
    # The floor row is a real current span (the benchmark asserts it) and gets its ratio line.
    assert re.search(r"^unsampled floor is 1/[\d.]+ of the SDK", out, re.M), out


def test_bench_metrics_quick_prints_every_goal() -> None:
    out = _run("bench_metrics.py", "--quick")
    rows = [line for line in out.splitlines() if "(goal <=" in line]
    assert [r.split("  kitobs")[0].strip() for r in rows] == [
        "counter add, bound child",
        "bind 2 labels + add (positional)",
        "bind 2 labels + add (keyword)",
        "histogram observe, bound child (14 buckets)",
        "exposition, 10,000 series",
        "add to 10,000 series + exposition",
    ], out
    for row in rows:
        m = re.search(
            r"kitobs +([\d.]+) (ns|ms) +prometheus_client +([\d.]+) (ns|ms) +ratio ([\d.]+)", row
        )
        assert m is not None, row
        assert float(m[1]) > 0, row
        assert float(m[3]) > 0, row
        assert abs(float(m[5]) - float(m[1]) / float(m[3])) < 0.002 + 0.01 * float(m[5]), row


def test_bench_multiprocess_quick_prints_both_cases() -> None:
    out = _run("bench_multiprocess.py", "--quick")
    rows = [line for line in out.splitlines() if "(goal <=" in line]
    names = [r.split("  kitobs")[0].strip() for r in rows]
    assert names == [
        "scrape, 2 workers x 200 series, unchanged",
        "scrape, 2 workers x 200 series, changed",
    ], out
    for row in rows:
        m = re.search(
            r"kitobs +([\d.]+) ms +MultiProcessCollector +([\d.]+) ms +ratio ([\d.]+)", row
        )
        assert m is not None, row
        assert float(m[1]) > 0, row
        assert float(m[2]) > 0, row
        assert abs(float(m[3]) - float(m[1]) / float(m[2])) < 0.002 + 0.01 * float(m[3]), row


def test_bench_statsd_prints_every_case() -> None:
    out = _run("bench_statsd.py", "--ops", "500", "--rounds", "1")
    names = [
        "kitobs add (bound)",
        "kitobs labels(2).add",
        "kitobs observe (ms timer)",
        "statsd incr",
        "statsd timing",
        "dogstatsd buffered increment",
    ]
    for name in names:
        assert re.search(rf"^  {re.escape(name)} +\d+ ns", out, re.M), out
    assert "kitobs dropped lines: none" in out


def test_bench_log_quick_prints_every_row() -> None:
    out = _run("bench_log.py", "--quick")
    table, goals = out.split("\n\n")
    rows = table.splitlines()[1:]
    assert [row[: row.index("  ")].strip() for row in rows] == LOG_ROWS, out
    for row in rows:
        cpu, wall = row[len(max(LOG_ROWS, key=len)) :].split()[:2]
        assert float(cpu) > 0, row
        assert float(wall) > 0, row
    assert sum("x structlog" in row for row in rows) == 6
    assert sum("x empty function, same args" in row for row in rows) == 4
    assert len([g for g in goals.splitlines() if g.startswith("goal: ")]) == 6


def test_bench_endpoint_quick_is_fair_and_prints_every_row() -> None:
    out = _run("bench_endpoint.py", "--quick", timeout=300)
    for row in ("bare", "kitobs", "kitobs chain", "peer typical", "peer tuned"):
        assert f"\n{row} " in out, out
    for side in ("kitobs", "peer"):
        assert out.count(f"{side} added cost by layer") == 2, out  # CPU and wall tables
        [line] = [x for x in out.splitlines() if x.startswith(f"{side} spans exported:")]
        exported, made = (int(w) for w in line.split() if w.isdigit())
        assert exported == made > 0, line  # no span was dropped on either side
    assert out.count("ratio: kitobs added cost is 1/") == 4, out


def test_bench_resilience_quick_prints_both_cases_and_goals() -> None:
    out = _run("bench_resilience.py", "--quick")
    rows = [line for line in out.splitlines() if "(goal <=" in line]
    assert [r.split("  kitobs")[0].strip() for r in rows] == [
        "closed breaker",
        "allowing limiter",
    ], out
    for row in rows:
        m = re.search(r"kitobs +([\d.]+) us +.+? ([\d.]+) us +ratio ([\d.]+) \(goal <= ", row)
        assert m is not None, row
        assert float(m[1]) > 0, row
        assert float(m[2]) > 0, row
        assert abs(float(m[3]) - float(m[1]) / float(m[2])) < 0.002 + 0.02 * float(m[3]), row


def test_bench_auth_quick_prints_every_row_and_ratio() -> None:
    out = _run("bench_auth.py", "--quick")
    for row in ("bare", "jwt peer", "jwt kitobs", "basic peer", "basic kitobs"):
        assert re.search(rf"\n{row} +\d+\.\d\d\n", out), out
    for scheme in ("jwt", "basic"):
        assert re.search(rf"\n{scheme} ratio: kitobs overhead / peer overhead = \d+\.\d\d", out), (
            out
        )


def test_bench_transport_quick_is_fair_and_prints_every_row() -> None:
    out = _run("bench_transport.py", "--quick")
    for row in ("bare", "kitobs", "peer"):
        # One row in each table (CPU and wall): the name, then four figures.
        assert len(re.findall(rf"^{row} +(-?\d+ +){{3}}-?\d+$", out, re.MULTILINE)) == 2, out
    for side in ("kitobs", "peer"):
        [line] = [x for x in out.splitlines() if x.startswith(f"{side} spans exported:")]
        exported, made = (int(w) for w in line.split() if w.isdigit())
        assert exported == made > 0, line  # no span was dropped on either side
    assert out.count("ratio: kitobs added cost is 1/") == 2, out


def test_bench_nats_quick_prints_every_row_and_the_ratio() -> None:
    from tests.support.servers import require_env

    out = _run("bench_nats.py", "--quick", "--url", require_env("KITOBSTEST_NATS_URL"))
    times = {
        m[1].strip(): (float(m[2]), float(m[3]))
        for m in re.finditer(r"^(.{18}) +([\d.]+) +([\d.]+)  us/round trip$", out, re.M)
    }
    assert list(times) == ["bare nats-py", "bare + traceparent", "kitobs"], out
    assert all(cpu > 0 and wall > 0 for cpu, wall in times.values()), out
    assert "kitobs spans per round trip: 2" in out  # CLIENT and SERVER, none dropped
    stub = re.search(
        r"^without I/O \(a stub connection\): bare codec ([\d.]+) us, kitobs ([\d.]+)", out, re.M
    )
    assert stub is not None, out
    assert float(stub[2]) > float(stub[1]) > 0, out  # the instrumentation costs something
    bare_cpu, bare_wall = times["bare nats-py"]
    for clock, added, bare in (
        ("CPU", times["kitobs"][0] - bare_cpu, bare_cpu),
        ("wall", times["kitobs"][1] - bare_wall, bare_wall),
        ("no I/O", float(stub[2]) - float(stub[1]), bare_cpu),
    ):
        m = re.search(
            rf"^ratio \({clock}\): kitobs added cost is (-?[\d.]+) us, (-?[\d.]+)% of a bare "
            r"round trip \(goal <= 10%: (met|missed)\)$",
            out,
            re.M,
        )
        assert m is not None, out
        assert abs(float(m[1]) - added) < 0.15, out
        assert abs(float(m[2]) - 100 * added / bare) < 0.1, out


def test_bench_amqp_quick_prints_both_sides_and_the_ratio() -> None:
    from tests.support import servers

    servers.require_env("KITOBSTEST_AMQP_URL")  # the broker scripts/services starts
    out = _run("bench_amqp.py", "--quick")
    sides = {
        m[1]: (float(m[2]), float(m[3]))
        for m in re.finditer(
            r"^(bare aio-pika|kitobs) +([\d.]+) us/round trip wall +([\d.]+) us process CPU",
            out,
            re.M,
        )
    }
    assert list(sides) == ["bare aio-pika", "kitobs"], out
    assert all(wall > 0 and cpu > 0 for wall, cpu in sides.values()), out
    m = re.search(
        r"^ratio: kitobs added (-?[\d.]+) us of CPU = (-?[\d.]+)% of a bare round trip "
        r"\(goal <= 10%",
        out,
        re.M,
    )
    assert m is not None, out
    assert abs(float(m[2]) - 100 * float(m[1]) / sides["bare aio-pika"][0]) < 0.1, out
    alone = re.search(
        r"^instrumentation alone \(.*\): ([\d.]+) us = ([\d.]+)% of a bare", out, re.M
    )
    assert alone is not None, out
    assert float(alone[1]) > 0, out


def test_bench_sd_quick_prints_every_row_and_the_ratio() -> None:
    out = _run("bench_sd.py", "--quick")
    names = r"bare instrumented call|through sd \+ retry|sd \+ retry layer alone"
    rows = {m[1]: float(m[2]) for m in re.finditer(rf"^({names}) +([\d.]+) us/call", out, re.M)}
    assert list(rows) == ["bare instrumented call", "through sd + retry", "sd + retry layer alone"]
    assert all(v > 0 for v in rows.values()), out
    m = re.search(r"^ratio: sd layer / bare call = ([\d.]+) \(goal <= 0\.050\)", out, re.M)
    assert m is not None, out
    ratio = rows["sd + retry layer alone"] / rows["bare instrumented call"]
    assert abs(float(m[1]) - ratio) < 0.0002 + 0.02 * ratio, out
