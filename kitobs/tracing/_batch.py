"""The batching processor: a bounded queue in front of an exporter, drained by one thread.

``on_end`` (the span-end hot path) appends to a deque and, when a batch is ready, wakes the
sender thread; it never blocks and never raises. When the queue is full the span is dropped and
counted. The sender exports a batch every ``flush_interval`` seconds or as soon as ``batch_size``
spans wait; an export that fails or times out drops its batch, counted and logged (the first
failure after a success, not every one). The first overflow is logged once per processor.

Fork safety: ``os.register_at_fork`` gives a forked child (a gunicorn worker) an empty queue and
its own sender thread, so it exports its own spans and never the parent's.

Redaction: before a batch reaches the exporter (Zipkin, OTLP, log or any other), the values of
secret span, event and link attributes (``password``, ``authorization``, ``api_key``... by the rule
of `kitobs.redact`, the one log lines use) are replaced by ``[REDACTED]``. It runs on the sender
thread, so ending a span costs nothing more. An exporter that encodes the batch itself can redact
as it goes: if it has ``export_redacted(spans, timeout, rule)`` (`kitobs.tracing.zipkin.Exporter`
does), the processor calls that with its rule and the spans as they ended, and the exporter then
answers for every secret value; any other exporter gets the batch after `redact_spans`.

Shutdown sends everything still queued, but waits no longer than ``shutdown_timeout``; what is
left then is counted as dropped with reason ``shutdown``, as are spans ended afterwards. At
interpreter exit (and on SIGTERM, see `kitobs._exit`) the processor shuts down the same way
within the exit budget too, and reports the spans it could not send.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from itertools import repeat, starmap
from typing import TYPE_CHECKING

from opentelemetry.trace import Link

from kitobs import _exit, _fork
from kitobs.config import TracingSettings, ZipkinSettings, key_name
from kitobs.errors import ConfigError
from kitobs.redact import Rule

if TYPE_CHECKING:
    from kitobs.tracing._api import Counter, Exporter, Logger
    from kitobs.tracing._span import Span

__all__ = ["BatchProcessor", "REASONS", "redact_spans"]

#: Reasons a span is dropped, the ``reason`` label of ``kitobs_telemetry_dropped_total``.
REASONS: tuple[str, ...] = ("queue_full", "export_failed", "shutdown")


class _Nop:
    __slots__ = ()

    def add(self, delta: float) -> None:
        pass

    def log(self, *keyvals: object) -> None:
        pass


_NOP = _Nop()
#: The rule a processor redacts by unless given another: `kitobs.redact.DEFAULT_KEYS`.
_DEFAULT_RULE = Rule()


def _counters(dropped: Counter | Callable[[str], Counter] | None) -> dict[str, Counter]:
    if dropped is None:
        return dict.fromkeys(REASONS, _NOP)
    if callable(getattr(dropped, "add", None)):
        return dict.fromkeys(REASONS, dropped)  # type: ignore[arg-type]
    if callable(dropped):
        return {reason: dropped(reason) for reason in REASONS}
    raise ConfigError(
        "dropped must have add(n) or map a reason to such a counter",
        value=dropped,
        allowed="provider.dropped('spans', reason) or functools.partial(provider.dropped, 'spans')",
    )


class BatchProcessor:
    """BatchProcessor queues ended spans and exports them in batches from a background thread.

    Implements `kitobs.tracing.Processor`. For example
    ``BatchProcessor(zipkin.Exporter(url, service_name="shop"), dropped=counter, logger=logger)``.

    Args:
        exporter: what sends a batch; called on the sender thread only.
        batch_size: most spans per export.
        queue_size: spans held before new ones are dropped.
        flush_interval: seconds between exports of a partial batch.
        shutdown_timeout: longest `shutdown` waits for the last exports.
        export_timeout: seconds one export may take (the exporter's own timeout also applies).
        dropped: counts dropped spans: one counter for every reason, or a function from reason
            (`REASONS`) to counter, e.g. ``functools.partial(provider.dropped, "spans")``.
        logger: where overflow (once) and export failures are reported.
        redact: the rule whose secret attribute values are replaced before export; None
            exports attributes as they are.

    Raises:
        ConfigError: a size or interval that is not positive.
    """

    __slots__ = (
        "__weakref__",
        "_batch_size",
        "_busy",
        "_closed",
        "_dropped",
        "_export_timeout",
        "_exporter",
        "_failing",
        "_idle",
        "_inflight",
        "_interval",
        "_limit",
        "_lock",
        "_logger",
        "_overflow_logged",
        "_pending_drops",
        "_queue",
        "_redact",
        "_send",
        "_shutdown_timeout",
        "_thread",
        "_wake",
    )

    def __init__(
        self,
        exporter: Exporter,
        *,
        batch_size: int = 512,
        queue_size: int = 2048,
        flush_interval: float = 1.0,
        shutdown_timeout: float = 5.0,
        export_timeout: float = 10.0,
        dropped: Counter | Callable[[str], Counter] | None = None,
        logger: Logger | None = None,
        redact: Rule | None = _DEFAULT_RULE,
    ) -> None:
        for key, value in (
            (key_name(TracingSettings, "batch_size"), batch_size),
            (key_name(TracingSettings, "queue_size"), queue_size),
            (key_name(TracingSettings, "flush_interval"), flush_interval),
            (key_name(ZipkinSettings, "timeout"), export_timeout),
        ):
            if not value > 0:
                raise ConfigError("must be positive", key=key, value=value)
        if shutdown_timeout < 0:
            raise ConfigError(
                "must not be negative",
                key=key_name(TracingSettings, "shutdown_timeout"),
                value=shutdown_timeout,
            )
        self._exporter = exporter
        self._batch_size = batch_size
        self._limit = queue_size
        self._interval = flush_interval
        self._shutdown_timeout = shutdown_timeout
        self._export_timeout = export_timeout
        self._dropped = _counters(dropped)
        self._logger: Logger = _NOP if logger is None else logger
        self._redact = redact
        self._send = _sender(exporter, redact)
        self._closed = False
        self._overflow_logged = False
        self._failing = False
        self._start()
        _fork.in_child(self)
        _exit.at_exit(self)

    def _start(self) -> None:
        self._queue: deque[Span] = deque()
        self._lock = threading.Lock()  # guards drop counts and the busy flag, never the queue
        self._wake = threading.Event()
        self._idle = threading.Condition(self._lock)
        self._busy = False
        self._inflight = 0  # spans in the export under way
        self._pending_drops: dict[str, int] = {}
        self._thread = threading.Thread(target=self._run, name="kitobs-span-sender", daemon=True)
        self._thread.start()

    # -- hot path ------------------------------------------------------------------------------

    def on_end(self, span: Span) -> None:
        """on_end queues an ended span, or drops and counts it when the queue is full."""
        queue = self._queue
        if len(queue) < self._limit:
            queue.append(span)
            # Wake the sender once, as the queue reaches a batch: it then drains everything
            # queued, so later spans need no wake (and no Event.is_set call) until it is empty.
            if len(queue) == self._batch_size:
                self._wake.set()
        else:
            self._drop("shutdown" if self._closed else "queue_full", 1)

    def _drop(self, reason: str, count: int) -> None:
        with self._lock:
            self._pending_drops[reason] = self._pending_drops.get(reason, 0) + count
        if not self._wake.is_set():
            self._wake.set()  # the sender counts and logs, off the caller's path

    # -- sender thread -------------------------------------------------------------------------

    def _run(self) -> None:
        queue, wake = self._queue, self._wake
        while True:
            wake.wait(self._interval)
            wake.clear()
            closing = self._closed
            self._report_drops()
            while queue:  # everything queued now, in batches
                self._export_batch(queue)
            self._report_drops()
            with self._lock:
                if not queue:
                    self._idle.notify_all()
            if closing and not queue:
                return

    def _export_batch(self, queue: deque[Span]) -> None:
        # Only this thread pops, so at least min(len, batch_size) spans are there; starmap pops
        # them in C, which keeps the sender's share of the GIL (and the callers' wait) small.
        count = min(len(queue), self._batch_size)
        if not count:
            return
        try:
            batch = list(starmap(queue.popleft, repeat((), count)))
        except IndexError:  # emptied by a shutdown that gave up waiting for this thread
            return
        with self._lock:
            self._busy = True
            self._inflight = len(batch)
        try:
            # Inside the try: if redacting fails the batch is dropped, never sent as it is.
            self._send(batch, self._export_timeout)
        except Exception as err:  # any exporter failure: count, log, carry on
            self._count("export_failed", len(batch))
            if not self._failing:
                self._failing = True
                self._logger.log(
                    "level", "error", "msg", "span export failed", "spans", len(batch),
                    "err", f"{type(err).__name__}: {err}",
                )  # fmt: skip
        else:
            if self._failing:
                self._failing = False
                self._logger.log("level", "info", "msg", "span export recovered")
        finally:
            with self._lock:
                self._busy = False
                self._inflight = 0

    def _report_drops(self) -> None:
        with self._lock:
            pending, self._pending_drops = self._pending_drops, {}
        for reason, count in pending.items():
            self._count(reason, count)
            if reason == "queue_full" and not self._overflow_logged:
                self._overflow_logged = True
                self._logger.log(
                    "level", "warn", "msg", "span queue full: dropping spans",
                    "queue_size", self._limit, "dropped", count,
                )  # fmt: skip

    def _count(self, reason: str, count: int) -> None:
        with contextlib.suppress(Exception):  # a broken counter must not stop the sender
            self._dropped[reason].add(float(count))

    # -- control -------------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """flush exports what is queued now; True when the queue emptied within *timeout*."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._wake.set()
        with self._idle:
            while self._queue or self._busy:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                if not self._thread.is_alive():
                    return False
                self._idle.wait(0.05 if remaining is None else min(remaining, 0.05))
                self._wake.set()
        return True

    def shutdown(self) -> None:
        """shutdown exports everything queued and stops, within ``shutdown_timeout`` seconds.

        Spans left in the queue then, and spans ended later, are counted as dropped (``shutdown``).
        """
        self._stop(time.monotonic() + self._shutdown_timeout)

    def _stop(self, deadline: float) -> int:
        # Returns how many spans were not sent: left queued, or in an export still under way.
        if self._closed:
            return 0
        self._closed = True
        self._wake.set()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        left = len(self._queue)
        if self._thread.is_alive():
            # The sender is stuck in an export: keep later spans out, count what is left.
            self._limit = 0
            self._queue.clear()
            if left:
                self._count("shutdown", left)
            return left + self._inflight
        self._limit = 0
        self._report_drops()
        return 0

    def _flush_at_exit(self, deadline: float) -> str:
        # The exit budget and shutdown_timeout both bound the wait, whichever ends first.
        unsent = self._stop(min(deadline, time.monotonic() + self._shutdown_timeout))
        return f"{unsent} span{'s' if unsent != 1 else ''}" if unsent else ""

    def _after_fork_in_child(self) -> None:
        # The parent's thread does not exist here and its queue holds the parent's spans.
        self._overflow_logged = False
        self._failing = False
        if self._closed:
            self._queue = deque()
            return
        self._start()


def _sender(exporter: Exporter, rule: Rule | None) -> Callable[[list[Span], float], None]:
    # Decided once: an exporter that redacts while it encodes (export_redacted) is handed the
    # rule; any other gets the batch after redact_spans has changed it.
    if rule is None:
        return exporter.export
    redacting = getattr(exporter, "export_redacted", None)
    if callable(redacting):

        def send(spans: list[Span], timeout: float) -> None:
            redacting(spans, timeout, rule)

        return send
    export = exporter.export

    def redact_and_send(spans: list[Span], timeout: float) -> None:
        redact_spans(spans, rule)
        export(spans, timeout)

    return redact_and_send


def redact_spans(spans: list[Span], rule: Rule) -> None:
    """redact_spans replaces secret attribute values of ended *spans*, e.g. before an export.

    Span, event and link attributes are checked. Span and event attributes are the span's own
    copies (the tracer copies what it is given), so they are changed in place.
    """
    secret, marker, plain = rule.is_redacted, rule.marker, rule.known_plain
    for span in spans:
        attrs = span.attributes
        # keys() <= plain clears the usual span (no secret, keys seen before) in one C call;
        # else filter() over cached verdicts, also in C. Replacing a value keeps the dict's size.
        if attrs and not attrs.keys() <= plain:
            for key in filter(secret, attrs):
                attrs[key] = marker
        events = span.events
        if events:
            for _, _, event_attrs in events:
                if event_attrs and not event_attrs.keys() <= plain:
                    for key in filter(secret, event_attrs):
                        event_attrs[key] = marker  # type: ignore[index]
        links = span.links
        if links and any(ln.attributes and any(map(secret, ln.attributes)) for ln in links):
            span.links = [
                Link(ln.context, rule.attributes(dict(ln.attributes))) if ln.attributes else ln
                for ln in links
            ]
