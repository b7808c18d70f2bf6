"""multiprocess: Prometheus metrics for pre-fork servers (gunicorn, uWSGI), one total per scrape.

Each process writes its values through to its own memory-mapped file in a shared directory and
holds an ``flock`` on it while it lives. A scrape, served by any worker, sums every file. Files
whose lock is free belong to processes that have exited: their counters and histograms are
merged into ``archive.json`` (so requests served by a worker that has since exited still count)
and the files are deleted, so they do not pile up. Gauges of exited processes are dropped; a
gauge is the sum over live processes (e.g. requests in flight).

No environment variable is needed before import: pass the directory (``[metrics.prometheus]
multiprocess_dir``); it is created if missing. A provider built before ``fork()`` (gunicorn
``--preload``) starts a fresh file, at zero, in each child.

With ``exemplar_context`` (as `kitobs.metrics.prometheus.Provider`), each process keeps the latest
exemplar of each histogram bucket in its file, and a scrape shows the latest over all processes,
those that have exited included. ``_created`` series are not available in this mode.

Example::

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     provider = Provider(d)
    ...     provider.counter("jobs", help="Jobs run.").add(3)
    ...     b"jobs_total 3.0" in provider.exposition()
    ...     provider.close()
    True
"""

from __future__ import annotations

import atexit
import bisect
import contextlib
import fcntl
import json
import math
import mmap
import os
import struct
import sys
import threading
import time
import uuid
import weakref
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kitobs import _fork
from kitobs.config import PrometheusSettings, key_name
from kitobs.errors import ConfigError
from kitobs.metrics._declare import (
    Bound,
    Core,
    CounterFamily,
    Declaration,
    Declaring,
    Family,
    GaugeFamily,
    HistogramFamily,
    Logger,
)
from kitobs.metrics._exposition import (
    OPENMETRICS,
    TEXT,
    callback_samples,
    escape_help,
    exemplar_suffix,
    label_block,
    negotiate,
)
from kitobs.metrics._http import Pages, Server, serve
from kitobs.metrics._sketch import LOG_GAMMA as _LOG_GAMMA
from kitobs.metrics._store import fmt
from kitobs.metrics.process import Collector as ProcessCollector

if TYPE_CHECKING:
    from kitobs.metrics import ExemplarContext

__all__ = ["Provider", "Counter", "Gauge", "Histogram", "Slot", "ExemplarSlot", "SketchSlot"]

_HEADER = 8  # bytes used, as a little-endian uint64
_INITIAL = 1 << 16
_ARCHIVE = "archive.json"
_SUFFIX = ".kitobs"

# An entry whose key length has this bit set holds an exemplar record instead of a float64.
_EXEMPLAR_FLAG = 1 << 31
# An exemplar record: a CRC-32 of the body, padding, then the body: value, timestamp, id lengths,
# padding, trace id, span id. The writer is another process and a scrape copies the file while it
# may be writing, with no lock between them; a record whose body does not match its CRC was
# caught half written, and is left out. (A checksum holds on any CPU; ordering tricks such as a
# sequence number at each end rely on the CPU keeping stores in order.)
_TRACE_ROOM = 64
_SPAN_ROOM = 32
_EX_CRC = struct.Struct("<I4x")
_EX_BODY = struct.Struct(f"<ddBB6x{_TRACE_ROOM}s{_SPAN_ROOM}s")
_EX_SIZE = _EX_CRC.size + _EX_BODY.size

#: An exemplar as stored: value, timestamp (seconds since the epoch), trace id, span id.
_Exemplar = tuple[float, float, str, str]


