"""The log benchmark runs in quick mode and prints every row (no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROWS = [
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


def test_bench_log_quick_prints_every_row() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_log.py"), "--quick"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=ROOT,
    )
    table, goals = result.stdout.split("\n\n")
    rows = table.splitlines()[1:]
    assert [row[: row.index("  ")].strip() for row in rows] == ROWS, result.stdout
    for row in rows:
        cpu, wall = row[len(max(ROWS, key=len)) :].split()[:2]
        assert float(cpu) > 0, row
        assert float(wall) > 0, row
    assert sum("x structlog" in row for row in rows) == 6
    assert sum("x empty function, same args" in row for row in rows) == 4
    assert len([g for g in goals.splitlines() if g.startswith("goal: ")]) == 6
