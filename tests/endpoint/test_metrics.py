"""metrics_middleware: kitobs_endpoint_duration_seconds{endpoint,outcome} for every outcome."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from kitobs.endpoint.metrics import metrics_middleware
from kitobs.metrics import memory

DURATION = "kitobs_endpoint_duration_seconds"


class Reply:
    def __init__(self, err: BaseException | None) -> None:
        self.err = err

    def failed(self) -> BaseException | None:
        return self.err


class BrokenReply:
    def failed(self) -> BaseException | None:
        raise RuntimeError("failed() itself broke")


def lookup(request: Any) -> Any:
    if request == "boom":
        raise KeyError(request)
    if request == "nope":
        return Reply(ValueError("not found"))
    if request == "broken":
        return BrokenReply()
    if request == "fine":
        return Reply(None)
    return request.upper()


def counts(provider: memory.Provider, endpoint: str) -> dict[str, int]:
    return {
        outcome: len(provider.observations(DURATION, endpoint=endpoint, outcome=outcome))
        for outcome in ("success", "business_error", "exception")
    }


def test_outcomes_sync() -> None:
    provider = memory.Provider()
    endpoint = metrics_middleware(provider)(lookup)
    assert endpoint("ab") == "AB"
    assert isinstance(endpoint("fine"), Reply)
    assert isinstance(endpoint("nope"), Reply)
    assert isinstance(endpoint("broken"), BrokenReply)
    with pytest.raises(KeyError) as raised:
        endpoint("boom")
    assert raised.value.args == ("boom",)
    assert counts(provider, "lookup") == {"success": 2, "business_error": 2, "exception": 1}
    assert all(
        v >= 0 for v in provider.observations(DURATION, endpoint="lookup", outcome="success")
    )


def test_outcomes_async_and_name() -> None:
    provider = memory.Provider()

    async def fetch(request: Any) -> Any:
        await asyncio.sleep(0)
        return lookup(request)

    endpoint = metrics_middleware(provider, name="users.fetch")(fetch)
    assert asyncio.iscoroutinefunction(endpoint)

    async def go() -> None:
        assert await endpoint("x") == "X"
        assert isinstance(await endpoint("nope"), Reply)
        with pytest.raises(KeyError):
            await endpoint("boom")

    asyncio.run(go())
    assert counts(provider, "users.fetch") == {"success": 1, "business_error": 1, "exception": 1}
    assert {s["endpoint"] for s in provider.series(DURATION)} == {"users.fetch"}


def test_cancelled_async_call_is_an_exception() -> None:
    provider = memory.Provider()

    async def wait(request: Any) -> Any:
        await asyncio.sleep(10)

    endpoint = metrics_middleware(provider)(wait)

    async def go() -> None:
        task = asyncio.create_task(endpoint(None))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    assert counts(provider, "test_cancelled_async_call_is_an_exception.wait")["exception"] == 1


def test_duration_is_measured_around_the_call() -> None:
    provider = memory.Provider()

    def timed(request: Any) -> float:
        begin = time.perf_counter()
        time.sleep(0.01)
        return time.perf_counter() - begin

    inner = metrics_middleware(provider, name="timed")(timed)(None)
    [observed] = provider.observations(DURATION, endpoint="timed", outcome="success")
    assert observed >= inner  # the middleware's clock reads enclose the endpoint's own
