"""kitobs.transport.core: what every transport does per call, in one place.

A transport (HTTP, gRPC, and message transports such as NATS or AMQP) records each call the same
way: a span started from the context the call carries (propagation through `kitobs.tracing`), one
observation of the contract's duration metric, one log line, and a failure while recording
counted in ``kitobs_telemetry_dropped_total`` instead of reaching the call. This module holds the
parts they share; docs/transports.md ("Writing a transport") shows a transport built on it.

`CallLog` writes the per-call line::

    >>> import io
    >>> from kitobs import log
    >>> out = io.StringIO()
    >>> line = CallLog(log.new(out), "nats", ("subject", "status", "duration"))
    >>> line.ok("orders.created", "ok", 0.25)
    >>> "transport=nats subject=orders.created status=ok duration=0.25" in out.getvalue()
    True
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kitobs.log import Logger

__all__ = ["CallLog"]


class CallLog:
    """CallLog writes one line per call of a transport, e.g. ``CallLog(kit.logger, "grpc", keys)``.

    The line starts ``transport=<transport>``, then each of *keys* with the values given to `ok`
    (at info) or `error` (at error, with ``error=<error_type>`` last). With a Kit's logger it
    carries ``trace_id``/``span_id`` of the span current while it is written, and it honours the
    logger's level, redaction and output. The keys are encoded once, so a call writes only its
    values.
    """

    __slots__ = ("error", "ok")

    ok: Callable[..., None]
    """ok writes the info line, one value per key, e.g. ``ok("GET", "/users", "200", 0.01)``."""
    error: Callable[..., None]
    """error writes the error line: one value per key, then the error type."""

    def __init__(self, logger: Logger, transport: str, keys: tuple[str, ...]) -> None:
        target: Any = logger
        error_keys = (*keys, "error")
        with_ = getattr(target, "with_", None)
        if callable(with_):
            bound = with_("transport", transport)
            prepare = getattr(bound, "prepare", None)
            if callable(prepare):
                self.ok = prepare("info", *keys)
                self.error = prepare("error", *error_keys)
                return
            info = getattr(bound, "info", bound.log)
            error = getattr(bound, "error", bound.log)
        else:
            info = functools.partial(getattr(target, "info", target.log), "transport", transport)
            error = functools.partial(getattr(target, "error", target.log), "transport", transport)
        self.ok = functools.partial(_keyed, info, keys)
        self.error = functools.partial(_keyed, error, error_keys)


def _keyed(emit: Callable[..., None], keys: tuple[str, ...], *values: object) -> None:
    emit(*(item for pair in zip(keys, values, strict=True) for item in pair))
