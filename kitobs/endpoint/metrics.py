"""The metrics middleware: ``kitobs_endpoint_duration_seconds`` per endpoint and outcome.

`metrics_middleware` observes every call's duration in seconds into the contract's
`kitobs.contract.ENDPOINT_DURATION`, labelled ``endpoint`` (the endpoint's name) and ``outcome``
(``success``, ``business_error`` for a `kitobs.endpoint.Failer` response that failed, or
``exception``). The three children are bound when the middleware wraps an endpoint, so a call costs
two clock reads, one classification and one ``observe``. Sync and async endpoints both work::

    >>> from kitobs.metrics import memory
    >>> provider = memory.Provider()
    >>> sum_ = metrics_middleware(provider)(lambda req: req[0] + req[1])
    >>> sum_((1, 2))
    3

The transport layer emits its own ``http_server_*`` / ``rpc_server_*`` metrics; this middleware
emits only the endpoint metric, so instrumenting both layers counts nothing twice.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from kitobs import contract
from kitobs.endpoint import (
    BUSINESS_ERROR,
    EXCEPTION,
    SUCCESS,
    Endpoint,
    Middleware,
    RequestError,
    around,
    exception_outcome,
    name_of,
    outcome,
)

if TYPE_CHECKING:
    from kitobs.metrics import Histogram, Provider

__all__ = ["metrics_middleware"]

_perf_counter = time.perf_counter


class _Observe:
    # The finish step of `around`, with the endpoint's three children bound once.
    __slots__ = ("_business", "_duration", "_exception", "_name", "_success")

    def __init__(self, duration: Histogram, name: str) -> None:
        self._duration = duration
        self._name = name
        self._success = duration.labels(name, SUCCESS)
        self._business = duration.labels(name, BUSINESS_ERROR)
        self._exception = duration.labels(name, EXCEPTION)

    def __call__(self, begin: float, response: Any, exc: BaseException | None) -> None:
        elapsed = _perf_counter() - begin
        if exc is not None:
            if isinstance(exc, RequestError):  # refused on purpose: its own outcome
                self._duration.labels(self._name, exception_outcome(exc)).observe(elapsed)
            else:
                self._exception.observe(elapsed)
        elif getattr(response, "failed", None) is None or outcome(response, None)[0] == SUCCESS:
            self._success.observe(elapsed)
        else:
            self._business.observe(elapsed)


def _start(request: Any) -> float:
    return _perf_counter()


def metrics_middleware(metrics: Provider, *, name: str | None = None) -> Middleware:
    """metrics_middleware records each call's duration by outcome, e.g. ``metrics_middleware(p)``.

    *name* labels every endpoint this middleware wraps; by default each endpoint's own name
    (`kitobs.endpoint.name_of`). The metric is declared here, so a provider that cannot declare
    it raises `kitobs.errors.ConfigError` now, not on a call.
    """
    duration = metrics.declare(contract.ENDPOINT_DURATION)

    def middleware(endpoint: Endpoint) -> Endpoint:
        observe = _Observe(duration, name or name_of(endpoint))
        return around(endpoint, _start, observe)

    return middleware
