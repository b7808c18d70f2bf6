"""Writers take encoded lines to their destination: synchronous, buffered or non-blocking.

- `FileWriter`: one ``os.write`` per line on a file descriptor (stderr, stdout, or a file opened
  with ``O_APPEND``), so a line is never split between threads or processes and nothing is lost
  if the process dies. The default.
- `StreamWriter`: for Python stream objects without a file descriptor (``io.StringIO``, a test
  runner's captured stderr): one ``write`` and ``flush`` per line under a lock.
- `BufferedWriter`: gathers lines and writes them in 64 KiB blocks, at `flush`, `close` and at
  interpreter exit or SIGTERM (see docs/shutdown.md). Lines still in the buffer are lost if the
  process is killed otherwise (SIGKILL).
- `NonBlockingWriter`: hands lines to a background thread through a bounded queue; a full queue
  drops the line and counts it, so a slow or dead destination never blocks the caller. Lines
  still queued are lost if the process is killed; at exit or SIGTERM it drains for up to
  ``timeout`` seconds, and never longer than ``kit.exit_timeout``.

Every writer reports its own failures (a closed writer, a full disk, a broken pipe) to an
``on_error`` handler, counts the lost lines in ``dropped`` and never raises from `write`.

Fork safety (a gunicorn worker forked from a master that built the logger): `FileWriter` and
`StreamWriter` keep no lines. `BufferedWriter` writes out its buffer before a fork, so a line
buffered in the parent is written once, by the parent. `NonBlockingWriter` gives a forked child an
empty queue and its own thread; the parent writes what it had queued.

Example::

    >>> import io
    >>> sink = StreamWriter(io.StringIO())
    >>> sink.write(b"msg=hi\\n")
    >>> sink.dropped
    0
"""

from __future__ import annotations

import contextlib
import io
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any, Protocol, cast

from kitobs import _exit, _fork
from kitobs.config import LogSettings, key_name
from kitobs.errors import ConfigError
from kitobs.log._core import ErrorHandler, Writer

__all__ = [
    "Counter",
    "FileWriter",
    "StreamWriter",
    "BufferedWriter",
    "NonBlockingWriter",
    "open_output",
    "report_once",
]


class Counter(Protocol):
    """Counter is what `NonBlockingWriter` adds its drops to, e.g. a `kitobs.metrics` counter."""

    def add(self, delta: float) -> None:
        """add counts *delta* more dropped lines."""


def report_once(stream: Callable[[], IO[str] | None] = lambda: sys.__stderr__) -> ErrorHandler:
    """report_once builds an error handler that prints the first error only, e.g. the default.

    Later errors are only counted by the writer (in ``dropped``); printing each would flood the
    same broken destination.
    """
    done = threading.Event()

    def handle(err: BaseException) -> None:
        if done.is_set():
            return
        done.set()
        try:
            out = stream()
            if out is not None:
                out.write(f"kitobs.log: cannot write log lines: {err!r}\n")
                out.flush()
        except Exception:
            pass  # nowhere left to report to

    return handle


class _Closed(OSError):
    """Raised into the error handler for a write after close."""


class FileWriter:
    """FileWriter writes each line with one ``os.write``, e.g. ``FileWriter(2)`` for stderr.

    Args:
        fd: an open file descriptor.
        owned: close *fd* in `close`; False for descriptors someone else owns (0-2).
        on_error: receives write errors; the lost lines are counted in ``dropped``.
    """

    __slots__ = ("__weakref__", "_close", "_lock", "dropped", "write")

    write: Callable[[bytes], None]

    def __init__(self, fd: int, *, owned: bool = False, on_error: ErrorHandler | None = None):
        handler = on_error or report_once()
        self._lock = threading.Lock()
        self.dropped = 0
        oswrite = os.write
        current = fd

        # A closure rather than a method: the line's only work besides the system call.
        def write(data: bytes) -> None:
            try:
                written = oswrite(current, data)
                while written < len(data):  # rare: a signal or a full pipe cut the write short
                    data = data[written:]
                    written = oswrite(current, data)
            except Exception as err:
                with self._lock:
                    self.dropped += 1
                handler(_Closed("write to a closed log writer") if current < 0 else err)

        def close() -> None:
            nonlocal current
            old, current = current, -1
            if old >= 0 and owned:
                try:
                    os.close(old)
                except OSError as err:
                    handler(err)

        self.write = write
        self._close = close

    def flush(self) -> None:
        """flush does nothing: every write already reached the OS."""

    def close(self) -> None:
        """close stops writing; an owned descriptor is closed."""
        self._close()


