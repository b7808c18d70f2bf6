"""capture records log lines as dicts, for tests: the real logger, a list instead of a file.

Lines go through the same code as in production (levels, context, caller, redaction, trace
ids), encoded as JSON and parsed back, so a record holds what a JSON log line would: strings,
numbers, booleans, None, and ``str()`` of anything else. A key logged twice keeps its last
value. No timestamp is recorded unless asked for, so records compare exactly.

Example::

    >>> logger, records = new()
    >>> logger.with_("svc", "api").warn("msg", "slow", "ms", 250)
    >>> records
    [{'level': 'warn', 'svc': 'api', 'msg': 'slow', 'ms': 250}]
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from kitobs.log import json as _json
from kitobs.log import redact as _redact
from kitobs.log._core import ContextLogger, TraceContext, build

__all__ = ["Recorder", "new"]


class Recorder:
    """Recorder is a `kitobs.log.Writer` that parses each JSON line into ``records``.

    Example: ``Recorder().records`` is ``[]`` until a logger writes to it.
    """

    __slots__ = ("closed", "errors", "records")

    def __init__(self) -> None:
        self.records: list[dict[str, object]] = []
        self.errors: list[BaseException] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        """write appends the record a line holds."""
        try:
            self.records.append(json.loads(data))
        except ValueError:  # pragma: no cover - the JSON codec writes valid JSON
            self.records.append({"_raw": data.decode("utf-8", "replace")})

    def flush(self) -> None:
        """flush does nothing."""

    def close(self) -> None:
        """close marks the recorder closed; records stay readable."""
        self.closed = True


def new(
    *,
    level: str = "debug",
    level_key: str = "level",
    time_format: str = "none",
    caller: bool = False,
    redact: bool = True,
    redact_keys: Iterable[str] = _redact.DEFAULT_KEYS,
    trace_context: TraceContext | None = None,
) -> tuple[ContextLogger, list[dict[str, object]]]:
    """new returns a capturing logger and its records, e.g. ``logger, records = new()``.

    The logger is a `kitobs.log.ContextLogger` configured like `kitobs.log.new`.
    """
    recorder = Recorder()
    logger = build(
        _json.CODEC,
        recorder,
        level=level,
        level_key=level_key,
        time_format=time_format,
        caller=caller,
        redacted=_redact.matcher(redact_keys) if redact else None,
        marker=_redact.MARKER,
        trace_context=trace_context,
        on_error=recorder.errors.append,
    )
    return logger, recorder.records
