"""stdlib bridges kitobs.log and the standard ``logging`` module, both ways.

- `Handler` is a ``logging.Handler`` that writes records through a kitobs logger: existing
  ``logging`` calls (yours and your libraries') come out as kitobs lines, with ``msg``, the
  record's logger name as ``logger``, its ``extra={...}`` fields as keys of their own, its
  level mapped to kitobs' four, its exception as ``exception``, and its ``file:line`` as
  ``caller`` when the kitobs logger writes callers.
  Install it on the root logger and do not add a timestamp or level in a ``Formatter``: kitobs
  writes its own, so lines do not carry two.
- `Logger` is a kitobs logger that writes into a ``logging.Logger``: for code written against
  `kitobs.log.Logger` in an application whose output is configured with ``logging``. The key/
  values become a logfmt message (redacted as by default), the level picks the record's level,
  and the record names the kitobs call site.

Example::

    >>> import logging
    >>> from kitobs.log import capture
    >>> kit, records = capture.new()
    >>> std = logging.getLogger("doc.stdlib")
    >>> std.addHandler(Handler(kit))
    >>> std.propagate = False
    >>> std.warning("disk %d%% full", 91)
    >>> records
    [{'level': 'warn', 'msg': 'disk 91% full', 'logger': 'doc.stdlib'}]
"""

from __future__ import annotations

import logging
import os
from typing import Protocol

from kitobs.log import logfmt as _logfmt
from kitobs.log import redact as _redact
from kitobs.log._core import Emit

__all__ = ["Handler", "Logger", "LevelLogger"]

_FORMATTER = logging.Formatter()
_CALLER_CACHE_MAX = 1024
# What every LogRecord has (and Formatter.format adds); any other attribute came from extra=.
_PLAIN_RECORD = logging.LogRecord("", logging.INFO, "", 0, "", (), None).__dict__
_STANDARD = frozenset(_PLAIN_RECORD) | {"message", "asctime", "taskName"}
_PLAIN_SIZE = len(_PLAIN_RECORD)


class LevelLogger(Protocol):
    """LevelLogger is what `Handler` writes through, e.g. a `kitobs.log.ContextLogger`."""

    @property
    def debug(self) -> Emit:
        """debug writes a record at debug."""

    @property
    def info(self) -> Emit:
        """info writes a record at info."""

    @property
    def warn(self) -> Emit:
        """warn writes a record at warn."""

    @property
    def error(self) -> Emit:
        """error writes a record at error."""

    @property
    def writes_caller(self) -> bool:
        """writes_caller tells whether records carry a ``caller`` key."""

    def with_caller(self, where: str) -> LevelLogger:
        """with_caller gives a logger whose records say *where* (``file:line``) called."""


def _method(logger: LevelLogger, levelno: int) -> Emit:
    if levelno >= logging.ERROR:
        return logger.error
    if levelno >= logging.WARNING:
        return logger.warn
    if levelno >= logging.INFO:
        return logger.info
    return logger.debug


class Handler(logging.Handler):
    """Handler writes ``logging`` records through a kitobs logger, e.g. ``Handler(logger)``.

    Levels map down: CRITICAL and ERROR to error, WARNING to warn, INFO to info, lower to debug.
    Fields given as ``extra={"order_id": 17}`` follow ``logger`` in their order, as keys of their
    own (redacted like any other key); the standard ``LogRecord`` attributes are not written.
    """

    def __init__(self, logger: LevelLogger, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self._logger = logger
        self._callers: dict[tuple[str, int], LevelLogger] = {}

    def emit(self, record: logging.LogRecord) -> None:
        """emit writes one record; failures go to ``logging``'s ``handleError``."""
        try:
            logger = self._logger
            if logger.writes_caller:
                where = (record.pathname, record.lineno)
                fixed = self._callers.get(where)
                if fixed is None:
                    fixed = logger.with_caller(f"{os.path.basename(where[0])}:{where[1]}")
                    if len(self._callers) < _CALLER_CACHE_MAX:
                        self._callers[where] = fixed
                logger = fixed
            keyvals: list[object] = ["msg", record.getMessage(), "logger", record.name]
            fields = record.__dict__
            if len(fields) > _PLAIN_SIZE:  # a plain record has no extra: skip the scan
                for key, value in fields.items():
                    if key not in _STANDARD:
                        keyvals += (key, value)
            if record.exc_info:
                keyvals += ["exception", _FORMATTER.formatException(record.exc_info)]
            elif record.exc_text:
                keyvals += ["exception", record.exc_text]
            if record.stack_info:
                keyvals += ["stack", record.stack_info]
            _method(logger, record.levelno)(*keyvals)
        except Exception:
            self.handleError(record)


_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING}
_LEVELS.update({"warning": logging.WARNING, "error": logging.ERROR})