class StreamWriter:
    """StreamWriter writes each line to a Python stream and flushes it, e.g. ``io.StringIO()``.

    Text streams receive decoded text, binary ones bytes. `close` leaves the stream open: it
    belongs to the caller.
    """

    __slots__ = ("_closed", "_lock", "_on_error", "_stream", "_text", "dropped")

    def __init__(self, stream: IO[str] | IO[bytes], *, on_error: ErrorHandler | None = None):
        self._stream = stream
        self._text = isinstance(stream, io.TextIOBase)
        self._on_error = on_error or report_once()
        self._lock = threading.Lock()
        self._closed = False
        self.dropped = 0

    def write(self, data: bytes) -> None:
        """write writes and flushes one line; it never raises."""
        try:
            with self._lock:
                if self._closed:
                    raise _Closed("write to a closed log writer")
                stream = self._stream
                stream.write(data.decode("utf-8") if self._text else data)  # type: ignore[arg-type]
                stream.flush()
        except Exception as err:
            with self._lock:
                self.dropped += 1
            self._on_error(err)

    def flush(self) -> None:
        """flush flushes the stream; errors go to the handler."""
        try:
            self._stream.flush()
        except Exception as err:
            self._on_error(err)

    def close(self) -> None:
        """close stops writing; the stream itself stays open."""
        with self._lock:
            self._closed = True


class _Raw(io.RawIOBase):
    """The raw side of `BufferedWriter`: each block goes to the inner writer in one write."""

    def __init__(self, inner: Writer) -> None:
        self._inner = inner

    def writable(self) -> bool:
        return True

    def write(self, block: Any) -> int:
        data = bytes(block)
        self._inner.write(data)
        return len(data)


class BufferedWriter:
    """BufferedWriter gathers lines into blocks, e.g. ``BufferedWriter(FileWriter(fd))``.

    A block is written to *inner* when the next line would not fit in *size* bytes, on `flush`,
    on `close` and at interpreter exit. Lines are never split across blocks (a line longer than
    *size* is written alone). Built on ``io.BufferedWriter``, whose ``write`` runs in C under its
    own lock: the logger calls it directly. A write after `close` raises into the logger, which
    hands it to its error handler.
    """

    __slots__ = ("__weakref__", "_file", "_inner", "write")

    write: Callable[[bytes], None]

    def __init__(self, inner: Writer, *, size: int = 65536):
        if not isinstance(size, int) or size < 1:
            raise ConfigError("buffer size must be positive", value=size, allowed="size >= 1")
        self._inner = inner
        self._file = io.BufferedWriter(_Raw(inner), buffer_size=size)
        self.write = cast(Callable[[bytes], None], self._file.write)
        _exit.logs_at_exit(self)
        _fork.before_fork(self)

    @property
    def dropped(self) -> int:
        """dropped counts lines lost by the writer underneath, e.g. after a disk filled up."""
        return int(getattr(self._inner, "dropped", 0))

    def flush(self) -> None:
        """flush writes what is buffered."""
        with contextlib.suppress(ValueError):  # already closed: nothing buffered
            self._file.flush()
        self._inner.flush()

    def close(self) -> None:
        """close flushes, then closes *inner*."""
        self._file.close()
        self._inner.close()

    def _flush_at_exit(self, deadline: float) -> str:
        # A write blocked past the deadline (a full pipe) is reported by the exit flush itself.
        self.flush()
        return ""

    def _before_fork(self) -> None:
        # Written out by the parent now, the buffer reaches the child empty: no line twice.
        with contextlib.suppress(Exception):
            self._file.flush()


_STOP = object()


