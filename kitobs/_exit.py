"""Exit flush: at interpreter exit and on SIGTERM every part sends what it holds, within one budget.

A part that holds telemetry for later (the span queue, statsd lines, the last Pushgateway push,
a log buffer) registers once with `at_exit`, or `logs_at_exit` for a log writer. One atexit hook,
installed once, reaches the live parts through weak references: nothing here keeps a part alive,
and a part that was closed has nothing left to send. At exit, `run` calls every part's
``_flush_at_exit(deadline)`` at once, each on its own thread, against one deadline `budget`
seconds away; log writers flush afterwards, so the lines the others wrote on the way out are in
them, with what is left of the deadline (and at least `LOG_GRACE` seconds). A part returns what it
could not send by the deadline, e.g. ``"5 spans"``; a part still busy then is abandoned (its
threads are daemons). Whatever was dropped is reported in one line on stderr, e.g.
``kitobs: exit budget of 3 s ran out; dropped: 5 spans, 1 push to http://pgw:9091/...``.

So a hanging collector, statsd host and Pushgateway together hold the exit for about `budget`
seconds, not for the sum of their timeouts.

Threads at exit: from Python 3.12 no thread may start once atexit hooks run. So on 3.12 and newer
a few idle daemon threads are started a moment earlier, when the main thread finishes
(``threading._register_atexit``, the hook `concurrent.futures` uses), and the flush runs on them;
`in_background` is how a part starts work of its own at exit. The flush itself still runs from
atexit, after the application's non-daemon threads have finished and sent their telemetry.

SIGTERM: `handle_sigterm` (called when a `kitobs.kit.Kit` is built) installs a handler only where
SIGTERM would otherwise kill the process without running atexit hooks: its disposition is
``SIG_DFL`` and this is the main thread. The handler runs `run`, restores ``SIG_DFL`` and raises
SIGTERM again, so the process still ends "killed by SIGTERM" (status -15, shell 143) as it would
have. A handler the application or its server installed (gunicorn's, uvicorn's) is left alone.
"""

from __future__ import annotations

import contextlib
import queue
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable
from types import FrameType
from typing import Protocol

__all__ = [
    "DEFAULT_BUDGET",
    "LOG_GRACE",
    "at_exit",
    "budget",
    "handle_sigterm",
    "in_background",
    "logs_at_exit",
    "run",
    "set_budget",
]

#: Seconds the whole exit flush may take unless configured (``kit.exit_timeout``).
DEFAULT_BUDGET = 3.0
#: Seconds log writers get at least, after the other parts used the budget up.
LOG_GRACE = 0.1
# A part's thread is joined this long after the deadline, so its own report can be read.
_REPORT_SLACK = 0.2


class _Part(Protocol):
    def _flush_at_exit(self, deadline: float) -> str: ...


_parts: weakref.WeakSet[_Part] = weakref.WeakSet()
_logs: weakref.WeakSet[_Part] = weakref.WeakSet()
_installed: list[bool] = []
_budget: list[float] = [DEFAULT_BUDGET]
# Taken once and never released: the exit flush runs once per process, whoever starts it.
_once = threading.Lock()
# Idle threads started before atexit (3.12+), for the work `in_background` cannot start then.
_pool: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
# Workers beyond one per part: a part's own work at exit (the last push) needs one too.
_SPARE_WORKERS = 4
_workers: list[threading.Thread] = []


def at_exit(part: _Part) -> None:
    """at_exit calls ``part._flush_at_exit(deadline)`` at exit, e.g. to send queued spans.

    It returns what could not be sent by *deadline* (a `time.monotonic` value), e.g.
    ``"12 statsd lines"``, or an empty string.
    """
    _install()
    _parts.add(part)


def logs_at_exit(part: _Part) -> None:
    """logs_at_exit is `at_exit` for a log writer: it flushes after the other parts."""
    _install()
    _logs.add(part)


def set_budget(seconds: float) -> None:
    """set_budget sets the seconds the whole exit flush may take, e.g. ``set_budget(1.0)``.

    There is one exit per process, so there is one budget: the Kit built last sets it.
    """
    _budget[0] = float(seconds)


