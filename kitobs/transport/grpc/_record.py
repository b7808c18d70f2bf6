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

from kitobs.contract import otel_attribute
from kitobs.transport.core import Call, Instruments, exception_type
from kitobs.transport.grpc.labels import SYSTEM

if TYPE_CHECKING:
    from kitobs.log import Logger
    from kitobs.metrics import Counter, Histogram, MetricSpec, Provider
    from kitobs.tracing import Tracer

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

# Label tuples kept per method: 17 codes times the handler's exception classes, bounded.
_LABELS_MAX = 256

_perf_counter = time.perf_counter
_attach = otel_context.attach
_detach = otel_context.detach
_error_type = exception_type


def _carrier(metadata: Any) -> dict[str, str]:
    # Binary (-bin) metadata values are bytes and never carry trace context.
    if not metadata:
        return {}
    return {key: value for key, value in metadata if type(value) is str}


# -- recording, shared by every interceptor ----------------------------------------------------


class _Method:
    """_Method holds what is bound once per method: its label and span attributes."""

    __slots__ = ("attributes", "labels", "name")

    def __init__(self, name: str, attributes: dict[str, Any]) -> None:
        self.name = name
        # Per status: the histogram's label values, made once (bounded: 17 codes).
        self.labels: dict[tuple[str, str], tuple[str, str, str, str]] = {}
        self.attributes = {_A_SYSTEM: SYSTEM, _A_METHOD: name, **attributes}


class _Core:
    """_Core records calls of one side (server or client), on `kitobs.transport.core`."""

    __slots__ = ("error_codes", "instruments", "methods", "pending", "statuses", "tracer")

    def __init__(
        self,
        metrics: Provider,
        duration: MetricSpec[Histogram],
        tracer: Tracer | None,
        error_codes: frozenset[grpc.StatusCode],
        logger: Logger | None = None,
        *,
        kind: str,
    ) -> None:
        self.instruments = Instruments(
            metrics,
            duration,
            SYSTEM,  # recording failures: reason="grpc_error"
            kind=kind,
            tracer=tracer,
            logger=logger,
            log_keys=("method", "status"),
        )
        self.tracer = tracer
        self.error_codes = error_codes
        # Per code: its label value and whether the call failed (an error span, an error line).
        self.statuses = {code: (_NAMES[code], code in error_codes) for code in grpc.StatusCode}
        self.methods: dict[str, _Method] = {}
        # aio clients read the status in a task; keep a reference until it ran.
        self.pending: set[asyncio.Task[None]] = set()

    @property
    def dropped_spans(self) -> Counter:
        """dropped_spans counts span recording failures, ``reason="grpc_error"``."""
        return self.instruments.dropped_spans

    @property
    def dropped_metrics(self) -> Counter:
        """dropped_metrics counts metric recording failures, ``reason="grpc_error"``."""
        return self.instruments.dropped_metrics

    def method(self, name: str, attributes: dict[str, Any] | None = None) -> _Method:
        state = self.methods.get(name)
        if state is None:
            state = self.methods[name] = _Method(name, attributes or {})
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
        method = call.method
        # One look-up for both: hashing a StatusCode runs Python code (enum's __hash__).
        status, failed = self.statuses.get(code) or self.statuses[_UNKNOWN]
        labels = method.labels.get((status, error_type))
        if labels is None:
            labels = (SYSTEM, method.name, status, error_type)
            if len(method.labels) < _LABELS_MAX:
                method.labels[(status, error_type)] = labels
        if call.span is None:
            self.instruments.finish(call, labels, (method.name, status), failed, error_type)
            return
        attributes = (
            {_A_STATUS: status, _A_ERROR: error_type} if error_type else {_A_STATUS: status}
        )
        self.instruments.finish(
            call,
            labels,
            (method.name, status),
            failed,
            error_type,
            exc if error_type != status else None,  # a status alone is no exception event
            attributes,
            None,
            f"{status}: {details}" if details else status,
        )


def _drop(counter: Counter) -> None:
    Instruments.drop(counter)


class _Call(Call):
    """_Call is the state of one call in flight; it is also the client's done-callback."""

    __slots__ = ("core", "done", "method")

    def __init__(self, core: _Core, method: _Method) -> None:
        # Call.__init__ inlined: one Python frame less per call.
        self.begin = _perf_counter()
        self.span: Any = None
        self.context: Any = None
        self.token: Any = None
        self.core = core
        self.method = method
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