class NonBlockingWriter:
    """NonBlockingWriter writes through a bounded queue and a thread, e.g. for a slow pipe.

    Args:
        inner: the writer the thread writes to (lines are batched into one write when queued
            together).
        queue_size: lines held before new ones are dropped.
        dropped: also told of each drop, e.g. ``kitobs_telemetry_dropped_total`` with
            ``signal="logs", reason="queue_full"``.
        timeout: seconds `flush` and `close` wait for the queue to drain.
    """

    __slots__ = (
        "__weakref__",
        "_closed",
        "_counter",
        "_inner",
        "_lock",
        "_max",
        "_on_error",
        "_put",
        "_qsize",
        "_queue",
        "_thread",
        "_timeout",
        "dropped",
    )

    def __init__(
        self,
        inner: Writer,
        *,
        queue_size: int = 10000,
        dropped: Counter | None = None,
        on_error: ErrorHandler | None = None,
        timeout: float = 5.0,
    ):
        if not isinstance(queue_size, int) or queue_size < 1:
            raise ConfigError(
                "must be a positive integer",
                key=key_name(LogSettings, "queue_size"),
                value=queue_size,
            )
        self._inner = inner
        self._max = queue_size
        self._counter = dropped
        self._on_error = on_error or report_once()
        self._timeout = timeout
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._put = self._queue.put
        self._qsize = self._queue.qsize
        self._lock = threading.Lock()
        self._closed = False
        self.dropped = 0
        self._thread = self._start()
        _exit.logs_at_exit(self)
        _fork.in_child(self)

    def _start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="kitobs-log-writer", daemon=True)
        thread.start()
        return thread

    def _after_fork_in_child(self) -> None:
        # The parent's thread does not exist here, and its queue holds the parent's lines (the
        # parent writes them): a new queue and a new thread for the child's own lines.
        self._queue = queue.SimpleQueue()
        self._put = self._queue.put
        self._qsize = self._queue.qsize
        self._lock = threading.Lock()
        if not self._closed:
            self._thread = self._start()

    def write(self, data: bytes) -> None:
        """write queues one line, or drops and counts it when the queue is full or closed."""
        if self._qsize() < self._max and not self._closed:
            self._put(data)
            return
        with self._lock:
            self.dropped += 1
        try:
            if self._closed:
                self._on_error(_Closed("write to a closed log writer"))
            elif self._counter is not None:
                self._counter.add(1.0)
        except Exception:
            pass  # a failing counter must not turn a drop into an exception

    def _run(self) -> None:
        get, get_nowait = self._queue.get, self._queue.get_nowait
        while True:
            item = get()
            batch: list[bytes] = []
            while True:
                if item is _STOP:
                    self._write(batch)
                    return
                if isinstance(item, threading.Event):
                    self._write(batch)
                    batch = []
                    self._inner.flush()
                    item.set()
                else:
                    batch.append(item)  # type: ignore[arg-type]
                if len(batch) >= 512:
                    break
                try:
                    item = get_nowait()
                except queue.Empty:
                    break
            self._write(batch)

    def _write(self, batch: list[bytes]) -> None:
        if batch:
            try:
                self._inner.write(b"".join(batch))
            except Exception as err:  # a foreign inner writer that raises anyway
                self._on_error(err)

    def flush(self) -> None:
        """flush waits up to ``timeout`` seconds until queued lines are written."""
        if self._closed or not self._thread.is_alive():
            return
        done = threading.Event()
        self._put(done)
        done.wait(self._timeout)

    def close(self) -> None:
        """close drains the queue (up to ``timeout`` seconds), stops the thread, closes *inner*."""
        self._close(self._timeout)

    def _close(self, timeout: float) -> int:
        # Returns about how many lines were still queued when *timeout* ran out.
        with self._lock:
            if self._closed:
                return 0
            self._closed = True
        self._put(_STOP)
        self._thread.join(max(0.0, timeout))
        if self._thread.is_alive():
            return max(0, self._qsize() - 1)  # less the stop marker
        self._inner.close()
        return 0

    def _flush_at_exit(self, deadline: float) -> str:
        left = self._close(min(self._timeout, deadline - time.monotonic()))
        return f"{left} log line{'s' if left != 1 else ''}" if left else ""


def _stdio(name: str, on_error: ErrorHandler) -> Writer:
    stream = sys.stderr if name == "stderr" else sys.stdout
    try:
        fd = stream.fileno()
    except (AttributeError, ValueError, OSError):
        return StreamWriter(stream, on_error=on_error)  # replaced by a test runner or an IDE
    with contextlib.suppress(Exception):
        stream.flush()  # what print() buffered goes out before our first line
    return FileWriter(fd, owned=False, on_error=on_error)


def open_output(
    output: str | IO[str] | IO[bytes] | Writer,
    *,
    buffered: bool = False,
    nonblocking: bool = False,
    queue_size: int = 10000,
    dropped: Counter | None = None,
    on_error: ErrorHandler | None = None,
) -> Writer:
    """open_output builds the writer for *output*, e.g. ``open_output("/var/log/app.log")``.

    *output* is ``"stderr"``, ``"stdout"``, a file path (created if needed, appended to), a
    Python stream, or a ready `kitobs.log.Writer`. ``buffered`` and ``nonblocking`` wrap it.
    The stream names are matched ignoring case and surrounding blanks (``"STDERR"`` is the
    stream, as choices are elsewhere in the configuration); a file of that name is
    ``"./STDERR"``.

    Raises:
        ConfigError: the file cannot be opened.
    """
    handler = on_error or report_once()
    sink: Writer
    if isinstance(output, str):
        stream = output.strip().lower()
        if stream in ("stderr", "stdout"):
            sink = _stdio(stream, handler)
        else:
            if not output:
                raise ConfigError(
                    "must name an output",
                    key=key_name(LogSettings, "output"),
                    value=output,
                    allowed="stderr, stdout or a file path",
                )
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
            try:
                fd = os.open(output, flags, 0o644)
            except OSError as err:
                raise ConfigError(
                    f"cannot open the log file: {err.strerror}",
                    key=key_name(LogSettings, "output"),
                    value=output,
                    allowed="stderr, stdout or a writable file path",
                ) from None
            sink = FileWriter(fd, owned=True, on_error=handler)
    elif isinstance(output, io.IOBase):
        sink = StreamWriter(output, on_error=handler)  # type: ignore[arg-type]
    else:
        sink = output  # type: ignore[assignment]
    if buffered:
        sink = BufferedWriter(sink)
    if nonblocking:
        sink = NonBlockingWriter(sink, queue_size=queue_size, dropped=dropped, on_error=handler)
    return sink
