"""Recording shared by the gRPC interceptors: per-method histogram children, spans, statuses.

Private to `kitobs.transport.grpc`; the interceptors and the endpoint server build on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.trace import SpanKind, StatusCode

from kitobs.contract import otel_attribute
from kitobs.transport.core import CallLog
from kitobs.transport.grpc.labels import SYSTEM

if TYPE_CHECKING:
    from opentelemetry.context.context import Context

    from kitobs.log import Logger
    from kitobs.metrics import Counter, Histogram, Provider
    from kitobs.tracing import Span, Tracer

_OK = grpc.StatusCode.OK
_UNKNOWN = grpc.StatusCode.UNKNOWN
_CANCELLED = grpc.StatusCode.CANCELLED
_DEADLINE = grpc.StatusCode.DEADLINE_EXCEEDED
_UNIMPLEMENTED = grpc.StatusCode.UNIMPLEMENTED
# A client cancels at its deadline, and that cancel can reach the server just before the
# server's own copy of the deadline (computed on arrival) fires: a call cut short this close to
# its deadline is counted as DEADLINE_EXCEEDED.
_DEADLINE_SLACK = 0.05
_NAMES: dict[Any, str] = {code: code.name for code in grpc.StatusCode}
_ALL_ERROR_CODES = frozenset(code for code in grpc.StatusCode if code is not _OK)

# Attribute names come from the contract, so spans and metric labels never drift apart.
_A_SYSTEM = otel_attribute("rpc_system_name")
_A_METHOD = otel_attribute("rpc_method")
_A_STATUS = otel_attribute("rpc_status_code")
_A_ERROR = otel_attribute("error_type")
_A_ORIGINAL = "rpc.method_original"
_A_ADDRESS = otel_attribute("server_address")
_A_PORT = otel_attribute("server_port")

_perf_counter = time.perf_counter
_attach = otel_context.attach
_detach = otel_context.detach
_set_span_in_context = otel_trace.set_span_in_context
_SERVER = SpanKind.SERVER
_CLIENT = SpanKind.CLIENT
_ERROR = StatusCode.ERROR


def _error_type(exc: BaseException) -> str:
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _carrier(metadata: Any) -> dict[str, str]:
    # Binary (-bin) metadata values are bytes and never carry trace context.
    if not metadata:
        return {}
    return {key: value for key, value in metadata if type(value) is str}


# -- recording, shared by every interceptor ----------------------------------------------------


class _Method:
    """_Method holds what is bound once per method: the histogram child and span attributes."""

    __slots__ = ("attributes", "children", "histogram", "name")

    def __init__(self, histogram: Histogram, name: str, attributes: dict[str, Any]) -> None:
        self.name = name
        self.histogram = histogram.with_labels(rpc_system_name=SYSTEM, rpc_method=name)
        self.children: dict[tuple[str, str], Histogram] = {}
        self.attributes = {_A_SYSTEM: SYSTEM, _A_METHOD: name, **attributes}

    def observe(self, status: str, error_type: str, seconds: float) -> None:
        key = (status, error_type)
        child = self.children.get(key)
        if child is None:
            # Bounded: 17 codes times the handler's exception classes.
            child = self.children[key] = self.histogram.labels(status, error_type)
        child.observe(seconds)


class _Core:
    """_Core records calls of one side (server or client) into one histogram and one tracer."""

    __slots__ = (
        "access",
        "dropped_logs",
        "dropped_metrics",
        "dropped_spans",
        "error_codes",
        "histogram",
        "methods",
        "pending",
        "tracer",
    )

    def __init__(
        self,
        metrics: Provider,
        histogram: Histogram,
        tracer: Tracer | None,
        error_codes: frozenset[grpc.StatusCode],
        logger: Logger | None = None,
    ) -> None:
        self.histogram = histogram
        self.dropped_metrics = metrics.dropped("metrics", "grpc_error")
        self.dropped_spans = metrics.dropped("spans", "grpc_error")
        self.dropped_logs = metrics.dropped("logs", "grpc_error")
        self.access = CallLog(logger, "grpc", ("method", "status", "duration")) if logger else None
        self.tracer = tracer
        self.error_codes = error_codes
        self.methods: dict[str, _Method] = {}
        # aio clients read the status in a task; keep a reference until it ran.
        self.pending: set[asyncio.Task[None]] = set()

    def method(self, name: str, attributes: dict[str, Any] | None = None) -> _Method:
        state = self.methods.get(name)
        if state is None:
            state = self.methods[name] = _Method(self.histogram, name, attributes or {})
        return state

    def record(
        self,
        call: _Call,
        code: grpc.StatusCode,
        error_type: str,
        exc: BaseException | None,
        details: str | None,
    ) -> None:
        """record observes the duration, writes the access line and ends the span; never raises."""
        seconds = _perf_counter() - call.begin
        status = _NAMES.get(code) or _NAMES[_UNKNOWN]
        try:
            call.method.observe(status, error_type, seconds)
        except Exception:
            _drop(self.dropped_metrics)
        access = self.access
        if access is not None:
            self._log(access, call, code, status, error_type, seconds)
        span = call.span
        if span is None:
            return
        try:
            span.set_attribute(_A_STATUS, status)
            if error_type:
                span.set_attribute(_A_ERROR, error_type)
            if code in self.error_codes:
                if exc is not None and error_type != status:
                    span.record_exception(exc, escaped=True)
                span.set_status(_ERROR, f"{status}: {details}" if details else status)
            if call.scoped:
                # A scoped span restores the context it replaced when it exits.
                call.scoped = False
                span.__exit__(None, None, None)
            else:
                span.end()
        except Exception:
            _drop(self.dropped_spans)

    def _log(
        self,
        access: CallLog,
        call: _Call,
        code: grpc.StatusCode,
        status: str,
        error_type: str,
        seconds: float,
    ) -> None:
        # Written while the call's span is current, so the line carries its trace ids: a unary
        # call's span is current already, a streaming call's only while its handler runs.
        context = call.context if call.span is not None and not call.scoped else None
        try:
            token = _attach(context) if context is not None else None
            try:
                if code in self.error_codes:
                    access.error(call.method.name, status, seconds, error_type)
                else:
                    access.ok(call.method.name, status, seconds)
            finally:
                if token is not None:
                    _detach(token)
        except Exception:
            _drop(self.dropped_logs)


def _drop(counter: Counter) -> None:
    # The drop counter itself failing must not reach the call.
    with contextlib.suppress(Exception):
        counter.add(1.0)


class _Call:
    """_Call is the state of one call in flight; it is also the client's done-callback."""

    __slots__ = ("begin", "context", "core", "done", "method", "scoped", "span")

    def __init__(self, core: _Core, method: _Method, span: Span | None) -> None:
        self.core = core
        self.method = method
        self.span = span
        self.begin = _perf_counter()
        self.scoped = False
        self.context: Context | None = None
        self.done = False

    # Client side: grpcio calls this with the finished call (a grpc.Call / grpc.Future).
    def __call__(self, future: Any) -> None:
        if self.done:
            return
        self.done = True
        exc: BaseException | None = None
        try:
            code = future.code()
        except Exception as failing:  # a call object that cannot report: count it as unknown
            code, exc = _UNKNOWN, failing
        if code is None:
            code = _UNKNOWN
        if exc is None and code is not _OK:
            # exception() raises for a cancelled future; the code says enough then.
            with contextlib.suppress(Exception):
                exc = future.exception()
        self.core.record(self, code, _client_error_type(code, exc), exc, None)

    def aio_done(self, call: Any) -> None:
        """aio_done reads an aio call's status in a task: aio exposes it only as a coroutine."""
        if self.done:
            return
        self.done = True
        try:
            task = asyncio.get_running_loop().create_task(self._aio_finish(call))
        except Exception:
            _drop(self.core.dropped_metrics)
            return
        pending = self.core.pending
        pending.add(task)
        task.add_done_callback(pending.discard)

    async def _aio_finish(self, call: Any) -> None:
        try:
            code = await call.code()
            details = await call.details() if code is not _OK else None
        except Exception as failing:
            self.core.record(self, _UNKNOWN, _error_type(failing), failing, None)
            return
        if code is None:
            code = _UNKNOWN
        self.core.record(self, code, "" if code is _OK else _NAMES[code], None, details)

    def fail(self, exc: BaseException) -> None:
        """fail records a client call that raised before grpcio returned a call object."""
        if self.done:
            return
        self.done = True
        code = _code_of(exc)
        if code is None and _is_cancel(exc):
            self.core.record(self, _CANCELLED, _NAMES[_CANCELLED], exc, None)
        elif code is None:
            self.core.record(self, _UNKNOWN, _error_type(exc), exc, None)
        else:
            self.core.record(self, code, "" if code is _OK else _NAMES[code], exc, None)


def _code_of(exc: BaseException) -> grpc.StatusCode | None:
    code = getattr(exc, "code", None)
    if isinstance(exc, grpc.RpcError) and callable(code):
        try:
            value = code()
        except Exception:
            return None
        return value if isinstance(value, grpc.StatusCode) else None
    return None


def _is_cancel(exc: BaseException) -> bool:
    return isinstance(exc, asyncio.CancelledError | GeneratorExit)


def _client_error_type(code: grpc.StatusCode, exc: BaseException | None) -> str:
    if code is _OK:
        return ""
    if exc is not None and not isinstance(exc, grpc.RpcError):
        return _error_type(exc)  # failed inside grpcio before a status, e.g. serializing
    return _NAMES[code]
