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

from kitobs.endpoint import Middleware
from kitobs.endpoint._record import definition_site, emitters, error_text, recording
from kitobs.log import Logger

__all__ = ["logging_middleware"]

# The names other kitobs modules read here before the recorder had its own module.
_definition_site = definition_site
_emitters = emitters
_error_text = error_text


def logging_middleware(logger: Logger, *, name: str | None = None) -> Middleware:
    """logging_middleware logs one line per call, e.g. ``logging_middleware(logger)(endpoint)``.

    The line is the one `kitobs.instrument` writes, through the same recorder
    (`kitobs.endpoint.instrument.instrumenting` records it together with a span and a metric).

    Args:
        logger: where lines go.
        name: the ``endpoint`` value; by default `kitobs.endpoint.name_of` the endpoint.
    """
    return recording(name, logger=logger)
