"""Process and runtime metrics, read at collection time, with prometheus_client's names.

``process_cpu_seconds_total``, ``process_resident_memory_bytes``,
``process_virtual_memory_bytes``, ``process_start_time_seconds``, ``process_open_fds``,
``process_max_fds``, ``python_gc_objects_collected_total{generation}``,
``python_gc_objects_uncollectable_total{generation}``, ``python_gc_collections_total{generation}``
and ``python_info{implementation,major,minor,patchlevel,version}``. The memory and file-descriptor
figures come from ``/proc`` and are left out where it does not exist.

Every backend reports them when ``[metrics] process_metrics`` is on: pull backends read
`Collector.collect` at scrape time; push backends (statsd, pushgateway) read it when they flush.

Example::

    >>> names = [decl.prometheus_name for decl, _ in Collector().collect()]
    >>> "process_cpu_seconds_total" in names
    True
"""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import resource
import sys
import time

from kitobs.metrics._declare import Declaration, declaration

__all__ = ["DECLARATIONS", "Collector", "Sample"]

#: Sample is one series of a collected metric: its label values (declared order) and value.
Sample = tuple[tuple[str, ...], float]

_CPU = declaration(
    "process_cpu",
    "counter",
    unit="seconds",
    help="Total user and system CPU time spent in seconds.",
)
_RSS = declaration(
    "process_resident_memory", "gauge", unit="bytes", help="Resident memory size in bytes."
)
_VMS = declaration(
    "process_virtual_memory", "gauge", unit="bytes", help="Virtual memory size in bytes."
)
_START = declaration(
    "process_start_time",
    "gauge",
    unit="seconds",
    help="Start time of the process since unix epoch in seconds.",
)
_FDS = declaration("process_open_fds", "gauge", help="Number of open file descriptors.")
_MAX_FDS = declaration("process_max_fds", "gauge", help="Maximum number of open file descriptors.")
_GEN = ("generation",)
_GC_COLLECTED = declaration(
    "python_gc_objects_collected", "counter", labels=_GEN, help="Objects collected during gc"
)
_GC_UNCOLLECTABLE = declaration(
    "python_gc_objects_uncollectable",
    "counter",
    labels=_GEN,
    help="Uncollectable objects found during GC",
)
_GC_COLLECTIONS = declaration(
    "python_gc_collections",
    "counter",
    labels=_GEN,
    help="Number of times this generation was collected",
)
_INFO = declaration(
    "python_info",
    "gauge",
    labels=("implementation", "major", "minor", "patchlevel", "version"),
    help="Python platform information",
)

#: DECLARATIONS are the metrics the collector reports; their names are
#: `kitobs.contract.PROCESS_FAMILIES`, which no other metric may take.
DECLARATIONS: tuple[Declaration, ...] = (
    _CPU,
    _RSS,
    _VMS,
    _START,
    _FDS,
    _MAX_FDS,
    _GC_COLLECTED,
    _GC_UNCOLLECTABLE,
    _GC_COLLECTIONS,
    _INFO,
)


class Collector:
    """Collector reads process and runtime figures, e.g. ``Collector().collect()``.

    Args:
        pid: the process to read (``/proc/<pid>``); the current one by default.
    """

    __slots__ = ("_info", "_page", "_pid", "_proc", "_ticks")

    def __init__(self, *, pid: int | None = None) -> None:
        self._pid = pid
        self._proc = f"/proc/{pid if pid is not None else 'self'}"
        try:
            self._ticks = float(os.sysconf("SC_CLK_TCK"))
            self._page = float(os.sysconf("SC_PAGESIZE"))
        except (ValueError, OSError, AttributeError):  # not a POSIX system
            self._ticks, self._page = 100.0, 4096.0
        major, minor, patch = platform.python_version_tuple()
        self._info: tuple[str, ...] = (
            platform.python_implementation(),
            major,
            minor,
            patch,
            platform.python_version(),
        )

    def declarations(self) -> list[Declaration]:
        """declarations lists every metric this collector can report, e.g. for a push backend."""
        return list(DECLARATIONS)

    def collect(self) -> list[tuple[Declaration, list[Sample]]]:
        """collect reads every figure now; a figure that cannot be read is left out."""
        out: list[tuple[Declaration, list[Sample]]] = []
        stat = self._stat()
        if stat is not None:
            utime, stime, start, vsize, rss = stat
            out.append((_CPU, [((), (utime + stime) / self._ticks)]))
            out.append((_RSS, [((), rss * self._page)]))
            out.append((_VMS, [((), float(vsize))]))
            boot = self._boot_time()
            if boot is not None:
                out.append((_START, [((), boot + start / self._ticks)]))
        else:
            ru = resource.getrusage(resource.RUSAGE_SELF)
            out.append((_CPU, [((), ru.ru_utime + ru.ru_stime)]))
        with contextlib.suppress(OSError):
            out.append((_FDS, [((), float(len(os.listdir(self._proc + "/fd"))))]))
        try:
            soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            out.append((_MAX_FDS, [((), float(soft))]))
        except (OSError, ValueError):
            pass
        stats = gc.get_stats()
        out.append(
            (_GC_COLLECTED, [((str(i),), float(s["collected"])) for i, s in enumerate(stats)])
        )
        out.append(
            (
                _GC_UNCOLLECTABLE,
                [((str(i),), float(s["uncollectable"])) for i, s in enumerate(stats)],
            )
        )
        out.append(
            (_GC_COLLECTIONS, [((str(i),), float(s["collections"])) for i, s in enumerate(stats)])
        )
        out.append((_INFO, [(self._info, 1.0)]))
        return out

    def _stat(self) -> tuple[float, float, float, float, float] | None:
        try:
            with open(self._proc + "/stat", "rb") as fh:
                data = fh.read()
        except OSError:
            return None
        # The command name may contain spaces and parentheses: split after the last ')'.
        fields = data[data.rfind(b")") + 2 :].split()
        return (
            float(fields[11]),
            float(fields[12]),
            float(fields[19]),
            float(fields[20]),
            float(fields[21]),
        )

    @staticmethod
    def _boot_time() -> float | None:
        try:
            with open("/proc/stat", "rb") as fh:
                for line in fh:
                    if line.startswith(b"btime"):
                        return float(line.split()[1])
        except OSError:
            pass
        return None if sys.platform.startswith("linux") else time.time()
