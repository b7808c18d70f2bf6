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

from typing import TYPE_CHECKING

from kitobs import contract
from kitobs.endpoint import Middleware
from kitobs.endpoint._record import recording

if TYPE_CHECKING:
    from kitobs.metrics import Provider

__all__ = ["metrics_middleware"]


def metrics_middleware(metrics: Provider, *, name: str | None = None) -> Middleware:
    """metrics_middleware records each call's duration by outcome, e.g. ``metrics_middleware(p)``.

    *name* labels every endpoint this middleware wraps; by default each endpoint's own name
    (`kitobs.endpoint.name_of`). The metric is declared here, so a provider that cannot declare
    it raises `kitobs.errors.ConfigError` now, not on a call. It records through the recorder
    `kitobs.instrument` uses, so the observations are the same.
    """
    metrics.declare(contract.ENDPOINT_DURATION)  # now: a provider that cannot declare it fails here
    return recording(name, metrics=metrics)
