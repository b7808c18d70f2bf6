"""The one recorder of an endpoint call: its span, its log line and its duration metric.

`kitobs.instrument`, `kitobs.endpoint.instrument.instrumenting` and the three middlewares
(`kitobs.endpoint.tracing`, ``logging``, ``metrics``) all record through `recording`: a
`Recorder` holds what one endpoint records with, bound once, and `call_wrapper` gives the
wrapper its calls go through. That wrapper is generated from one template for the pillars in use
(a span, a line, a metric: any of the seven combinations), so a middleware that records one
thing runs no code for the other two, and there is no second copy of the recording to keep
equal with this one.

What a call records, in this order: the span is started (named after the endpoint) and made
current; the endpoint runs, timed; the span gets ``kitobs.outcome`` (and ERROR with the error on
an exception or a business error); the duration is observed under the outcome; the line is
written, inside the span, so it carries the trace ids; the span ends. Recording never raises
into the caller.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import SpanKind

from kitobs import contract
from kitobs.endpoint import (
    _PLAIN,
    BUSINESS_ERROR,
    EXCEPTION,
    SUCCESS,
    Endpoint,
    _copy_name,
    exception_outcome,
    is_async,
    outcome,
)

if TYPE_CHECKING:
    from kitobs.log import Logger
    from kitobs.metrics import Histogram, Provider
    from kitobs.tracing import Span, Tracer

__all__: list[str] = []  # internal to kitobs.endpoint

#: The span attribute every call's span gets: its outcome.
OUTCOME_ATTRIBUTE = "kitobs.outcome"
_INTERNAL = SpanKind.INTERNAL
# Durations are whole nanoseconds in seconds: exact at the clock's resolution, and a float with
# few digits, which the log line writes in about half the time of a difference of two floats.
_clock = time.perf_counter_ns

#: A wrapper for any signature: ``call(callee, *args, **kwargs)`` calls and records.
AnyCall = Callable[..., Any]


def definition_site(endpoint: Callable[..., Any]) -> str | None:
    """definition_site gives ``file:line`` where *endpoint* is defined, through wrappers."""
    target: Any = endpoint
    try:
        target = inspect.unwrap(target)
        while isinstance(target, functools.partial):
            target = inspect.unwrap(target.func)
        code = getattr(target, "__code__", None)
        if code is None:  # a callable object: its __call__ method
            code = getattr(getattr(type(target), "__call__", None), "__code__", None)  # noqa: B004
        if code is None:
            return None
        return f"{os.path.basename(code.co_filename)}:{code.co_firstlineno}"
    except Exception:  # an exotic callable: no caller rather than a failure to build
        return None


def error_text(err: BaseException) -> str:
    """error_text is the ``error`` value of a line, e.g. ``"KeyError: 'id'"``."""
    # The type says as much as the message (str(KeyError("id")) is just "'id'").
    try:
        text = str(err)
    except Exception:
        text = ""
    kind = type(err).__qualname__
    return f"{kind}: {text}" if text else kind


def emitters(
    logger: Logger, name: str, endpoint: Callable[..., Any]
) -> tuple[Callable[..., None], Callable[..., None], Callable[[float, str], None]]:
    """emitters gives the (info, error, done) functions that write *name*'s lines.

    A kitobs logger gets ``endpoint`` bound with ``with_`` (encoded once, not per line) and the
    caller fixed to *endpoint*'s definition; any other `Logger` gets ``endpoint`` prepended by a
    partial. A line is then ``emit("duration", d, "outcome", kind[, "error", e])``, or, for the
    common line without an error, ``done(d, kind)`` (a prepared line where the logger has them).
    """
    target: Any = logger
    site = definition_site(endpoint)
    with_caller = getattr(target, "with_caller", None)
    if site is not None and callable(with_caller):
        target = with_caller(site)
    with_ = getattr(target, "with_", None)
    if callable(with_):
        bound = with_("endpoint", name)
        if callable(getattr(bound, "log", None)):
            info = getattr(bound, "info", bound.log)
            prepare = getattr(bound, "prepare", None)
            done = prepare("info", "duration", "outcome") if callable(prepare) else _done(info)
            return info, getattr(bound, "error", bound.log), done
    info = functools.partial(getattr(target, "info", target.log), "endpoint", name)
    error = functools.partial(getattr(target, "error", target.log), "endpoint", name)
    return info, error, _done(info)


def _done(info: Callable[..., None]) -> Callable[[float, str], None]:
    def done(duration: float, kind: str) -> None:
        info("duration", duration, "outcome", kind)

    return done


def mark(span: Span, err: BaseException | None) -> None:
    """mark sets a returned call's outcome on its span: success, or a business error.

    A business error (a failed `kitobs.endpoint.Failer`) also sets ERROR status and an event that
    says the error did not escape.
    """
    if err is None:
        span.set_attribute(OUTCOME_ATTRIBUTE, SUCCESS)
    else:
        span.set_attribute(OUTCOME_ATTRIBUTE, BUSINESS_ERROR)
        span.fail(err, escaped=False)


class Recorder:
    """Recorder is everything one endpoint records with, bound once; any pillar may be absent.

    The success path of a call reads these into closure cells (see `call_wrapper`); the rarer
    outcomes come to `raised` and `settle`.
    """

    __slots__ = (
        "business",
        "done",
        "duration",
        "error",
        "exception",
        "kind",
        "name",
        "ok",
        "span",
        "start_span",
        "success",
    )

    def __init__(
        self,
        name: str,
        site_of: Callable[..., Any],
        *,
        logger: Logger | None = None,
        metrics: Provider | None = None,
        tracer: Tracer | None = None,
        kind: SpanKind = _INTERNAL,
    ) -> None:
        self.name = name
        self.kind = kind
        self.duration: Histogram | None = None
        self.success: Callable[[float], None] | None = None
        self.business: Callable[[float], None] | None = None
        self.exception: Callable[[float], None] | None = None
        if metrics is not None:
            # Declared first: a provider that cannot declare the metric fails the build here.
            duration = metrics.declare(contract.ENDPOINT_DURATION)
            self.duration = duration
            self.success = duration.labels(name, SUCCESS).observe
            self.business = duration.labels(name, BUSINESS_ERROR).observe
            self.exception = duration.labels(name, EXCEPTION).observe
        self.ok: Callable[..., None] | None = None
        self.error: Callable[..., None] | None = None
        self.done: Callable[[float, str], None] | None = None
        if logger is not None:
            self.ok, self.error, self.done = emitters(logger, name, site_of)
        self.span: Callable[..., Span] | None = None
        self.start_span: Callable[..., Span] | None = None
        if tracer is not None:
            self.span = tracer.span
            self.start_span = tracer.start_span

    def raised(self, span: Span | None, elapsed: float, exc: BaseException) -> None:
        """raised records a call that raised *exc* (the span's exit records the exception)."""
        # Each step on its own, so that one failing does not skip the others.
        kind = exception_outcome(exc)
        if span is not None:
            with contextlib.suppress(Exception):
                span.set_attribute(OUTCOME_ATTRIBUTE, kind)
        if self.duration is not None:
            with contextlib.suppress(Exception):
                if kind is EXCEPTION:
                    self.exception(elapsed)  # type: ignore[misc]
                else:  # a `kitobs.endpoint.RequestError`: refused on purpose, its own outcome
                    self.duration.labels(self.name, kind).observe(elapsed)
        if self.ok is not None:
            with contextlib.suppress(Exception):
                emit = self.error if kind is EXCEPTION else self.ok
                emit("duration", elapsed, "outcome", kind, "error", error_text(exc))  # type: ignore[misc]

    def ended(self, span: Span, begin: int, exc: BaseException | None) -> None:
        """ended records the end of a generator's iteration, then ends its span."""
        # While the span is current (so the log line carries its ids); then the span is ended,
        # which a `with` block would have done.
        elapsed = (_clock() - begin) / 1e9
        if exc is None:
            with contextlib.suppress(Exception):
                span.set_attribute(OUTCOME_ATTRIBUTE, SUCCESS)
            if self.success is not None:
                with contextlib.suppress(Exception):
                    self.success(elapsed)
            if self.done is not None:
                with contextlib.suppress(Exception):
                    self.done(elapsed, SUCCESS)
        else:
            with contextlib.suppress(Exception):
                span.fail(exc)
            self.raised(span, elapsed, exc)
        with contextlib.suppress(Exception):
            span.end()

    def settle(self, span: Span | None, elapsed: float, response: Any) -> None:
        """settle records a returned *response* that might be a `kitobs.endpoint.Failer`."""
        kind, err = outcome(response, None)  # failed() is called once
        if span is not None:
            with contextlib.suppress(Exception):
                mark(span, err)
        if self.duration is not None:
            with contextlib.suppress(Exception):
                (self.success if err is None else self.business)(elapsed)  # type: ignore[misc]
        if self.ok is not None:
            if err is None:
                self.ok("duration", elapsed, "outcome", SUCCESS)
            else:
                self.ok("duration", elapsed, "outcome", kind, "error", error_text(err))


# The wrapper template. Each call site of a recording step is kept or dropped by the pillars in
# use, and the result compiled once per combination: a call saved is a measurable share of the
# whole cost, so the wrapper does exactly what its recorder needs and nothing else. Recording
# never raises into the caller: the excepts around it only matter for a misbehaving logger or
# backend. Lines are tagged with what they need: [s] a span, [t] a timer (a line or a metric),
# [m] a metric, [l] a line, [S] no span (the other indentation), [T] no timer, [n] nothing
# recorded, [a] async, [y] sync, [v] any signature (the callee first), [e] an endpoint's
# signature (one request, the endpoint bound).
_TEMPLATE = """
def build(rec, clock, plain, OUTCOME, SUCCESS, callee):
    span, name, kind, success, done = rec.span, rec.name, rec.kind, rec.success, rec.done
    raised, settle = rec.raised, rec.settle
[yv]    def call(callee, /, *args, **kwargs):
[av]    async def call(callee, /, *args, **kwargs):
[ye]    def call(request):
[ae]    async def call(request):
[s]        with SPAN as current:
[S]            current = None
[t]            begin = clock()
            try:
[yv]                response = callee(*args, **kwargs)
[av]                response = await callee(*args, **kwargs)
[ye]                response = callee(request)
[ae]                response = await callee(request)
            except BaseException as exc:
[t]                raised(current, (clock() - begin) / 1e9, exc)
[T]                raised(current, 0.0, exc)
                raise
[t]            elapsed = (clock() - begin) / 1e9
[T]            elapsed = 0.0
            try:
                if response is None or type(response) in plain:
[s]                    current.set_attribute(OUTCOME, SUCCESS)
[m]                    success(elapsed)
[l]                    done(elapsed, SUCCESS)
[n]                    pass
                else:
                    settle(current, elapsed, response)
            except Exception:
                pass
        return response
    return call
"""

_BUILT: dict[tuple[bool, bool, bool, bool, bool, bool], Callable[..., AnyCall]] = {}


def _compile(
    asynchronous: bool, spans: bool, internal: bool, metric: bool, line: bool, bound: bool
) -> Any:
    have = {
        "e": bound,
        "v": not bound,
        "a": asynchronous,
        "y": not asynchronous,
        "s": spans,
        "S": not spans,
        "t": metric or line,
        "T": not (metric or line),
        "m": metric,
        "l": line,
        "n": not (spans or metric or line),
    }
    out = []
    for raw in _TEMPLATE.splitlines():
        if raw.startswith("["):
            tags, _, rest = raw[1:].partition("]")
            if not all(have[t] for t in tags):
                continue
            raw = rest
        out.append(raw)
    source = "\n".join(out)
    if spans:
        source = source.replace("SPAN", "span(name)" if internal else "span(name, kind=kind)")
    else:
        # No `with` block: the body moves one level out.
        source = "\n".join(
            line[4:] if line.startswith(" " * 12) else line for line in source.splitlines()
        )
    namespace: dict[str, Any] = {}
    # One file name for every variant: frames and tracebacks say where the wrapper comes from.
    exec(compile(source, "<kitobs.endpoint._record>", "exec"), namespace)
    return namespace["build"]


def call_wrapper(rec: Recorder, asynchronous: bool, endpoint: Endpoint | None = None) -> AnyCall:
    """call_wrapper gives the wrapper of a plain or a coroutine function recorded by *rec*.

    Without *endpoint* it is ``call(callee, *args, **kwargs)`` (a decorated function of any
    signature); with one, ``call(request)`` around that endpoint, which saves packing the
    arguments on every call.
    """
    key = (
        asynchronous,
        rec.span is not None,
        rec.kind is _INTERNAL,
        rec.duration is not None,
        rec.done is not None,
        endpoint is not None,
    )
    build = _BUILT.get(key)
    if build is None:
        build = _BUILT[key] = _compile(*key)
    wrapper: AnyCall = build(rec, _clock, _PLAIN, OUTCOME_ATTRIBUTE, SUCCESS, endpoint)
    return wrapper


def recording(
    name: str | None,
    *,
    logger: Logger | None = None,
    metrics: Provider | None = None,
    tracer: Tracer | None = None,
    kind: SpanKind = _INTERNAL,
) -> Callable[[Endpoint], Endpoint]:
    """recording is the middleware that records each call through one `Recorder`.

    *name* names every endpoint it wraps; None gives each endpoint's own name. The metric is
    declared when an endpoint is wrapped, so a provider that cannot declare it raises then.
    """
    from kitobs.endpoint import name_of

    def middleware(endpoint: Endpoint) -> Endpoint:
        rec = Recorder(
            name or name_of(endpoint),
            endpoint,
            logger=logger,
            metrics=metrics,
            tracer=tracer,
            kind=kind,
        )
        # A partial is a C call: the endpoint is reached through the one Python frame of `call`.
        asynchronous = is_async(endpoint)
        wrapper = call_wrapper(rec, asynchronous, endpoint)
        _copy_name(wrapper, endpoint)
        if asynchronous:
            wrapper._kitobs_async = True  # type: ignore[attr-defined]
        return wrapper

    return middleware