class _File:
    """One process's value file: entries of (key length, key, padding, float64)."""

    def __init__(self, directory: Path) -> None:
        name = f"{os.getpid()}-{uuid.uuid4().hex}"
        self.path = directory / f"{name}{_SUFFIX}"
        # Created under another name and renamed once locked: a scrape never sees the file
        # without its lock, which would make it look like the file of a process that exited.
        making = directory / f".{name}.new"
        self.fd = os.open(making, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)  # held while this process lives
        self.size = _INITIAL
        os.ftruncate(self.fd, self.size)
        os.rename(making, self.path)
        self.mm = mmap.mmap(self.fd, self.size)
        self.used = _HEADER
        struct.pack_into("<Q", self.mm, 0, self.used)
        self.offsets: dict[str, int] = {}

    def slot(self, key: str, *, exemplar: bool = False) -> int:
        """slot gives the offset of *key*'s value (or exemplar), appending it the first time."""
        off = self.offsets.get(key)
        if off is not None:
            return off
        raw = key.encode()
        padded = (4 + len(raw) + 7) // 8 * 8
        need = self.used + padded + (_EX_SIZE if exemplar else 8)
        while need > self.size:
            self.size *= 2
            os.ftruncate(self.fd, self.size)
            self.mm.close()
            self.mm = mmap.mmap(self.fd, self.size)
        flag = _EXEMPLAR_FLAG if exemplar else 0
        struct.pack_into(f"<I{len(raw)}s", self.mm, self.used, len(raw) | flag, raw)
        off = self.used + padded  # the new file is zero-filled: a zero value, or no exemplar
        self.used = need
        struct.pack_into("<Q", self.mm, 0, self.used)  # published last: readers see whole entries
        self.offsets[key] = off
        return off

    def close(self, *, delete: bool = False) -> None:
        with contextlib.suppress(ValueError, OSError):
            self.mm.close()
        with contextlib.suppress(OSError):
            os.close(self.fd)
        if delete:
            with contextlib.suppress(OSError):
                self.path.unlink()


def _read(path: Path) -> Iterator[tuple[str, float | _Exemplar]]:
    """Yield (key, value or exemplar) of a value file, tolerating one being written.

    A slot that has no exemplar yet, or whose exemplar is being written, is left out.
    """
    with path.open("rb") as fh:
        data = fh.read()
    if len(data) < _HEADER:
        return
    used = min(struct.unpack_from("<Q", data, 0)[0], len(data))
    pos = _HEADER
    while pos + 4 <= used:
        (n,) = struct.unpack_from("<I", data, pos)
        exemplar = n & _EXEMPLAR_FLAG
        n &= ~_EXEMPLAR_FLAG
        padded = (4 + n + 7) // 8 * 8
        off = pos + padded
        end = off + (_EX_SIZE if exemplar else 8)
        if end > used:
            break
        key = data[pos + 4 : pos + 4 + n].decode()
        pos = end
        if not exemplar:
            yield key, struct.unpack_from("<d", data, off)[0]
            continue
        body = data[off + _EX_CRC.size : end]
        if _EX_CRC.unpack_from(data, off)[0] != zlib.crc32(body):
            continue  # never written (all zero), or caught half written
        value, stamp, tlen, slen, trace, span = _EX_BODY.unpack(body)
        try:
            yield key, (value, stamp, trace[:tlen].decode(), span[:slen].decode())
        except UnicodeDecodeError:  # pragma: no cover - only a corrupt file
            continue


