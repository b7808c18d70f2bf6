"""logging_middleware: one log line per endpoint call, go-kit's logging middleware.

Each call writes ``endpoint``, ``duration`` (seconds, float), ``outcome`` (``success``,
``business_error`` for a `kitobs.endpoint.Failer` response whose ``failed()`` returns an error,
``exception``) and ``error`` when there is one, e.g. ``"ValueError: bad id"``. The line's
``caller`` (if the logger writes one) is the wrapped endpoint's definition, ``file:line``, not
this module. With a kitobs logger, successes and business errors are written at info and
exceptions at error; a plain `kitobs.log.Logger` gets ``log``.

Example::

    >>> from kitobs.log import capture
    >>> logger, records = capture.new()
    >>> def greet(name):
    ...     return "hello " + name
    >>> logging_middleware(logger)(greet)("ada")
    'hello ada'
    >>> records[0]["endpoint"], records[0]["outcome"]
    ('greet', 'success')
"""

from __future__ import annotations

import functools
import inspect
import os
import time
from collections.abc import Callable
from typing import Any

from kitobs.endpoint import (
    _PLAIN,
    EXCEPTION,
    SUCCESS,
    Endpoint,
    Middleware,
    around,
    name_of,
    outcome,
)
from kitobs.log import Logger

__all__ = ["logging_middleware"]


def _definition_site(endpoint: Callable[..., Any]) -> str | None:
    """Return ``file:line`` where *endpoint* is defined, through wrappers and partials."""
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


def _error_text(err: BaseException) -> str:
    # The type says as much as the message (str(KeyError("id")) is just "'id'").
    try:
        text = str(err)
    except Exception:
        text = ""
    kind = type(err).__qualname__
    return f"{kind}: {text}" if text else kind


def _emitters(
    logger: Logger, name: str, endpoint: Callable[..., Any]
) -> tuple[Callable[..., None], Callable[..., None], Callable[[float, str], None]]:
    """Return the (info, error, done) functions that write *name*'s lines, ``endpoint`` bound.

    A kitobs logger gets ``endpoint`` bound with ``with_`` (encoded once, not per line) and the
    caller fixed to *endpoint*'s definition; any other `Logger` gets ``endpoint`` prepended by a
    partial. A line is then ``emit("duration", d, "outcome", kind[, "error", e])``, or, for the
    common line without an error, ``done(d, kind)`` (a prepared line where the logger has them).
    """
    target: Any = logger
    site = _definition_site(endpoint)
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


def logging_middleware(logger: Logger, *, name: str | None = None) -> Middleware:
    """logging_middleware logs one line per call, e.g. ``logging_middleware(logger)(endpoint)``.

    Args:
        logger: where lines go.
        name: the ``endpoint`` value; by default `kitobs.endpoint.name_of` the endpoint.
    """

    def middleware(endpoint: Endpoint) -> Endpoint:
        ok, failed, done = _emitters(logger, name or name_of(endpoint), endpoint)
        clock = time.perf_counter_ns  # whole ns: see kitobs.endpoint.instrument

        def start(request: Any) -> int:
            return clock()

        def finish(begin: int, response: Any, exc: BaseException | None) -> None:
            duration = (clock() - begin) / 1e9
            try:
                if exc is None and (response is None or type(response) in _PLAIN):
                    done(duration, SUCCESS)
                    return
                kind, err = outcome(response, exc)
                if err is None:
                    ok("duration", duration, "outcome", kind)
                else:
                    emit = failed if kind == EXCEPTION else ok
                    emit("duration", duration, "outcome", kind, "error", _error_text(err))
            except Exception:  # logging must not change the endpoint's result
                pass

        return around(endpoint, start, finish)

    return middleware
