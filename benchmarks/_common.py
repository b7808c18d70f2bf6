"""Parts the benchmarks share (imported by ``benchmarks/bench_*.py`` run as scripts)."""

from __future__ import annotations

from typing import Any

__all__ = ["NoFlush"]


class NoFlush:
    """A file whose flush does nothing: structlog and logging flush per line, buffering undoes it."""

    def __init__(self, f: Any) -> None:
        self._f = f
        self.write = f.write

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self._f.close()
