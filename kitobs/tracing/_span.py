"""kitobs spans: OpenTelemetry API spans without the SDK behind them.

A `Span` is an `opentelemetry.trace.Span`, so it lives in OpenTelemetry's context and other
OpenTelemetry code sees it as the current span and parents its own spans on it. It keeps its state
in plain slots and hands itself, once ended and only if sampled, to the tracer's processor; the
exporter reads those slots on its background thread.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Mapping
from contextvars import Token
from types import TracebackType
from typing import TYPE_CHECKING, Any

from opentelemetry.context.context import Context
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.trace import Span as OtelSpan
from opentelemetry.trace.status import Status, StatusCode
from opentelemetry.util import types

from kitobs import _otel_context as _context

__all__ = [
    "Span",
    "StartedSpan",
    "UnsampledSpan",
    "SPAN_TYPES",
    "current_ids",
    "current_sampled_ids",
    "span_ids",
]

_time_ns = time.time_ns
_get = _context.get_current
_attach = _context.attach
_detach = _context.detach
_SPAN_KEY = _context.SPAN_KEY
_set_item = dict.__setitem__
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSAMPLED = TraceFlags(TraceFlags.DEFAULT)
_EMPTY_STATE = TraceState()
_UNSET = StatusCode.UNSET
_OK = StatusCode.OK
_ERROR = StatusCode.ERROR

#: An event: name, time in ns since the epoch, attributes (or None).
Event = tuple[str, int, Mapping[str, Any] | None]


class Span(OtelSpan):
    """Span is one timed operation of a trace, e.g. a request served; see `kitobs.tracing.Tracer`.

    It implements `opentelemetry.trace.Span`. An unsampled span keeps its ids (and can be current
    and propagated) but records nothing: attributes, events and status calls are ignored, and it
    reads no clock (``start_ns`` and ``end_ns`` stay 0). Ending twice is ignored. Nothing here
    raises into the caller.

    Read by exporters: ``name``, ``kind``, ``trace_id``, ``span_id``, ``parent_id`` (0 for a root),
    ``sampled``, ``start_ns``, ``end_ns``, ``attributes``, ``events``, ``links``, ``status_code``
    and ``status_description``.

    The tracer builds its spans as `StartedSpan` and `UnsampledSpan`, subclasses that skip
    ``__init__``; construct a `Span` directly only for tests and examples.
    """

    # The fields every span sets live in slots. OpenTelemetry's Span base class has no __slots__,
    # so every instance has a __dict__ anyway: the rarely set fields below are class defaults that
    # a span overrides (in that dict) only when it uses them, which keeps creation short. A slot
    # store costs a few ns, a first store into that dict tens of ns: so _hex and _scope are slots.
    # events and links are slots too: every export reads both, and reading a class default
    # through an instance that has a __dict__ costs more than the two stores the tracer makes.
    __slots__ = (
        "_hex",
        "_scope",
        "_sink",
        "_token",
        "attributes",
        "end_ns",
        "events",
        "kind",
        "links",
        "name",
        "parent_id",
        "sampled",
        "span_id",
        "start_ns",
        "trace_id",
    )

    events: list[Event] | None
    links: list[Link] | None
    status_code: StatusCode = _UNSET
    status_description: str | None = None
    trace_state: TraceState | None = None
    remote_parent: bool = False
    _ctx: SpanContext | None = None

    def __init__(
        self,
        name: str,
        trace_id: int,
        span_id: int,
        parent_id: int = 0,
        sampled: bool = True,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, types.AnyValue] | None = None,
        sink: Callable[[Span], None] | None = None,
        start_ns: int = 0,
        scoped: bool = False,
    ) -> None:
        self.name = name
        self.kind = kind
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        self.sampled = sampled
        self.start_ns = start_ns or _time_ns()
        self.end_ns = 0
        # Copied: callers often reuse one attributes dict for many spans.
        self.attributes: dict[str, types.AnyValue] | None = (
            dict(attributes) if attributes and sampled else None
        )
        self._sink: Callable[[Span], None] | None = sink if sampled else None
        self._token: Token[Context] | None = None
        # The context __enter__ makes current (the current one, plus this span); None when the
        # span is not to be made current, or already was.
        self._scope: Context | None = _context.with_span(self) if scoped else None
        self._hex: tuple[str, str] | None = None
        self.events = None
        self.links = None

    # -- identity ------------------------------------------------------------------------------

    def hex_ids(self) -> tuple[str, str]:
        """hex_ids gives (trace_id, span_id) as lowercase hex, e.g. ``("4bf9…", "00f0…")``."""
        ids = self._hex
        if ids is None:
            # to_bytes().hex() is about twice as fast as f"{n:032x}" (it runs once per span).
            ids = self._hex = (
                self.trace_id.to_bytes(16, "big").hex(),
                self.span_id.to_bytes(8, "big").hex(),
            )
        return ids

    def get_span_context(self) -> SpanContext:
        """get_span_context returns the OpenTelemetry `SpanContext`, built on first use."""
        ctx = self._ctx
        if ctx is None:
            ctx = self._ctx = SpanContext(
                self.trace_id,
                self.span_id,
                False,
                _SAMPLED if self.sampled else _UNSAMPLED,
                self.trace_state or _EMPTY_STATE,
            )
        return ctx

    def is_recording(self) -> bool:
        """is_recording is True while a sampled span has not ended."""
        return self.sampled and not self.end_ns

    # -- recording -----------------------------------------------------------------------------

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        """set_attribute records one attribute, e.g. ``("http.route", "/users/{id}")``."""
        if self.sampled and not self.end_ns:
            attrs = self.attributes
            if attrs is None:
                self.attributes = {key: value}
            else:
                attrs[key] = value

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        """set_attributes records several attributes, e.g. ``{"db.system": "postgresql"}``."""
        if self.sampled and not self.end_ns:
            attrs = self.attributes
            if attrs is None:
                self.attributes = dict(attributes)
            else:
                attrs.update(attributes)

    def add_event(
        self,
        name: str,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
    ) -> None:
        """add_event records a timestamped event, e.g. ``add_event("cache miss", {"key": k})``."""
        if self.sampled and not self.end_ns:
            event = (name, timestamp or _time_ns(), dict(attributes) if attributes else None)
            if self.events is None:
                self.events = [event]
            else:
                self.events.append(event)

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        """add_link links another span, e.g. the trace of a message being consumed."""
        if self.sampled and not self.end_ns and context.is_valid:
            link = Link(context, attributes)
            if self.links is None:
                self.links = [link]
            else:
                self.links.append(link)

    def update_name(self, name: str) -> None:
        """update_name renames the span, e.g. once the route template is known."""
        if not self.end_ns:
            self.name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """set_status sets OK or ERROR, e.g. ``set_status(StatusCode.ERROR, "timeout")``.

        As in OpenTelemetry, OK is final and a description is kept only with ERROR.
        """
        if not self.sampled or self.end_ns or self.status_code is _OK:
            return
        if isinstance(status, Status):
            code, description = status.status_code, status.description
        else:
            code = status
        if code is _UNSET:
            return
        self.status_code = code
        self.status_description = description if code is _ERROR and description else None

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        """record_exception adds an ``exception`` event with type, message and stack trace."""
        if not self.sampled or self.end_ns:
            return
        try:
            stack = "".join(
                traceback.format_exception(type(exception), exception, exception.__traceback__)
            )
        except Exception:  # a broken __str__ must not break the caller
            stack = ""
        attrs: dict[str, types.AnyValue] = {
            "exception.type": _qualname(type(exception)),
            "exception.message": _safe_str(exception),
            "exception.stacktrace": stack,
            "exception.escaped": str(escaped),
        }
        if attributes:
            attrs.update(attributes)
        self.add_event("exception", attrs, timestamp)

    def fail(self, error: BaseException, *, escaped: bool = True) -> None:
        """fail marks the span as failed by *error*: ERROR status and an ``exception`` event."""
        if self.sampled and not self.end_ns:
            self.record_exception(error, escaped=escaped)
            self.set_status(_ERROR, f"{_qualname(type(error))}: {_safe_str(error)}")

    def end(self, end_time: int | None = None) -> None:
        """end finishes the span and hands it, if sampled, to the processor; then a no-op."""
        if self.end_ns:
            return
        self.end_ns = end_time or _time_ns()
        sink = self._sink
        if sink is not None:
            try:  # noqa: SIM105 - a processor must not raise; if one does, not into the caller
                sink(self)
            except Exception:
                pass

    # -- scope ---------------------------------------------------------------------------------

    def __enter__(self) -> Span:
        """Make the span current when it came from `Tracer.span`; always return it."""
        ctx = self._scope
        if ctx is not None:
            # Built by the tracer, which had the parent context at hand. Cleared here: it holds
            # the span, and a second __enter__ must not make it current again.
            self._scope = None
            self._token = _attach(ctx)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        """Restore the previous context and end the span (failed if an exception escapes)."""
        token = self._token
        if token is not None:
            self._token = None
            try:  # noqa: SIM105 - cheaper than contextlib.suppress on the hot path
                _detach(token)
            except (ValueError, RuntimeError):  # exited in another context: nothing to restore
                pass
        if exc_val is not None and self.sampled:
            self.fail(exc_val)
        if not self.end_ns:  # end(), inlined: this is every span's hot path
            self.end_ns = _time_ns()
            sink = self._sink
            if sink is not None:
                try:  # noqa: SIM105 - see end()
                    sink(self)
                except Exception:
                    pass

    def __repr__(self) -> str:
        trace_id, span_id = self.hex_ids()
        return f"<kitobs Span {self.name!r} trace_id={trace_id} span_id={span_id}>"


class StartedSpan(Span):
    """StartedSpan is a sampled `Span` as `kitobs.tracing.Tracer` builds it, e.g. by ``span()``.

    It behaves exactly like `Span`; only its construction differs: the tracer fills every slot
    itself, which skips the cost of calling ``__init__`` with ten arguments.
    """

    __slots__ = ()
    __init__ = object.__init__  # the tracer sets every slot


class UnsampledSpan(Span):
    """UnsampledSpan is a `Span` that is not recorded, e.g. under the ``always_off`` sampler.

    It is current, propagates with the sampled flag off, and gives log lines its ids, like any
    span; it records nothing, reads no clock and never reaches the processor.
    """

    __slots__ = ()
    __init__ = object.__init__  # the tracer sets every slot

    # Class values instead of slot stores: an unsampled span never changes them.
    sampled = False
    start_ns = 0
    end_ns = 0
    attributes = None
    events = None
    links = None
    _sink = None

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        """set_attribute does nothing: the span is not recorded."""

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        """set_attributes does nothing: the span is not recorded."""

    def add_event(
        self,
        name: str,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
    ) -> None:
        """add_event does nothing: the span is not recorded."""

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """set_status does nothing: the span is not recorded."""

    def end(self, end_time: int | None = None) -> None:
        """end does nothing: an unsampled span is never exported and reads no clock."""

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        """Restore the previous context; there is nothing to record or export."""
        try:  # noqa: SIM105 - cheaper than contextlib.suppress on the hot path
            _detach(self._token)  # type: ignore[arg-type]  # None raises TypeError, caught
        except (ValueError, RuntimeError, TypeError):
            # Exited in another context, exited twice (a used token) or never made current
            # (None): there is nothing to restore.
            pass


#: The span classes kitobs builds; ``type(x) in SPAN_TYPES`` is the fast "is it ours" test
#: (``isinstance`` goes through OpenTelemetry's ABCMeta for subclasses).
SPAN_TYPES: frozenset[type[Span]] = frozenset((Span, StartedSpan, UnsampledSpan))


def _qualname(cls: type[BaseException]) -> str:
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _safe_str(value: object) -> str:
    try:
        return str(value)
    except Exception:  # a broken __str__ must not break the caller
        return f"<unprintable {type(value).__name__}>"


def span_ids(context: Context | None = None) -> tuple[int, int, bool, TraceState | None] | None:
    """span_ids gives (trace_id, span_id, sampled, trace_state) of the span in *context*.

    *context* defaults to the current one; None when it holds no valid span. Used by propagators.
    """
    span = (_get() if context is None else context).get(_SPAN_KEY)
    if span is None:
        return None
    if type(span) in SPAN_TYPES:
        if TYPE_CHECKING:  # the membership test is the narrowing mypy cannot see
            assert isinstance(span, Span)
        return span.trace_id, span.span_id, span.sampled, span.trace_state
    if not isinstance(span, OtelSpan):
        return None
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    return ctx.trace_id, ctx.span_id, ctx.trace_flags.sampled, ctx.trace_state or None


def current_ids() -> tuple[str, str] | None:
    """current_ids gives (trace_id, span_id) of the current span, e.g. ``("4bf9…", "00f0…")``.

    Ids are lowercase hex, 32 and 16 characters; the span may be unsampled; None outside any span.
    It reads OpenTelemetry's context, so spans of other OpenTelemetry tracers count too. This is the
    ``trace_context`` hook of `kitobs.log` loggers.
    """
    span = _get().get(_SPAN_KEY)
    if span is None:
        return None
    if type(span) in SPAN_TYPES:
        if TYPE_CHECKING:
            assert isinstance(span, Span)
        ids = span._hex  # hex_ids(), inlined: this runs for every log line inside a span
        if ids is None:
            ids = span._hex = (
                span.trace_id.to_bytes(16, "big").hex(),
                span.span_id.to_bytes(8, "big").hex(),
            )
        return ids
    return _foreign_ids(span, sampled_only=False)


# Loggers write these ids without checking them (see `kitobs.log.TraceContext`).
current_ids.hex_ids = True  # type: ignore[attr-defined]


def current_sampled_ids() -> tuple[str, str] | None:
    """current_sampled_ids is `current_ids` for sampled spans only, e.g. for metric exemplars.

    None inside an unsampled span, so an exemplar only ever points at a trace that was exported.
    """
    span = _get().get(_SPAN_KEY)
    if span is None:
        return None
    if type(span) in SPAN_TYPES:
        if TYPE_CHECKING:
            assert isinstance(span, Span)
        return span.hex_ids() if span.sampled else None
    return _foreign_ids(span, sampled_only=True)


def _foreign_ids(span: object, *, sampled_only: bool) -> tuple[str, str] | None:
    if not isinstance(span, OtelSpan):
        return None
    ctx = span.get_span_context()
    if not ctx.is_valid or (sampled_only and not ctx.trace_flags.sampled):
        return None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"
