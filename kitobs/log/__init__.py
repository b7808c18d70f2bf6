"""kitobs.log: structured logging on go-kit's model, with the features its users asked for.

A `Logger` has one method, ``log(*keyvals)``, taking alternating keys and values::

    logger.log("msg", "hello", "user", 7)

`new` and `from_settings` build a `ContextLogger`, which adds bound context (``with_``,
``with_prefix``, ``with_suffix``), level methods (``debug``, ``info``, ``warn``, ``error``; a
filtered-out level is a no-op function chosen when the logger is built), a UTC timestamp, the
caller's ``file:line``, the active trace's ids, redaction of credential-like keys, and output to
stderr, stdout or a file, synchronous (default), buffered or non-blocking.

Encodings (one module each): `kitobs.log.logfmt` (default) and `kitobs.log.json`. Bridges:
`kitobs.log.stdlib` (the ``logging`` module, both ways) and `kitobs.log.structlog`. Tests can
capture lines as dicts with `kitobs.log.capture`.

Example::

    >>> import io
    >>> out = io.StringIO()
    >>> logger = new(out, time_format="none")
    >>> logger.with_("svc", "api").info("msg", "hello world", "password", "hunter2")
    >>> out.getvalue()
    'level=info svc=api msg="hello world" password=[REDACTED]\\n'
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import IO, Protocol

from kitobs.config import LogSettings, key_name
from kitobs.errors import ConfigError
from kitobs.log import json as _json
from kitobs.log import logfmt as _logfmt
from kitobs.log import redact as _redact
from kitobs.log._core import (
    MISSING,
    ContextLogger,
    ErrorHandler,
    TraceContext,
    Writer,
    build,
    nop_emit,
)
from kitobs.log.writer import Counter, open_output, report_once

__all__ = [
    "Logger",
    "ContextLogger",
    "NopLogger",
    "Writer",
    "TraceContext",
    "ErrorHandler",
    "MISSING",
    "new",
    "from_settings",
    "nop",
]


class Logger(Protocol):
    """Logger writes one record of alternating keys and values, e.g. ``log("msg", "hi")``.

    It never raises: encoding and output errors go to an error handler.
    """

    def log(self, *keyvals: object) -> None:
        """log writes one record of alternating keys and values, e.g. ``log("msg", "hi")``."""


class NopLogger:
    """NopLogger discards everything, e.g. a default for an optional ``logger=`` argument."""

    __slots__ = ()

    log = debug = info = warn = error = staticmethod(nop_emit)

    def with_(self, *keyvals: object) -> NopLogger:
        """with_ returns the same logger, e.g. ``nop().with_("a", 1)``."""
        return self

    with_prefix = with_suffix = with_

    def with_caller(self, where: str) -> NopLogger:
        """with_caller returns the same logger."""
        return self

    @property
    def writes_caller(self) -> bool:
        """writes_caller is False: nothing is written."""
        return False

    def enabled(self, level: str) -> bool:
        """enabled is always False: nothing is written."""
        return False

    def flush(self) -> None:
        """flush does nothing."""

    def close(self) -> None:
        """close does nothing."""


def nop() -> NopLogger:
    """nop returns a logger that does nothing, e.g. ``service(logger=nop())``."""
    return NopLogger()


_CODECS = {"logfmt": _logfmt.CODEC, "json": _json.CODEC}


def new(
    output: str | IO[str] | IO[bytes] | Writer = "stderr",
    *,
    format: str = "logfmt",
    level: str = "info",
    level_key: str = "level",
    time_key: str = "ts",
    time_format: str = "rfc3339_micro",
    caller: bool = False,
    redact: bool = True,
    redact_keys: Iterable[str] = _redact.DEFAULT_KEYS,
    redact_extra_keys: Iterable[str] = (),
    redact_allow_keys: Iterable[str] = (),
    buffered: bool = False,
    nonblocking: bool = False,
    queue_size: int = 10000,
    trace_context: TraceContext | None = None,
    dropped: Counter | None = None,
    on_error: ErrorHandler | None = None,
) -> ContextLogger:
    """new builds a logger, e.g. ``new("stderr", format="json", level="debug")``.

    Args:
        output: ``"stderr"``, ``"stdout"`` (in any case: ``"STDERR"`` is the stream too), a file
            path (appended to; ``"./stderr"`` for a file of that name), a Python stream, or a
            `Writer`.
        format: ``"logfmt"`` or ``"json"``.
        level: the lowest level written (``"WARN"`` works too).
        level_key: the level's key, e.g. ``"severity"`` for Google Cloud.
        time_key: the timestamp's key.
        time_format: ``rfc3339_micro``, ``rfc3339``, ``unix``, ``unix_ms`` or ``none``; UTC.
        caller: add ``caller=file:line`` naming the call site.
        redact: replace values of credential-like keys with ``[REDACTED]``, also inside dict
            and list values (the rule of `kitobs.redact`).
        redact_keys: the names to redact (replaces the default list).
        redact_extra_keys: names to redact in addition.
        redact_allow_keys: keys never redacted, e.g. ``next_page_token``.
        buffered: write in blocks (flushed by `ContextLogger.flush`, `ContextLogger.close` and
            at exit) instead of one write per line.
        nonblocking: write from a thread through a queue of *queue_size* lines; a full queue
            drops lines, counted in the writer's ``dropped`` and in *dropped*.
        trace_context: returns the active ``(trace_id, span_id)`` or None; its ids join each
            line.
        dropped: a counter told of each line the non-blocking writer drops.
        on_error: receives write and encoding errors; default: the first is printed to stderr.

    Raises:
        ConfigError: an unknown format, level or time format, an empty key name, a file that
            cannot be opened.
    """
    codec = _CODECS.get(format)
    if codec is None:
        raise ConfigError(
            "is not a log format",
            key=key_name(LogSettings, "format"),
            value=format,
            allowed=_CODECS,
        )
    redacted = (
        _redact.Rule(redact_keys, extra=redact_extra_keys, allow=redact_allow_keys)
        if redact
        else None
    )
    handler = on_error or report_once()
    # Check every name before opening the output, so bad settings do not leave a file behind.
    build(
        codec,
        _DISCARD,
        level=level,
        level_key=level_key,
        time_key=time_key,
        time_format=time_format,
        on_error=handler,
    )
    sink = open_output(
        output,
        buffered=buffered,
        nonblocking=nonblocking,
        queue_size=queue_size,
        dropped=dropped,
        on_error=handler,
    )
    return build(
        codec,
        sink,
        level=level,
        level_key=level_key,
        time_key=time_key,
        time_format=time_format,
        caller=caller,
        redacted=redacted,
        marker=_redact.MARKER,
        trace_context=trace_context,
        on_error=handler,
    )


class _Discard:
    __slots__ = ()

    def write(self, data: bytes) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


_DISCARD = _Discard()


def from_settings(
    settings: LogSettings,
    *,
    trace_context: TraceContext | None = None,
    dropped: Counter | None = None,
    on_error: ErrorHandler | None = None,
) -> ContextLogger:
    """from_settings builds the logger *settings* describe, e.g. ``from_settings(cfg.log)``.

    Raises:
        ConfigError: as for `new`.
    """
    return new(
        settings.output,
        format=settings.format,
        level=settings.level,
        level_key=settings.level_key,
        time_key=settings.time_key,
        time_format=settings.time_format,
        caller=settings.caller,
        redact=settings.redact,
        redact_keys=settings.redact_keys,
        redact_extra_keys=settings.redact_extra_keys,
        redact_allow_keys=settings.redact_allow_keys,
        buffered=settings.buffered,
        nonblocking=settings.nonblocking,
        queue_size=settings.queue_size,
        trace_context=trace_context,
        dropped=dropped,
        on_error=on_error,
    )
