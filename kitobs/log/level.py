"""Levels: the four level values, their order, and parsing them from configuration.

Example::

    >>> parse_level("WARN")
    'warn'
    >>> enabled("info", "debug")
    False
"""

from __future__ import annotations

from kitobs.config import LogSettings, key_name
from kitobs.errors import ConfigError

__all__ = ["DEBUG", "INFO", "WARN", "ERROR", "LEVELS", "enabled", "parse_level"]

#: DEBUG is the lowest level, e.g. ``logger.debug("msg", "cache miss")``.
DEBUG = "debug"
#: INFO is the default level, e.g. ``logger.info("msg", "listening")``.
INFO = "info"
#: WARN marks something odd but handled, e.g. a retry.
WARN = "warn"
#: ERROR marks a failure, e.g. a request that could not be served.
ERROR = "error"
#: LEVELS lists the levels from lowest to highest, e.g. for a ``choices`` list.
LEVELS: tuple[str, ...] = (DEBUG, INFO, WARN, ERROR)

_RANK = {name: rank for rank, name in enumerate(LEVELS)}
# Names other libraries use for the same levels; accepted when parsing only.
_ALIASES = {"warning": WARN, "err": ERROR, "critical": ERROR, "fatal": ERROR}


def parse_level(text: str) -> str:
    """parse_level turns a level name in any case into a level value, e.g. ``"WARN"`` -> ``"warn"``.

    ``warning``, ``err``, ``critical`` and ``fatal`` are accepted as aliases.

    Raises:
        ConfigError: the name is not a level.
    """
    if isinstance(text, str):
        name = text.strip().lower()
        if name in _RANK:
            return name
        if name in _ALIASES:
            return _ALIASES[name]
    raise ConfigError(
        "is not a log level", key=key_name(LogSettings, "level"), value=text, allowed=LEVELS
    )


def enabled(minimum: str, level: str) -> bool:
    """enabled says whether *level* passes a filter at *minimum*, e.g. ``("info", "warn")``."""
    return _RANK[level] >= _RANK[minimum]
