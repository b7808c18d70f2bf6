"""The Tracer: starts kitobs spans, and reads and writes trace headers."""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING

from opentelemetry.context.context import Context
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace import Span as OtelSpan
from opentelemetry.util import types

from kitobs import _otel_context as _context
from kitobs.tracing._span import SPAN_TYPES, Span, StartedSpan, UnsampledSpan
from kitobs.tracing.propagation import Baggage, TraceContext
from kitobs.tracing.sampler import AlwaysOff, AlwaysOn, ParentBased

if TYPE_CHECKING:
    from kitobs.tracing._api import Processor, Propagator, Sampler

__all__ = ["Tracer"]

# random's module functions are reseeded in a forked child, so workers never share ids.
_getrandbits = random.getrandbits
_time_ns = time.time_ns
_get = _context.get_current
_SPAN_KEY = _context.SPAN_KEY
_set_item = dict.__setitem__
_INTERNAL = SpanKind.INTERNAL
_OURS = SPAN_TYPES


class Tracer:
    """Tracer starts spans and propagates them, e.g. ``with tracer.span("charge"): ...``.

    Args:
        sampler: decides which new traces are recorded; default ``parentbased_always_on``.
        processor: receives ended sampled spans, e.g. `kitobs.tracing.zipkin` behind the
            batching sender; None drops them (spans still get ids and propagate).
        propagators: header formats for `inject` and `extract`; default W3C trace context and
            baggage.
        public_edge: distrust incoming trace headers: a span whose parent was extracted from a
            request starts a new trace and links the incoming one (go-kit's ``IsPublic``).

    Example::

        >>> tracer = Tracer()
        >>> with tracer.span("parent") as parent:
        ...     child = tracer.start_span("child")
        >>> child.parent_id == parent.span_id and child.trace_id == parent.trace_id
        True
    """

    __slots__ = (
        "_child_sampled",
        "_on_end",
        "_parent_based",
        "_processor",
        "_propagators",
        "_public_edge",
        "_root_sampled",
        "_sample",
    )

    def __init__(
        self,
        *,
        sampler: Sampler | None = None,
        processor: Processor | None = None,
        propagators: Sequence[Propagator] | None = None,
        public_edge: bool = False,
    ) -> None:
        sampler = ParentBased(AlwaysOn()) if sampler is None else sampler
        self._sample = sampler.sample
        # Decided here, so the common samplers cost no call for root spans.
        root = sampler.root if isinstance(sampler, ParentBased) else sampler
        self._root_sampled: bool | None = (
            True if isinstance(root, AlwaysOn) else False if isinstance(root, AlwaysOff) else None
        )
        self._parent_based = isinstance(sampler, ParentBased)
        # A child of a kitobs span: None means ask (the parent's flag, or the sampler).
        self._child_sampled: bool | None = (
            None
            if self._parent_based
            else True
            if isinstance(sampler, AlwaysOn)
            else False
            if isinstance(sampler, AlwaysOff)
            else None
        )
        self._processor = processor
        self._on_end = processor.on_end if processor is not None else None
        self._propagators: tuple[Propagator, ...] = (
            (TraceContext(), Baggage()) if propagators is None else tuple(propagators)
        )
        self._public_edge = public_edge

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = _INTERNAL,
        attributes: Mapping[str, types.AnyValue] | None = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
    ) -> Span:
        """start_span starts a span without making it current, e.g. for a background job.

        The parent is the span in *context* (default: the current context). End it with
        ``span.end()``; ``with tracer.start_span(...)`` ends it too but does not make it current.
        Arguments after *name* are best passed by keyword; their order is that of OpenTelemetry's
        ``Tracer.start_span``.
        """
        return self._start(name, kind, attributes, links, context, start_time, False)

    def span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = _INTERNAL,
        attributes: Mapping[str, types.AnyValue] | None = None,
        links: Sequence[Link] | None = None,
    ) -> Span:
        """span starts a span to use with ``with``, which makes it current and ends it.

        An exception leaving the block marks the span failed (ERROR status, ``exception`` event)
        and propagates. When *context* is given (e.g. from `extract`), the span becomes current
        in that context, so its baggage is current too. Arguments after *name* are best passed
        by keyword; their order is that of OpenTelemetry's ``Tracer.start_as_current_span``.

        Example: ``with tracer.span("GET /users/{id}", kind=SpanKind.SERVER, context=ctx): ...``
        """
        # Not keyword-only: CPython 3.11 fills keyword-only defaults on every call, which cost
        # 6% of an unsampled span.
        # The two common cases, a root span and a child of a kitobs span, are built right here
        # (every call saved is a measurable share of a span); the rest goes through _start.
        base = _get() if context is None else context
        parent = base.get(_SPAN_KEY)
        if links is None:
            if parent is None:
                trace_id = _getrandbits(128) or 1
                sampled = self._root_sampled
                if sampled is None:
                    sampled = self._sample(trace_id, None)
                parent_id = 0
                state = None
            elif type(parent) in _OURS:
                if TYPE_CHECKING:  # the membership test is the narrowing mypy cannot see
                    assert isinstance(parent, Span)
                trace_id = parent.trace_id
                parent_id = parent.span_id
                state = parent.trace_state
                sampled = self._child_sampled
                if sampled is None:
                    sampled = parent.sampled
                    if not self._parent_based:
                        sampled = self._sample(trace_id, sampled)
            else:
                return self._start(name, kind, attributes, links, context, None, True)
            if sampled:
                span: Span = StartedSpan()
                span.sampled = True
                span.start_ns = _time_ns()
                span.end_ns = 0
                # Copied: callers often reuse one attributes dict for many spans.
                span.attributes = dict(attributes) if attributes else None
                span._sink = self._on_end
                # Slots, read by every export: cheaper than class defaults shadowed per span.
                span.events = None
                span.links = None
            else:  # no clock, attributes or sink: see UnsampledSpan's class values
                span = UnsampledSpan()
            span.trace_id = trace_id
            span.span_id = _getrandbits(64) or 1
            span.name = name
            span.kind = kind
            span.parent_id = parent_id
            span._token = None
            span._hex = None
            if state is not None:
                span.trace_state = state
            # The context __enter__ makes current, built here where the parent's is at hand.
            # Context() for an empty base (a new request) is cheaper than copying nothing.
            scope = Context(base) if base else Context()
            _set_item(scope, _SPAN_KEY, span)
            span._scope = scope
            return span
        return self._start(name, kind, attributes, links, context, None, True)

    def _start(
        self,
        name: str,
        kind: SpanKind,
        attributes: Mapping[str, types.AnyValue] | None,
        links: Sequence[Link] | None,
        context: Context | None,
        start_time: int | None,
        scoped: bool,
    ) -> Span:
        base = _get() if context is None else context
        parent = base.get(_SPAN_KEY)
        link_list = list(links) if links else None
        remote = False
        if parent is None:
            trace_id = _getrandbits(128) or 1
            parent_id = 0
            sampled = self._root_sampled
            if sampled is None:
                sampled = self._sample(trace_id, None)
            state = None
        elif type(parent) in _OURS:
            if TYPE_CHECKING:
                assert isinstance(parent, Span)
            trace_id = parent.trace_id
            parent_id = parent.span_id
            state = parent.trace_state
            sampled = (
                parent.sampled if self._parent_based else self._sample(trace_id, parent.sampled)
            )
        elif isinstance(parent, OtelSpan):
            pctx = parent.get_span_context()
            remote = pctx.is_remote
            if not pctx.is_valid or (remote and self._public_edge):
                if pctx.is_valid:  # public edge: a new trace that links the incoming one
                    link_list = [*(link_list or ()), Link(pctx, {"kitobs.link": "public_edge"})]
                trace_id = _getrandbits(128) or 1
                parent_id = 0
                state = None
                remote = False
                sampled = self._sample(trace_id, None)
            else:
                trace_id = pctx.trace_id
                parent_id = pctx.span_id
                state = pctx.trace_state or None
                sampled = self._sample(trace_id, pctx.trace_flags.sampled)
        else:  # something foreign under the span key: treat as no parent
            trace_id = _getrandbits(128) or 1
            parent_id = 0
            state = None
            sampled = self._sample(trace_id, None)
        if sampled:
            span: Span = StartedSpan()
            span.sampled = True
            span.start_ns = start_time or _time_ns()
            span.end_ns = 0
            span.attributes = dict(attributes) if attributes else None
            span._sink = self._on_end
            span.events = None
            span.links = link_list
            span.trace_id = trace_id
            span.span_id = _getrandbits(64) or 1
        else:
            span = UnsampledSpan()
            span.trace_id = trace_id  # known already: the sampler or the parent needed it
            span.span_id = _getrandbits(64) or 1
        span.name = name
        span.kind = kind
        span.parent_id = parent_id
        span._token = None
        span._scope = _context.with_span(span, base) if scoped else None
        span._hex = None
        # Rare fields are set only when present (see Span's class defaults).
        if link_list is not None and not sampled:
            span.links = link_list
        if state:
            span.trace_state = state
        if remote:
            span.remote_parent = True
        return span

    def inject(self, headers: MutableMapping[str, str], context: Context | None = None) -> None:
        """inject writes the current span (or *context*'s) into *headers*, e.g. before a call."""
        ctx = _get() if context is None else context
        for propagator in self._propagators:
            propagator.inject(headers, ctx)

    def extract(self, headers: Mapping[str, str], context: Context | None = None) -> Context:
        """extract reads trace headers into a `Context`, e.g. ``tracer.span(..., context=ctx)``.

        *context* is the base (default: an empty context, as for a new request). Malformed headers
        are ignored. With ``public_edge`` the parent is kept here and replaced by a link when a
        span starts from it.
        """
        ctx = Context() if context is None else context
        for propagator in self._propagators:
            ctx = propagator.extract(headers, ctx)
        return ctx

    def flush(self, timeout: float | None = None) -> bool:
        """flush sends what is queued, waiting at most *timeout* seconds; True when all went."""
        return self._processor.flush(timeout) if self._processor is not None else True

    def shutdown(self) -> None:
        """shutdown sends what is queued and stops the processor, within its shutdown timeout."""
        if self._processor is not None:
            self._processor.shutdown()