class Logger:
    """Logger writes kitobs key/values into a ``logging.Logger``, e.g. ``Logger(getLogger("app"))``.

    `log` writes at INFO unless a ``level`` key names a level; ``debug``/``info``/``warn``/
    ``error`` pick theirs. The message is logfmt (``msg=hi user=7``); the record's ``keyvals``
    attribute holds the key/values as given (redacted) for formatters that want them.
    """

    __slots__ = ("_ctx", "_redacted", "_suffix", "_target")

    def __init__(
        self,
        target: logging.Logger,
        *,
        redact: bool = True,
        redact_keys: tuple[str, ...] = _redact.DEFAULT_KEYS,
    ) -> None:
        self._target = target
        self._redacted = _redact.Rule(redact_keys) if redact else None
        self._ctx: tuple[object, ...] = ()
        self._suffix: tuple[object, ...] = ()

    def _child(self, ctx: tuple[object, ...], suffix: tuple[object, ...]) -> Logger:
        child = Logger.__new__(Logger)
        child._target, child._redacted = self._target, self._redacted
        child._ctx, child._suffix = ctx, suffix
        return child

    def with_(self, *keyvals: object) -> Logger:
        """with_ returns a logger adding *keyvals* to every message, e.g. ``with_("req", 7)``."""
        return self._child(self._ctx + _pad(keyvals), self._suffix)

    def with_prefix(self, *keyvals: object) -> Logger:
        """with_prefix returns a logger with *keyvals* first, e.g. ``with_prefix("svc", "api")``."""
        return self._child(_pad(keyvals) + self._ctx, self._suffix)

    def with_suffix(self, *keyvals: object) -> Logger:
        """with_suffix returns a logger with *keyvals* last, e.g. ``with_suffix("host", "a")``."""
        return self._child(self._ctx, self._suffix + _pad(keyvals))

    def _write(self, levelno: int | None, keyvals: tuple[object, ...]) -> None:
        try:
            every = self._ctx + _pad(keyvals) + self._suffix
            if levelno is None:
                levelno = logging.INFO
                for i in range(0, len(every) - 1, 2):
                    if every[i] == "level" and str(every[i + 1]).lower() in _LEVELS:
                        levelno = _LEVELS[str(every[i + 1]).lower()]
            if not self._target.isEnabledFor(levelno):
                return
            pairs = _redacted_pairs(every, self._redacted)
            message = " ".join(
                _logfmt.sanitize_key(str(k)) + "=" + _logfmt.CODEC.other(v) for k, v in pairs
            )
            # stacklevel 3: past _write and the level method, to the kitobs call site.
            self._target.log(levelno, "%s", message, stacklevel=3, extra={"keyvals": tuple(pairs)})
        except Exception:  # pragma: no cover - logging handles its own handler errors
            pass

    def log(self, *keyvals: object) -> None:
        """log writes at INFO, or at the level a ``level`` key names."""
        self._write(None, keyvals)

    def debug(self, *keyvals: object) -> None:
        """debug writes at DEBUG, e.g. ``debug("msg", "cache miss")``."""
        self._write(logging.DEBUG, keyvals)

    def info(self, *keyvals: object) -> None:
        """info writes at INFO, e.g. ``info("msg", "listening")``."""
        self._write(logging.INFO, keyvals)

    def warn(self, *keyvals: object) -> None:
        """warn writes at WARNING, e.g. ``warn("msg", "retrying")``."""
        self._write(logging.WARNING, keyvals)

    def error(self, *keyvals: object) -> None:
        """error writes at ERROR, e.g. ``error("msg", "failed", "err", exc)``."""
        self._write(logging.ERROR, keyvals)


def _pad(keyvals: tuple[object, ...]) -> tuple[object, ...]:
    return (*keyvals, "(MISSING)") if len(keyvals) % 2 else keyvals


def _redacted_pairs(
    keyvals: tuple[object, ...], redacted: _redact.Rule | None
) -> list[tuple[object, object]]:
    pairs: list[tuple[object, object]] = []
    for i in range(0, len(keyvals), 2):
        key = keyvals[i]
        value = keyvals[i + 1] if i + 1 < len(keyvals) else "(MISSING)"
        if redacted is not None:
            value = redacted.marker if redacted(str(key)) else redacted.scrub(value)
        pairs.append((key, value))
    return pairs
