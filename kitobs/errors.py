"""Errors kitobs raises, all while things are being built, never while recording.

The tree::

    KitobsError
    ├── ConfigError(KitobsError, ValueError)        bad configuration, names, labels
    └── DuplicateMetricError(KitobsError, ValueError)  a metric redeclared with another shape

Recording calls (a log line, a metric update, a span end) never raise; their failures go to an
error handler and are counted.

Apart from these, the toolkit middleware refuses requests at call time by raising a
`kitobs.endpoint.RequestError` to the endpoint's caller. Those are not kitobs failures but
answers, each carrying its HTTP status, headers, gRPC status and ``outcome`` label value::

    RequestError(Exception)                     kitobs.endpoint
    ├── Unauthenticated                         kitobs.auth: 401, WWW-Authenticate,
    │                                           UNAUTHENTICATED, outcome "unauthenticated"
    ├── LimitedError                            kitobs.ratelimit: 429, Retry-After,
    │                                           RESOURCE_EXHAUSTED, outcome "limited"
    └── OpenError                               kitobs.circuitbreaker: 503, Retry-After,
        └── HalfOpenFullError                   UNAVAILABLE, outcome "rejected"

The WSGI and ASGI servers, the Flask, Starlette/FastAPI and Django integrations and the gRPC
server answer them with that status and those headers (`kitobs.transport.http.encode_error`);
`kitobs.instrument` and the endpoint middlewares record them under their own outcome.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["ConfigError", "DuplicateMetricError", "KitobsError"]


class KitobsError(Exception):
    """KitobsError is the base of every error kitobs raises, e.g. ``except kitobs.KitobsError``."""


class ConfigError(KitobsError, ValueError):
    """ConfigError says what is wrong with a setting and how to fix it, e.g. an unknown log level.

    Args:
        message: what is wrong, in one sentence.
        key: the dotted configuration key (``"log.level"``), when one is concerned.
        value: the offending value.
        variable: the environment variable the value came from, if any.
        allowed: the values or the form that would have been accepted.
    """

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        value: object = None,
        variable: str | None = None,
        allowed: Iterable[object] | str | None = None,
    ) -> None:
        self.key = key
        self.value = value
        self.variable = variable
        if allowed is None or isinstance(allowed, str):
            self.allowed: tuple[object, ...] | str | None = allowed
        else:
            self.allowed = tuple(allowed)
        parts = []
        if key is not None:
            where = f"{key} (from ${variable})" if variable else key
            parts.append(f"{where}: ")
        parts.append(message)
        if value is not None:
            parts.append(f"; got {value!r}")
        if self.allowed is not None:
            if isinstance(self.allowed, str):
                parts.append(f"; expected {self.allowed}")
            else:
                parts.append("; allowed: " + ", ".join(repr(a) for a in self.allowed))
        super().__init__("".join(parts))


class DuplicateMetricError(KitobsError, ValueError):
    """DuplicateMetricError: a metric name was declared again with another shape.

    For example a counter ``jobs`` redeclared as a gauge, or with other label names. Declaring the
    same name with the same shape returns the existing metric instead.
    """