def budget() -> float:
    """budget is the seconds the exit flush may take, e.g. 3.0 (`DEFAULT_BUDGET`)."""
    return _budget[0]


def _install() -> None:
    if not _installed:
        _installed.append(True)
        import atexit

        atexit.register(run)
        register = getattr(threading, "_register_atexit", None)
        if sys.version_info >= (3, 12) and register is not None:
            # RuntimeError: already shutting down, when threads cannot start anyway.
            with contextlib.suppress(RuntimeError):
                register(_start_workers)


def _start_workers() -> None:
    def work() -> None:
        while True:
            _pool.get()()

    for _ in range(len(_parts) + len(_logs) + _SPARE_WORKERS):
        worker = threading.Thread(target=work, name="kitobs-exit-worker", daemon=True)
        try:
            worker.start()
        except RuntimeError:
            return
        _workers.append(worker)


class Task:
    """Task is work started by `in_background`; ``join(timeout)`` waits for it to end."""

    __slots__ = ("_done",)

    def __init__(self) -> None:
        self._done = threading.Event()

    def join(self, timeout: float | None = None) -> None:
        """join waits until the work ended or *timeout* seconds passed."""
        self._done.wait(timeout)

    def is_alive(self) -> bool:
        """is_alive tells whether the work is still running."""
        return not self._done.is_set()


def in_background(work: Callable[[], None]) -> Task:
    """in_background runs *work* on a daemon thread, even during atexit (Python 3.12+).

    A new thread where one may start, else one of the idle threads started before atexit, else
    (none left) *work* runs right here before this returns.
    """
    task = Task()

    def run_work() -> None:
        try:
            work()
        finally:
            task._done.set()

    try:
        threading.Thread(target=run_work, name="kitobs-exit", daemon=True).start()
    except RuntimeError:  # 3.12+: no new thread during atexit
        if _started_workers():
            _pool.put(run_work)
        else:
            run_work()
    return task


def _started_workers() -> bool:
    return bool(_workers)


def run() -> None:
    """run flushes every registered part within the budget; only its first call does anything."""
    if not _once.acquire(blocking=False):
        return
    seconds = _budget[0]
    deadline = time.monotonic() + seconds
    dropped = _flush_all(list(_parts), deadline)
    dropped += _flush_all(list(_logs), max(deadline, time.monotonic() + LOG_GRACE))
    if dropped:
        _report(f"kitobs: exit budget of {seconds:g} s ran out; dropped: {', '.join(dropped)}")


def _flush_all(parts: list[_Part], deadline: float) -> list[str]:
    results: dict[int, str] = {}
    threads = [(i, part, _start(part, deadline, results, i)) for i, part in enumerate(parts)]
    out = []
    for i, part, task in threads:
        task.join(max(0.0, deadline + _REPORT_SLACK - time.monotonic()))
        if task.is_alive():
            name = f"{type(part).__module__}.{type(part).__qualname__}"
            out.append(f"whatever {name} still held")
            continue
        if results.get(i):
            out.append(results[i])
    return out


def _start(part: _Part, deadline: float, results: dict[int, str], i: int) -> Task:
    def flush() -> None:
        try:
            results[i] = part._flush_at_exit(deadline)
        except Exception as err:  # one part failing must not keep the others from flushing
            results[i] = f"what {type(part).__qualname__} held (flush failed: {err!r})"

    return in_background(flush)


def _report(line: str) -> None:
    out = sys.__stderr__ or sys.stderr
    try:
        out.write(line + "\n")
        out.flush()
    except Exception:
        pass  # nowhere left to report to


def handle_sigterm() -> bool:
    """handle_sigterm makes SIGTERM flush first where nobody handles it; True when installed.

    Installed only in the main thread and only over ``SIG_DFL``: a handler of the application or
    its server (gunicorn, uvicorn) is left alone, as are ignored signals.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return False
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # e.g. an interpreter without signal support
        return False
    return True


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    run()
    # Then die of the signal, as SIG_DFL would have: supervisors see "killed by SIGTERM".
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)
