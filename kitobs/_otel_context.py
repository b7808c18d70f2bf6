"""Fast access to the OpenTelemetry context: the current span, made current and restored.

OpenTelemetry keeps the current `opentelemetry.context.Context` in one `contextvars.ContextVar`
behind ``opentelemetry.context.attach``/``detach``. Those calls add a function layer and a
``try``/``except`` each, so when the runtime context is the stock ``ContextVarsRuntimeContext`` we
read and set that variable directly: the result is the same context OpenTelemetry itself sees. With
any other runtime context (a plugin chosen by ``OTEL_PYTHON_CONTEXT``) we go through the public API.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.context.context import Context
from opentelemetry.trace.propagation import _SPAN_KEY

__all__ = [
    "SPAN_KEY",
    "attach",
    "context_var",
    "current_context",
    "current_span",
    "detach",
    "get_current",
    "with_span",
]

#: The key under which OpenTelemetry keeps the current span in a `Context`.
SPAN_KEY: str = _SPAN_KEY

_set_item = dict.__setitem__


def _find_var() -> ContextVar[Context] | None:
    runtime: Any = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    var = getattr(runtime, "_current_context", None)
    if isinstance(var, ContextVar) and type(runtime).__name__ == "ContextVarsRuntimeContext":
        return var
    return None


_VAR = _find_var()


def context_var() -> ContextVar[Context] | None:
    """context_var returns OpenTelemetry's context variable, e.g. for tests; None if not stock."""
    return _VAR


if _VAR is not None:
    _get: Callable[[], Context] = _VAR.get
    attach: Callable[[Context], Token[Context]] = _VAR.set
    detach: Callable[[Token[Context]], None] = _VAR.reset
else:  # with a third-party runtime context (tested in a subprocess: no coverage there)
    _get = otel_context.get_current
    attach = otel_context.attach
    _runtime: Any = getattr(otel_context, "_RUNTIME_CONTEXT", None)

    def detach(token: Token[Context]) -> None:
        """detach restores the context before *token*; it raises, as ``ContextVar.reset`` does.

        OpenTelemetry's own ``detach`` logs a failure as an error instead: a span exited twice,
        or exited without being made current, expects the failure and ignores it.
        """
        if token is None:
            raise TypeError("expected a token, got None")
        if _runtime is None:  # pragma: no cover - an OpenTelemetry without _RUNTIME_CONTEXT
            otel_context.detach(token)
            return
        try:
            _runtime.detach(token)
        except Exception as err:
            raise RuntimeError(f"cannot restore the context: {err}") from err


#: get_current returns the current `Context` (the context variable's ``get`` when stock).
get_current: Callable[[], Context] = _get


def current_context() -> Context:
    """current_context returns the current OpenTelemetry `Context`, e.g. to pass as a parent."""
    return _get()


def current_span() -> object:
    """current_span returns the current span object or None, without OpenTelemetry's fallback."""
    return _get().get(SPAN_KEY)


def with_span(span: object, parent: Context | None = None) -> Context:
    """with_span returns a copy of *parent* (default: the current context) holding *span*."""
    base = _get() if parent is None else parent
    ctx = Context(base) if base else Context()  # cheaper than copying an empty one
    _set_item(ctx, SPAN_KEY, span)
    return ctx