class _Layout:
    """Where a value file's entries are, parsed once: keys only ever get appended to a file, so
    the layout up to ``used`` bytes stays right, and a scrape just picks the values out."""

    __slots__ = ("exemplars", "ino", "keys", "used", "words")

    def __init__(self, ino: int) -> None:
        self.ino = ino
        self.used = _HEADER
        self.keys: list[str] = []
        self.words: list[int] = []  # each value's offset in float64 words (entries are aligned)
        self.exemplars: list[tuple[str, int]] = []  # (key, offset of the record)

    def extend(self, data: bytes, used: int) -> None:
        """extend parses the entries between the last parse and *used*."""
        pos = self.used
        while pos + 4 <= used:
            (n,) = struct.unpack_from("<I", data, pos)
            exemplar = n & _EXEMPLAR_FLAG
            n &= ~_EXEMPLAR_FLAG
            off = pos + (4 + n + 7) // 8 * 8
            end = off + (_EX_SIZE if exemplar else 8)
            if end > used:
                break
            key = data[pos + 4 : pos + 4 + n].decode()
            if exemplar:
                self.exemplars.append((key, off))
            else:
                self.keys.append(key)
                self.words.append(off // 8)
            pos = end
        self.used = pos


def _read_layout(
    path: Path, layouts: dict[Path, _Layout]
) -> tuple[list[str], list[float], list[tuple[str, _Exemplar]]]:
    """The keys, values and exemplars of a value file, with its layout cached in *layouts*."""
    with path.open("rb") as fh:
        ino = os.fstat(fh.fileno()).st_ino
        data = fh.read()
    layout = layouts.get(path)
    if layout is None or layout.ino != ino:
        layout = layouts[path] = _Layout(ino)
    if len(data) < _HEADER:
        return [], [], []
    used = min(struct.unpack_from("<Q", data, 0)[0], len(data) // 8 * 8)
    if used > layout.used:
        layout.extend(data, used)
    if sys.byteorder == "little":
        words = memoryview(data)[: used // 8 * 8].cast("d")
        values = [words[i] for i in layout.words]
    else:  # pragma: no cover - the files are little-endian
        values = [struct.unpack_from("<d", data, i * 8)[0] for i in layout.words]
    exemplars: list[tuple[str, _Exemplar]] = []
    for key, off in layout.exemplars:
        body = data[off + _EX_CRC.size : off + _EX_SIZE]
        if _EX_CRC.unpack_from(data, off)[0] != zlib.crc32(body):
            continue  # never written (all zero), or caught half written
        value, stamp, tlen, slen, trace, span = _EX_BODY.unpack(body)
        with contextlib.suppress(UnicodeDecodeError):
            exemplars.append((key, (value, stamp, trace[:tlen].decode(), span[:slen].decode())))
    return layout.keys, values, exemplars


class Slot(Bound):
    """Slot is one series of a multi-process metric, written through to this process's file."""

    __slots__ = (
        "_exemplar_keys",
        "_exemplar_offsets",
        "_family",
        "_keys",
        "_offsets",
        "_owner",
        "bounds",
        "values",
    )

    def __init__(
        self,
        family: Family[Slot],
        values: tuple[str, ...],
        owner: Provider,
        keys: tuple[str, ...],
        bounds: tuple[float, ...],
    ) -> None:
        self._family = family
        self.values = values
        self._owner = owner
        self._keys = keys  # counter/gauge: (value,); histogram: buckets..., +Inf, sum
        self.bounds = bounds
        self._offsets = owner.slots(keys)
        self._exemplar_keys: tuple[str, ...] = ()
        self._exemplar_offsets: list[int] = []

    def add(self, delta: float = 1.0) -> None:
        """add changes the value; a non-finite delta (or a counter's negative) is dropped."""
        try:
            if delta - delta == 0.0 and (delta >= 0.0 or self._family.decl.kind != "counter"):
                self._owner.write(self, 0, float(delta), False)
                return
        except Exception:  # not a number: dropped and counted below, never raised
            pass
        self._family.reject(delta)

    def set(self, value: float) -> None:
        """set replaces a gauge's value; a non-finite one is dropped and counted."""
        try:
            if value - value == 0.0:
                self._owner.write(self, 0, float(value), True)
                return
        except Exception:  # likewise
            pass
        self._family.reject(value)

    def observe(self, value: float) -> None:
        """observe counts *value* in its bucket and adds it to the sum; non-finite is dropped."""
        try:
            if value - value == 0.0:
                value = float(value)
                self._owner.observe(self, bisect.bisect_left(self.bounds, value), value)
                return
        except Exception:  # likewise
            pass
        self._family.reject(value)


class ExemplarSlot(Slot):
    """ExemplarSlot is a histogram `Slot` that also keeps each bucket's latest exemplar."""

    __slots__ = ("_context",)

    def __init__(
        self,
        family: Family[Slot],
        values: tuple[str, ...],
        owner: Provider,
        keys: tuple[str, ...],
        bounds: tuple[float, ...],
        exemplar_keys: tuple[str, ...],
        context: ExemplarContext,
    ) -> None:
        super().__init__(family, values, owner, keys, bounds)
        self._context = context
        self._exemplar_keys = exemplar_keys
        self._exemplar_offsets = owner.slots(exemplar_keys, exemplar=True)

    def observe(self, value: float) -> None:
        """observe counts *value* and keeps the current span's ids as its bucket's exemplar."""
        try:
            if not value - value == 0.0:
                raise ValueError(value)
            value = float(value)
        except Exception:  # not a finite number: dropped and counted, never raised
            self._family.reject(value)
            return
        bucket = bisect.bisect_left(self.bounds, value)
        self._owner.observe(self, bucket, value)
        try:
            ids = self._context()
        except Exception:  # a broken context function must not break recording
            return
        if ids is not None:
            self._owner.exemplar(self, bucket, ids, value)


class SketchSlot(Slot):
    """SketchSlot is a histogram `Slot` kept as `kitobs.metrics.expvar`'s log-bucket sketch.

    Each sketch bucket is a value in the file, added the first time a value lands in it; the
    count (as the one ``+Inf`` bucket) and the sum are kept as in a `Slot`. Bucket counts add
    across processes, so the merged sketch is exact.
    """

    __slots__ = ("_cells", "_head")

    def __init__(
        self,
        family: Family[Slot],
        values: tuple[str, ...],
        owner: Provider,
        keys: tuple[str, ...],
        head: list[Any],
    ) -> None:
        super().__init__(family, values, owner, keys, ())
        self._head = head
        self._cells: dict[str, int] = {}  # a sketch bucket's name, e.g. "p-12", to its offset

    def observe(self, value: float) -> None:
        """observe counts *value* in its sketch bucket; a non-finite one is dropped and counted."""
        try:
            if value - value == 0.0:
                value = float(value)
                if value > 0.0:
                    cell = f"p{math.ceil(math.log(value) / _LOG_GAMMA)}"
                elif value < 0.0:
                    cell = f"n{math.ceil(math.log(-value) / _LOG_GAMMA)}"
                else:
                    cell = "z"
                self._owner.observe_sketch(self, cell, value)
                return
        except Exception:  # not a number: dropped and counted below, never raised
            pass
        self._family.reject(value)


#: Counter is a multi-process counter.
Counter = CounterFamily[Slot]
#: Gauge is a multi-process gauge (summed over live processes).
Gauge = GaugeFamily[Slot]
#: Histogram is a multi-process histogram.
Histogram = HistogramFamily[Slot]


class Provider(Pages, Declaring):
    """Provider keeps Prometheus metrics shared by the processes of one server.

    Gauges are summed over live processes; a gauge's callback is this process's reading.

    Args:
        directory: the shared directory, e.g. ``/run/myapp/metrics``; created if missing.
        common_labels, max_label_sets, logger, process_metrics, listen, allow_public_listen,
        path, exemplar_context:
            as `kitobs.metrics.prometheus.Provider` (process metrics are this process's).
        sketch: keep histograms as `kitobs.metrics.expvar`'s log-bucket sketch (`SketchSlot`),
            for the expvar page's quantiles; the exposition then shows their count and sum
            only (one ``+Inf`` bucket), whatever buckets were declared.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        common_labels: Mapping[str, str] | None = None,
        max_label_sets: int = 2000,
        logger: Logger | None = None,
        process_metrics: bool = False,
        listen: str = "",
        allow_public_listen: bool = False,
        path: str = "/metrics",
        exemplar_context: ExemplarContext | None = None,
        sketch: bool = False,
    ) -> None:
        self.directory = Path(directory)
        self._sketch = sketch
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(
                f"cannot create the directory: {err}",
                key=key_name(PrometheusSettings, "multiprocess_dir"),
                value=str(directory),
            ) from None
        self.path = path
        self._core = Core(common_labels=common_labels, max_label_sets=max_label_sets, logger=logger)
        # One lock for every write: a write is a read-modify-write of the file (and the file
        # may be remapped when it grows), so the GIL alone does not make it safe.
        self._lock = threading.Lock()
        self._file = _File(self.directory)
        self._exemplar_context = exemplar_context
        self._process = ProcessCollector() if process_metrics else None
        self._closed = False
        # Descriptors held open for a moment (the directory's lock, a probe of a file's lock):
        # a child forked meanwhile gets a copy, which would hold that lock for as long as the
        # child lives, so the child closes them.
        self._transient: set[int] = set()
        self._layouts: dict[Path, _Layout] = {}
        self._parsed: dict[str, tuple[Any, ...]] = {}  # a key, json-decoded once
        _fork.in_child(self)
        self.collect_dead()
        self._dropped_family = self._core.declare_self_metrics(self.declare)
        self._server: Server | None = None
        if listen:
            self._server = serve(
                self.wsgi_routes(),
                listen,
                key=key_name(PrometheusSettings, "listen"),
                allow_public=allow_public_listen,
                reuse_port=True,
            )
            # A worker leaving (recycled, or the server stopping) stops listening first, so
            # that the kernel sends new scrapes to the workers that stay.
            atexit.register(_stop_server, weakref.ref(self))

    # --- declaring ------------------------------------------------------------------------

    def _make(self, decl: Declaration) -> Counter | Gauge | Histogram:
        def child(family: Family[Slot], values: tuple[str, ...]) -> Slot:
            d = family.decl
            head = [d.prometheus_name, d.kind, d.help, list(d.labels), list(values)]
            if d.kind == "histogram" and self._sketch:
                count_sum = (json.dumps([*head, "le", "+Inf"]), json.dumps([*head, "sum", ""]))
                return SketchSlot(family, values, self, count_sum, head)
            if d.kind == "histogram":
                bounds = d.buckets or ()
                les = [*(fmt(b) for b in bounds), "+Inf"]
                keys = (
                    *(json.dumps([*head, "le", le]) for le in les),
                    json.dumps([*head, "sum", ""]),
                )
                context = self._exemplar_context
                if context is not None:
                    ex_keys = tuple(json.dumps([*head, "ex", le]) for le in les)
                    return ExemplarSlot(family, values, self, keys, bounds, ex_keys, context)
                return Slot(family, values, self, keys, bounds)
            return Slot(family, values, self, (json.dumps([*head, "", ""]),), ())

        def make(d: Declaration) -> Counter | Gauge | Histogram:
            fam: Counter | Gauge | Histogram
            if d.kind == "counter":
                fam = CounterFamily(d, self._core, child)
            elif d.kind == "gauge":
                fam = GaugeFamily(d, self._core, child)
            else:
                fam = HistogramFamily(d, self._core, child)
            if not d.labels:
                fam.default()
            return fam

        return self._core.declare(decl, make)

    # --- the file -------------------------------------------------------------------------

    def slots(self, keys: tuple[str, ...], *, exemplar: bool = False) -> list[int]:
        """slots gives the file offsets of *keys* (used by `Slot`)."""
        with self._lock:
            return [self._file.slot(k, exemplar=exemplar) for k in keys]

    def write(self, slot: Slot, index: int, value: float, replace: bool) -> None:
        """write adds *value* to (or with *replace*, sets) one value of *slot*."""
        with self._lock:
            f = self._file
            if self._closed:
                return
            off = slot._offsets[index]
            if not replace:
                value += struct.unpack_from("<d", f.mm, off)[0]
            struct.pack_into("<d", f.mm, off, value)

    def observe(self, slot: Slot, bucket: int, value: float) -> None:
        """observe counts one observation in *bucket* and adds *value* to the sum."""
        with self._lock:
            if self._closed:
                return
            mm = self._file.mm
            off = slot._offsets[bucket]
            struct.pack_into("<d", mm, off, struct.unpack_from("<d", mm, off)[0] + 1.0)
            off = slot._offsets[-1]
            struct.pack_into("<d", mm, off, struct.unpack_from("<d", mm, off)[0] + value)

    def observe_sketch(self, slot: SketchSlot, cell: str, value: float) -> None:
        """observe_sketch counts one observation in sketch bucket *cell* of *slot*."""
        with self._lock:
            if self._closed:
                return
            off = slot._cells.get(cell)
            if off is None:  # first value in this bucket: its entry is appended (may remap)
                off = slot._cells[cell] = self._file.slot(json.dumps([*slot._head, "sk", cell]))
            mm = self._file.mm
            struct.pack_into("<d", mm, off, struct.unpack_from("<d", mm, off)[0] + 1.0)
            off = slot._offsets[0]
            struct.pack_into("<d", mm, off, struct.unpack_from("<d", mm, off)[0] + 1.0)
            off = slot._offsets[1]
            struct.pack_into("<d", mm, off, struct.unpack_from("<d", mm, off)[0] + value)

    def exemplar(self, slot: Slot, bucket: int, ids: tuple[str, str], value: float) -> None:
        """exemplar keeps (trace id, span id, *value*, now) as the latest exemplar of *bucket*.

        Ids too long for the record (64 and 32 bytes of UTF-8) are not kept: no exemplar is
        better than one pointing at a wrong trace.
        """
        try:
            trace, span = ids[0].encode(), ids[1].encode()
        except Exception:  # not strings: a broken context function must not break recording
            return
        if len(trace) > _TRACE_ROOM or len(span) > _SPAN_ROOM:
            return
        body = _EX_BODY.pack(value, time.time(), len(trace), len(span), trace, span)
        crc = zlib.crc32(body)  # outside the lock: only the two copies need it
        with self._lock:
            if self._closed:
                return
            mm = self._file.mm
            off = slot._exemplar_offsets[bucket] + _EX_CRC.size
            mm[off : off + _EX_BODY.size] = body
            _EX_CRC.pack_into(mm, off - _EX_CRC.size, crc)

    def _after_fork_in_child(self) -> None:
        """In a forked child: a fresh lock and file, every series back at zero."""
        self._lock = threading.Lock()
        self._server = None  # the standalone server's thread does not survive fork
        if self._closed:  # a closed provider writes nothing: no file for it in the child
            return
        old = self._file
        with contextlib.suppress(ValueError, OSError):
            old.mm.close()
        with contextlib.suppress(OSError):
            os.close(old.fd)  # the parent keeps its own descriptor, lock and file
        self._file = _File(self.directory)
        for _decl, fam in self._core.metrics():
            if isinstance(fam, Family):
                for slot in tuple(fam.series.values()):
                    slot._offsets = [self._file.slot(k) for k in slot._keys]
                    slot._exemplar_offsets = [
                        self._file.slot(k, exemplar=True) for k in slot._exemplar_keys
                    ]
                    if isinstance(slot, SketchSlot):
                        slot._cells = {}  # appended again as values arrive in the new file
        self._server = None  # the standalone server's thread does not survive fork
        for fd in tuple(self._transient):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._transient = set()

    @contextlib.contextmanager
    def _flocked(self, path: Path, how: int) -> Iterator[int]:
        """Open *path* and hold ``flock(how)`` on it for the block (``LOCK_NB`` raises OSError)."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self._transient.add(fd)
        try:
            fcntl.flock(fd, how)
            yield fd
        finally:
            self._transient.discard(fd)
            os.close(fd)  # closing releases the flock

    def collect_dead(self) -> None:
        """collect_dead merges files of exited processes into the archive and deletes them."""
        with self._flocked(self.directory / ".lock", fcntl.LOCK_EX):
            dead: list[Path] = []
            for path in self.directory.glob("*" + _SUFFIX):
                if path == self._file.path:
                    continue
                if self._is_dead(path):
                    dead.append(path)
            if not dead:
                return
            values, exemplars = self._archive()
            for path in dead:
                for key, value in _read(path):
                    if isinstance(value, tuple):
                        _keep_latest(exemplars, key, value)
                    elif json.loads(key)[1] != "gauge":
                        values[key] = values.get(key, 0.0) + value
            tmp = self.directory / f".{_ARCHIVE}.{os.getpid()}"
            tmp.write_text(json.dumps({**values, **exemplars}))
            tmp.replace(self.directory / _ARCHIVE)
            for path in dead:
                with contextlib.suppress(OSError):
                    path.unlink()

    def _is_dead(self, path: Path) -> bool:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return False
        self._transient.add(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return False  # its owner holds the lock: alive
        else:
            return True
        finally:
            self._transient.discard(fd)
            os.close(fd)

    def _archive(self) -> tuple[dict[str, float], dict[str, _Exemplar]]:
        """The archive of exited processes: summed values, and the latest exemplar per bucket."""
        try:
            data = json.loads((self.directory / _ARCHIVE).read_text())
        except (OSError, ValueError):
            return {}, {}
        values: dict[str, float] = {}
        exemplars: dict[str, _Exemplar] = {}
        for k, v in data.items():
            with contextlib.suppress(TypeError, ValueError):
                if isinstance(v, list):
                    value, stamp, trace, span = v
                    exemplars[str(k)] = (float(value), float(stamp), str(trace), str(span))
                else:
                    values[str(k)] = float(v)
        return values, exemplars

    def totals(self) -> dict[str, float]:
        """totals sums every process's values by key (after merging exited ones)."""
        return self._gather()[0]

    def _gather(self) -> tuple[dict[str, float], dict[str, _Exemplar]]:
        """Every process's values summed by key, and the latest exemplar of each bucket."""
        self.collect_dead()
        with self._flocked(self.directory / ".lock", fcntl.LOCK_SH):  # no merge meanwhile
            total, exemplars = self._archive()
            layouts: dict[Path, _Layout] = {}
            get = total.get
            for path in self.directory.glob("*" + _SUFFIX):
                try:
                    keys, values, file_exemplars = _read_layout(path, self._layouts)
                except OSError:
                    continue
                layouts[path] = self._layouts[path]
                for key, value in zip(keys, values):  # noqa: B905 - a file may grow meanwhile
                    total[key] = get(key, 0.0) + value
                for key, ex in file_exemplars:
                    _keep_latest(exemplars, key, ex)
            self._layouts = layouts  # files that went are forgotten
            return total, exemplars

    # --- exposition -------------------------------------------------------------------------

    def exposition(self, *, openmetrics: bool = False) -> bytes:
        """exposition renders the totals of every process as text 0.0.4 or OpenMetrics."""
        groups: dict[str, tuple[str, str, dict[tuple[tuple[str, ...], tuple[str, ...]], Any]]] = {}
        totals, exemplars = self._gather()
        parsed = self._parsed
        if len(parsed) > 4 * len(totals) + 1000:  # keys of series gone for good
            parsed.clear()
        for key, value in totals.items():
            head = parsed.get(key)
            if head is None:
                name, kind, help_text, names, values, part, le = json.loads(key)
                sk = (tuple(names), tuple(values))
                head = parsed[key] = (name, kind, help_text, sk, part, le)
            name, kind, help_text, sk, part, le = head
            _, _, series = groups.setdefault(name, (kind, help_text, {}))
            if kind == "histogram":
                entry = series.setdefault(sk, {"le": {}, "sum": 0.0, "ex": {}})
                if part == "le":
                    entry["le"][le] = entry["le"].get(le, 0.0) + value
                elif part == "sum":
                    entry["sum"] += value
            else:
                series[sk] = series.get(sk, 0.0) + value
        if openmetrics:  # exemplars only where their bucket has a count
            for key, ex in exemplars.items():
                name, _, _, names, values, _, le = json.loads(key)
                entry = groups.get(name, ("", "", {}))[2].get((tuple(names), tuple(values)))
                if entry is not None:
                    entry["ex"][le] = ex
        # Gauges with a callback (this process's reading) and process metrics are rendered from
        # samples; whatever their series wrote to the files is left out.
        sampled: list[tuple[Declaration, list[tuple[tuple[str, ...], float]]]] = [
            (decl, callback_samples(fam))
            for decl, fam in self._core.metrics()
            if isinstance(fam, Family) and fam.callback is not None
        ]
        if self._process is not None:
            sampled.extend(self._process.collect())
        skip = {decl.prometheus_name for decl, _ in sampled}
        for decl, fam in self._core.metrics():  # declared here but never written anywhere
            if isinstance(fam, Family) and decl.prometheus_name not in groups:
                groups[decl.prometheus_name] = (decl.kind, decl.help, {})
        out: list[str] = []
        cn, cv = self._core.common_names, self._core.common_values
        for name, (kind, help_text, series) in groups.items():
            if name in skip:
                continue
            fam_name = name[: -len("_total")] if openmetrics and kind == "counter" else name
            out.append(f"# HELP {fam_name} {escape_help(help_text)}\n# TYPE {fam_name} {kind}\n")
            for (names, values), v in series.items():
                block = label_block(cn + names, cv + values)
                if kind != "histogram":
                    out.append(f"{name}{{{block}}} {fmt(v)}\n" if block else f"{name} {fmt(v)}\n")
                    continue
                running = 0.0
                sep = "," if block else ""
                les = sorted(
                    v["le"].items(), key=lambda kv: math.inf if kv[0] == "+Inf" else float(kv[0])
                )
                for le, count in les:
                    running += count
                    ex = v["ex"].get(le)
                    tail = exemplar_suffix(ex[2], ex[3], ex[0], ex[1]) if ex else ""
                    out.append(f'{name}_bucket{{{block}{sep}le="{le}"}} {fmt(running)}{tail}\n')
                body = f"{{{block}}}" if block else ""
                out.append(f"{name}_sum{body} {fmt(v['sum'])}\n{name}_count{body} {fmt(running)}\n")
        for decl, samples in sampled:
            pname = decl.prometheus_name
            fam_name = pname[: -len("_total")] if openmetrics and decl.kind == "counter" else pname
            out.append(
                f"# HELP {fam_name} {escape_help(decl.help)}\n# TYPE {fam_name} {decl.kind}\n"
            )
            for values, value in samples:
                block = label_block(cn + decl.labels, cv + values)
                out.append(
                    f"{pname}{{{block}}} {fmt(value)}\n" if block else f"{pname} {fmt(value)}\n"
                )
        if openmetrics:
            out.append("# EOF\n")
        return "".join(out).encode()

    def _page(self, accept: str) -> tuple[bytes, str]:
        om = negotiate(accept)
        return self.exposition(openmetrics=om), OPENMETRICS if om else TEXT

    @property
    def address(self) -> tuple[str, int] | None:
        """address is the standalone server's (host, port), or None without ``listen``."""
        return self._server.address if self._server is not None else None

    def close(self) -> None:
        """close stops the server and releases this process's file (its values stay counted)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._file.mm.flush()
            self._file.close()  # releases the flock: the next scrape archives the file


def _stop_server(ref: weakref.ref[Provider]) -> None:
    provider = ref()
    server = provider._server if provider is not None else None
    if server is not None:
        provider._server = None  # type: ignore[union-attr]
        server.close()


def _keep_latest(exemplars: dict[str, _Exemplar], key: str, ex: _Exemplar) -> None:
    """Keep *ex* under *key* unless the one there is later."""
    have = exemplars.get(key)
    if have is None or ex[1] >= have[1]:
        exemplars[key] = ex
