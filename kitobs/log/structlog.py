"""structlog bridge: kitobs is structlog's final output.

structlog code keeps its API (bound loggers, processors, ``contextvars``) while lines are written
by kitobs: same encoding, writer, redaction, trace ids and level filter as the rest of the
program. This is the direction users want: one output configured once, and existing
``structlog.get_logger().info("event", k=v)`` calls unchanged. (The other direction, structlog
rendering kitobs lines, would put structlog's slower pipeline under every kitobs call.)

Use `render` as the last processor and `LoggerFactory` as the logger factory. Leave out
``TimeStamper`` and ``add_log_level``: kitobs writes ``ts`` and ``level`` itself (a ``level``
or ``timestamp`` key from structlog is dropped, so lines do not carry two). The event becomes
``msg``; ``exc_info`` becomes ``exception`` (a formatted traceback). The kitobs logger's caller
names the structlog call site.

Example::

    >>> import structlog as _structlog
    >>> from kitobs.log import capture
    >>> kit, records = capture.new()
    >>> log = _structlog.wrap_logger(Sink(kit), processors=[render])
    >>> log.bind(user=7).warning("slow", ms=250)
    >>> records
    [{'level': 'warn', 'msg': 'slow', 'user': 7, 'ms': 250}]
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import MutableMapping
from types import FrameType
from typing import Any

from kitobs.log._core import Emit
from kitobs.log.stdlib import LevelLogger

__all__ = ["LoggerFactory", "Sink", "render"]

_DROPPED = frozenset({"event", "level", "timestamp", "exc_info"})
_SKIP = ("structlog.", "kitobs.log.structlog")
_CALLER_CACHE_MAX = 1024


def render(
    logger: object, method_name: str, event_dict: MutableMapping[str, Any]
) -> tuple[tuple[object, ...], dict[str, Any]]:
    """render turns structlog's event dict into kitobs key/values, e.g. the last processor.

    ``event`` comes first as ``msg``; the other keys keep their order.
    """
    keyvals: list[object] = []
    if "event" in event_dict:
        keyvals += ["msg", event_dict["event"]]
    for key, value in event_dict.items():
        if key not in _DROPPED:
            keyvals += [key, value]
    exc_info = event_dict.get("exc_info")
    if exc_info:
        if exc_info is True:
            exc_info = sys.exc_info()
        elif isinstance(exc_info, BaseException):
            exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
        if isinstance(exc_info, tuple) and exc_info[0] is not None:
            keyvals += ["exception", "".join(traceback.format_exception(*exc_info)).rstrip()]
    return tuple(keyvals), {}


def _call_site() -> str:
    frame: FrameType | None = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__", "").startswith(_SKIP):
        frame = frame.f_back
    if frame is None:  # pragma: no cover - there is always a caller outside structlog
        return "?"
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"


class Sink:
    """Sink is the logger structlog wraps; its methods write through a kitobs logger.

    For example ``structlog.wrap_logger(Sink(logger), processors=[render])``. ``critical``,
    ``exception`` and ``fatal`` write at error, ``warning`` at warn, ``msg`` and ``log`` at info.
    """

    __slots__ = ("_callers", "_logger")

    def __init__(self, logger: LevelLogger) -> None:
        self._logger = logger
        self._callers: dict[str, LevelLogger] = {}

    def _at(self, level: str) -> Emit:
        logger = self._logger
        if logger.writes_caller:  # name the structlog call site, not structlog's internals
            site = _call_site()
            fixed = self._callers.get(site)
            if fixed is None:
                fixed = logger.with_caller(site)
                if len(self._callers) < _CALLER_CACHE_MAX:
                    self._callers[site] = fixed
            logger = fixed
        emit: Emit = getattr(logger, level)
        return emit

    def debug(self, *keyvals: object) -> None:
        """debug writes at debug."""
        self._at("debug")(*keyvals)

    def info(self, *keyvals: object) -> None:
        """info writes at info."""
        self._at("info")(*keyvals)

    def warning(self, *keyvals: object) -> None:
        """warning writes at warn."""
        self._at("warn")(*keyvals)

    def error(self, *keyvals: object) -> None:
        """error writes at error."""
        self._at("error")(*keyvals)

    msg = log = info
    warn = warning
    critical = exception = fatal = error


class LoggerFactory:
    """LoggerFactory gives structlog a `Sink` over *logger*, e.g. for ``structlog.configure``.

    ``structlog.configure(processors=[..., render], logger_factory=LoggerFactory(logger))``.
    """

    __slots__ = ("_sink",)

    def __init__(self, logger: LevelLogger) -> None:
        self._sink = Sink(logger)

    def __call__(self, *args: object) -> Sink:
        """__call__ returns the sink, whatever name structlog asks for."""
        return self._sink
