"""A refused request (`kitobs.endpoint.RequestError`) is recorded under its own outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from kitobs.endpoint import EXCEPTION, RequestError, chain, exception_outcome, outcome
from kitobs.endpoint.instrument import instrument, instrumenting
from kitobs.endpoint.logging import logging_middleware
from kitobs.endpoint.metrics import metrics_middleware
from kitobs.endpoint.tracing import tracing_middleware
from tests.endpoint.test_instrument import DURATION, Parts


class Limited(RequestError):
    status_code = 429
    grpc_status = "RESOURCE_EXHAUSTED"
    outcome = "limited"


def test_request_error_carries_its_answer() -> None:
    err = Limited("slow down", headers={"Retry-After": "2"})
    assert (err.status_code, err.grpc_status, err.headers, str(err)) == (
        429,
        "RESOURCE_EXHAUSTED",
        {"Retry-After": "2"},
        "slow down",
    )
    base = RequestError()
    assert (base.status_code, base.outcome, base.headers) == (400, "rejected", {})


def test_outcome_of_a_request_error_is_its_own() -> None:
    assert exception_outcome(Limited()) == "limited"
    assert exception_outcome(ValueError()) == EXCEPTION
    err = Limited()
    assert outcome(None, err) == ("limited", err)


def _refuse(request: Any) -> Any:
    raise Limited("over the limit")


async def _refuse_async(request: Any) -> Any:
    raise Limited("over the limit")


def _wrappers(parts: Parts) -> list[Callable[[Any], Any]]:
    return [
        instrumenting(parts.kit, name="ep")(_refuse),
        instrument(parts.kit, name="ep")(_refuse),
        chain(
            tracing_middleware(parts.kit.tracer, name="ep"),
            logging_middleware(parts.kit.logger, name="ep"),
            metrics_middleware(parts.kit.metrics, name="ep"),
        )(_refuse),
    ]


@pytest.mark.parametrize("which", [0, 1, 2], ids=["instrumenting", "instrument", "chained"])
def test_every_recorder_labels_a_refused_call(which: int) -> None:
    parts = Parts()
    wrapped = _wrappers(parts)[which]
    with pytest.raises(Limited):
        wrapped("req")
    assert len(parts.provider.observations(DURATION, endpoint="ep", outcome="limited")) == 1
    assert parts.provider.observations(DURATION, endpoint="ep", outcome=EXCEPTION) == []
    [span] = parts.capture.spans
    assert span.attributes["kitobs.outcome"] == "limited"
    [record] = parts.records
    assert record["outcome"] == "limited"
    assert record["level"] == "info"  # refusing a request is not the service failing


def test_async_instrument_labels_a_refused_call() -> None:
    parts = Parts()
    wrapped = instrument(parts.kit, name="ep")(_refuse_async)
    with pytest.raises(Limited):
        asyncio.run(wrapped("req"))
    assert len(parts.provider.observations(DURATION, endpoint="ep", outcome="limited")) == 1
