"""kitobs.transport.core: what every transport does per call, in one place.

A transport (HTTP, gRPC, and message transports such as NATS or AMQP) records each call the same
way, and `Instruments` does it for one side (server or client) of one transport:

- `Instruments.start` starts the call's span: a SERVER (or CONSUMER) span whose parent is
  extracted from the *carrier* the call brought (headers, gRPC metadata, message headers), or a
  CLIENT (or PRODUCER) span whose context is injected into the outgoing *inject* carrier, with
  the tracer's propagators (`kitobs.tracing`: W3C, B3); the span is current until `finish`;
- `Instruments.finish` observes the call's duration in the contract's histogram (children bound
  once per label set), writes the call's log line (`CallLog`) and ends the span, the first two
  while the span is current (so an exemplar and the line carry the call's trace ids);
- nothing in the recording path raises into the call: a failure is counted in
  ``kitobs_telemetry_dropped_total{signal,reason="<transport>_error"}``, with ``signal`` the
  ``metrics``, ``spans`` or ``logs`` that failed.

The HTTP transports (`kitobs.transport.http`) and the gRPC interceptors are built on it;
docs/transports.md ("Writing a transport") builds a small message transport with it.
Example::

    >>> from kitobs.contract import RPC_SERVER_CALL_DURATION
    >>> from kitobs.metrics import memory
    >>> metrics = memory.Provider()
    >>> inst = Instruments(metrics, RPC_SERVER_CALL_DURATION, "nats")
    >>> call = inst.start("orders.created", carrier={"traceparent": "..."})
    >>> labels = ("nats", "orders.created", "OK", "")
    >>> inst.finish(call, labels)
    >>> metrics.series("rpc_server_call_duration_seconds") == [
    ...     dict(zip(RPC_SERVER_CALL_DURATION.labels, labels))
    ... ]
    True

`CallLog` is the per-call line alone::

    >>> import io
    >>> from kitobs import log
    >>> out = io.StringIO()
    >>> line = CallLog(log.new(out), "nats", ("subject", "status", "duration"))
    >>> line.ok("orders.created", "ok", 0.25)
    >>> "transport=nats subject=orders.created status=ok duration=0.25" in out.getvalue()
    True
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from opentelemetry.context.context import Context

    from kitobs.log import Logger
    from kitobs.metrics import Counter, Histogram, MetricSpec, Provider

__all__ = [
    "Call",
    "CallLog",
    "Instruments",
    "SPAN_KINDS",
    "Tracer",
    "exception_type",
]

#: SPAN_KINDS are the span kinds `Instruments` takes, by name: ``"server"``, ``"client"``...
SPAN_KINDS: tuple[str, ...] = ("server", "client", "producer", "consumer", "internal")
# Past this many label sets `Instruments` stops caching bound children (the provider's own
# cardinality guard still applies); it only bounds this module's memory.
_CACHE_MAX = 2048
_perf_counter = time.perf_counter


class Tracer(Protocol):
    """Tracer is what the transports need of `kitobs.tracing.Tracer`, e.g. ``kit.tracer``.

    ``start_span`` starts a span whose parent is in *context* (default: the current one);
    ``inject`` writes a context into headers; ``extract`` reads headers into a context.
    """

    def start_span(
        self, name: str, *, kind: Any = ..., attributes: Any = None, context: Context | None = None
    ) -> Any:
        """start_span starts a span named *name* under *context* (or the current one)."""

    def inject(self, headers: MutableMapping[str, str], context: Context | None = None) -> None:
        """inject writes the current span (or *context*'s) into *headers*."""

    def extract(self, headers: Mapping[str, str], context: Context | None = None) -> Context:
        """extract reads the trace context the *headers* carry."""


def exception_type(exc: BaseException) -> str:
    """exception_type gives an exception's ``error_type`` label, e.g. ``"httpx.ReadTimeout"``.

    The qualified class name, module-qualified outside builtins (``"ValueError"``).
    """
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


class CallLog:
    """CallLog writes one line per call of a transport, e.g. ``CallLog(kit.logger, "grpc", keys)``.

    The line starts ``transport=<transport>``, then each of *keys* with the values given to `ok`
    (at info) or `error` (at error, with ``error=<error_type>`` last). With a Kit's logger it
    carries ``trace_id``/``span_id`` of the span current while it is written, and it honours the
    logger's level, redaction and output. The keys are encoded once, so a call writes only its
    values.
    """

    __slots__ = ("error", "ok")

    ok: Callable[..., None]
    """ok writes the info line, one value per key, e.g. ``ok("GET", "/users", "200", 0.01)``."""
    error: Callable[..., None]
    """error writes the error line: one value per key, then the error type."""

    def __init__(self, logger: Logger, transport: str, keys: tuple[str, ...]) -> None:
        target: Any = logger
        error_keys = (*keys, "error")
        with_ = getattr(target, "with_", None)
        if callable(with_):
            bound = with_("transport", transport)
            prepare = getattr(bound, "prepare", None)
            if callable(prepare):
                self.ok = prepare("info", *keys)
                self.error = prepare("error", *error_keys)
                return
            info = getattr(bound, "info", bound.log)
            error = getattr(bound, "error", bound.log)
        else:
            info = functools.partial(getattr(target, "info", target.log), "transport", transport)
            error = functools.partial(getattr(target, "error", target.log), "transport", transport)
        self.ok = functools.partial(_keyed, info, keys)
        self.error = functools.partial(_keyed, error, error_keys)


def _keyed(emit: Callable[..., None], keys: tuple[str, ...], *values: object) -> None:
    emit(*(item for pair in zip(keys, values, strict=True) for item in pair))


class Call:
    """Call is one call in flight, from `Instruments.start`; hand it to `Instruments.finish`.

    ``begin`` is its `time.perf_counter` start, ``span`` its span (None without a tracer or when
    starting it failed), ``context`` the OpenTelemetry context holding the span (for a transport
    that makes it current itself, e.g. around each item of a stream). Transports needing more
    state per call subclass it.
    """

    __slots__ = ("begin", "context", "span", "token")

    def __init__(self, begin: float) -> None:
        self.begin = begin
        self.span: Any = None
        self.context: Any = None
        self.token: Any = None


class Instruments:
    """Instruments records the calls of one side of a transport, e.g. a NATS subscriber.

    *duration* is the contract's histogram of the side (declared on *metrics* here, e.g.
    `kitobs.contract.RPC_SERVER_CALL_DURATION`); `finish` takes its label values in the spec's
    order. *transport* names the transport in the log line (``transport=nats``) and in the
    ``reason`` of recording failures (``nats_error``). *kind* is the span kind (`SPAN_KINDS`).
    With a *tracer*, each call gets a span; with a *logger* and *log_keys*, a line
    ``transport=<transport> <key>=<value>... duration=<seconds>`` (`CallLog`).

    Example: ``Instruments(kit.metrics, RPC_CLIENT_CALL_DURATION, "nats", kind="client")``.

    Raises:
        ConfigError: *kind* is not one of `SPAN_KINDS`.
    """

    __slots__ = (
        "_attach",
        "_children",
        "_detach",
        "_error_status",
        "_histogram",
        "_kind",
        "_server",
        "_with_span",
        "dropped_logs",
        "dropped_metrics",
        "dropped_spans",
        "log",
        "tracer",
    )

    def __init__(
        self,
        metrics: Provider,
        duration: MetricSpec[Histogram],
        transport: str,
        *,
        kind: str = "server",
        tracer: Tracer | None = None,
        logger: Logger | None = None,
        log_keys: tuple[str, ...] = (),
    ) -> None:
        if kind not in SPAN_KINDS:
            from kitobs.errors import ConfigError

            raise ConfigError("is not a span kind", value=kind, allowed=", ".join(SPAN_KINDS))
        self._histogram: Histogram = metrics.declare(duration)
        self._children: dict[tuple[str, ...], Histogram] = {}
        reason = f"{transport}_error"
        self.dropped_metrics: Counter = metrics.dropped("metrics", reason)
        self.dropped_spans: Counter = metrics.dropped("spans", reason)
        self.dropped_logs: Counter = metrics.dropped("logs", reason)
        self.log = (
            CallLog(logger, transport, (*log_keys, "duration")) if logger is not None else None
        )
        # A server side reads its parent from the carrier; a client side writes into it.
        self._server = kind in ("server", "consumer")
        self.tracer = tracer
        if tracer is not None:
            # Imported only when tracing is on, so metrics-only users need no OpenTelemetry.
            from opentelemetry.trace import SpanKind, StatusCode

            from kitobs._otel_context import attach, detach, with_span

            self._kind = SpanKind[kind.upper()]
            self._error_status = StatusCode.ERROR
            self._attach = attach
            self._detach = detach
            self._with_span = with_span

    def start(
        self,
        name: str,
        attributes: Mapping[str, Any] | None = None,
        *,
        carrier: Mapping[str, str] | None = None,
        inject: MutableMapping[str, str] | None = None,
        current: bool = True,
    ) -> Call:
        """start starts a call's clock and span, e.g. ``start("orders.created", carrier=hdrs)``.

        The span's parent is extracted from *carrier* (what the call brought; else the current
        span is the parent); its own context is written into *inject* (what the call sends).
        With *current* the span is current until `finish` (call both in one context); else
        ``call.context`` holds it, for the transport to make current where it runs user code.
        """
        call = Call(_perf_counter())
        if self.tracer is not None:
            self.start_span(call, name, attributes, carrier, inject, current)
        return call

    def start_span(
        self,
        call: Call,
        name: str,
        attributes: Mapping[str, Any] | None,
        carrier: Mapping[str, str] | None = None,
        inject: MutableMapping[str, str] | None = None,
        current: bool = True,
    ) -> None:
        """start_span starts *call*'s span as `start` does, for a transport's own `Call` subclass.

        Does nothing without a tracer; a failure is counted and leaves the call without a span.
        """
        tracer = self.tracer
        if tracer is None:
            return
        try:
            parent = tracer.extract(carrier) if carrier is not None else None
            span = tracer.start_span(name, kind=self._kind, attributes=attributes, context=parent)
            call.span = span
            call.context = context = self._with_span(span, parent)
            if inject is not None:
                # The injected parent must be this span, not the current one.
                tracer.inject(inject, context)
            if current:
                call.token = self._attach(context)
        except Exception:  # tracing trouble must not fail the call
            call.span = None
            self.drop(self.dropped_spans)

    def release(self, call: Call) -> None:
        """release stops *call*'s span being current, e.g. once a WSGI app has returned.

        The span stays open until `finish`, which makes it current again while it records.
        """
        token = call.token
        if token is not None:
            call.token = None
            # contextlib.suppress would cost three Python calls per call; try costs nothing.
            try:  # noqa: SIM105
                self._detach(token)
            except (ValueError, RuntimeError):  # released in another context
                pass

    def finish(
        self,
        call: Call,
        labels: tuple[str, ...],
        log: tuple[object, ...] | None = None,
        failed: bool = False,
        error_type: str = "",
        exc: BaseException | None = None,
        attributes: Mapping[str, Any] | None = None,
        name: str | None = None,
        description: str | None = None,
    ) -> None:
        """finish records a call: duration, log line, span; it never raises.

        *labels* are the duration histogram's label values, in the spec's order. *log* are the
        values of the line's keys (the duration is added); None writes no line. *failed* marks
        the call an error: the line is written at error with *error_type*, the span gets ERROR
        status (*description*, default *error_type*) and records *exc* when given. *attributes*
        are set on the span and *name*, given, renames it (e.g. with the route matched).
        """
        # Positional parameters, one frame: CPython fills keyword-only defaults on every call.
        seconds = _perf_counter() - call.begin
        span = call.span
        if span is not None and call.token is None and self._server:
            # Released or never made current: current again while recording, so the exemplar
            # and the log line carry this call's trace. (A client's current context is the
            # caller's, already in the same trace.)
            try:
                call.token = self._attach(call.context)
            except Exception:
                self.drop(self.dropped_spans)
        try:
            child = self._children.get(labels)
            if child is None:
                child = self._histogram.labels(*labels)
                if len(self._children) < _CACHE_MAX:
                    self._children[labels] = child
            child.observe(seconds)
        except Exception:
            self.drop(self.dropped_metrics)
        line = self.log
        if line is not None and log is not None:
            try:
                if failed:
                    line.error(*log, seconds, error_type)
                else:
                    line.ok(*log, seconds)
            except Exception:
                self.drop(self.dropped_logs)
        if span is None:
            return
        # end(), inlined: this is every traced call's path.
        call.span = None
        token = call.token
        if token is not None:
            call.token = None
            try:  # noqa: SIM105 - see release
                self._detach(token)
            except (ValueError, RuntimeError):
                pass
        try:
            if attributes:
                span.set_attributes(attributes)
            if name is not None:
                span.update_name(name)
            if failed:
                if exc is not None:
                    span.record_exception(exc, escaped=True)
                span.set_status(self._error_status, description or error_type)
            span.end()
        except Exception:
            self.drop(self.dropped_spans)

    def observe(self, labels: tuple[str, ...], seconds: float) -> None:
        """observe records *seconds* under *labels* (the spec's order); it never raises."""
        try:
            child = self._children.get(labels)
            if child is None:
                child = self._histogram.labels(*labels)
                if len(self._children) < _CACHE_MAX:
                    self._children[labels] = child
            child.observe(seconds)
        except Exception:
            self.drop(self.dropped_metrics)

    def end(
        self,
        call: Call,
        failed: bool = False,
        error_type: str = "",
        exc: BaseException | None = None,
        attributes: Mapping[str, Any] | None = None,
        name: str | None = None,
        description: str | None = None,
    ) -> None:
        """end ends *call*'s span as `finish` does, without recording; it never raises."""
        span = call.span
        if span is None:
            return
        call.span = None
        token = call.token
        if token is not None:
            call.token = None
            try:  # noqa: SIM105 - see release
                self._detach(token)
            except (ValueError, RuntimeError):
                pass
        try:
            if attributes:
                span.set_attributes(attributes)
            if name is not None:
                span.update_name(name)
            if failed:
                if exc is not None:
                    span.record_exception(exc, escaped=True)
                span.set_status(self._error_status, description or error_type)
            span.end()
        except Exception:
            self.drop(self.dropped_spans)

    @staticmethod
    def drop(counter: Counter) -> None:
        """drop counts one recording failure in *counter*, e.g. ``drop(inst.dropped_spans)``."""
        try:  # noqa: SIM105 - the drop counter itself failing must not reach the call
            counter.add(1.0)
        except Exception:
            pass
