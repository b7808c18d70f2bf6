"""Tests for the endpoint core: chain order, outcomes, sync and async wrapping."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from dataclasses import dataclass
from typing import Any

import pytest

from kitobs import endpoint
from kitobs.endpoint import BUSINESS_ERROR, EXCEPTION, SUCCESS, Endpoint, Middleware


def tagging(tag: str, trail: list[str]) -> Middleware:
    def middleware(next_endpoint: Endpoint) -> Endpoint:
        def wrapped(request: Any) -> Any:
            trail.append(f"{tag}>")
            response = next_endpoint(request)
            trail.append(f"<{tag}")
            return response

        return wrapped

    return middleware


def test_chain_runs_the_first_middleware_outermost() -> None:
    trail: list[str] = []
    composed = endpoint.chain(tagging("a", trail), tagging("b", trail), tagging("c", trail))
    assert composed(lambda request: request + 1)(1) == 2
    assert trail == ["a>", "b>", "c>", "<c", "<b", "<a"]


@dataclass
class Response:
    value: int
    err: Exception | None = None

    def failed(self) -> BaseException | None:
        return self.err


class BrokenFailer:
    def failed(self) -> BaseException | None:
        raise RuntimeError("failed() itself broke")


def test_outcome_tells_success_business_error_and_exception() -> None:
    boom = KeyError("k")
    overflow = OverflowError("too big")
    assert endpoint.outcome(Response(1), None) == (SUCCESS, None)
    assert endpoint.outcome(Response(1, overflow), None) == (BUSINESS_ERROR, overflow)
    assert endpoint.outcome(None, boom) == (EXCEPTION, boom)
    assert endpoint.outcome("plain", None) == (SUCCESS, None)
    kind, err = endpoint.outcome(BrokenFailer(), None)
    assert kind == BUSINESS_ERROR
    assert isinstance(err, RuntimeError)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, Any, BaseException | None]] = []

    def start(self, request: Any) -> Any:
        return ("state", request)

    def finish(self, state: Any, response: Any, exc: BaseException | None) -> None:
        self.calls.append((state, response, exc))


def test_around_sync_records_response_and_exception() -> None:
    rec = Recorder()

    def double(request: int) -> int:
        """Double the request."""
        if request < 0:
            raise ValueError("negative")
        return request * 2

    wrapped = endpoint.around(double, rec.start, rec.finish)
    assert not inspect.iscoroutinefunction(wrapped)
    assert wrapped(4) == 8
    with pytest.raises(ValueError, match="negative"):
        wrapped(-1)
    assert rec.calls[0] == (("state", 4), 8, None)
    assert rec.calls[1][0] == ("state", -1)
    assert isinstance(rec.calls[1][2], ValueError)
    assert wrapped.__name__ == "double"
    assert wrapped.__doc__ == "Double the request."
    assert endpoint.name_of(wrapped) == "test_around_sync_records_response_and_exception.double"


def test_around_async_runs_in_the_awaiting_task_and_sees_cancellation() -> None:
    rec = Recorder()
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    def start(request: Any) -> Any:
        var.set("set-by-start")
        return request

    async def echo(request: Any) -> Any:
        if request == "hang":
            await asyncio.sleep(60)
        return (request, var.get())

    wrapped = endpoint.around(echo, start, rec.finish)
    assert inspect.iscoroutinefunction(wrapped)
    assert endpoint.is_async(wrapped)

    async def main() -> None:
        assert await wrapped("x") == ("x", "set-by-start")
        task = asyncio.ensure_future(wrapped("hang"))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert rec.calls[0] == ("x", ("x", "set-by-start"), None)
    assert isinstance(rec.calls[1][2], asyncio.CancelledError)


def test_is_async_sees_through_partials_and_callable_objects() -> None:
    async def handler(a: int, b: int) -> int:
        return a + b

    class Service:
        async def __call__(self, request: Any) -> Any:
            return request

    assert endpoint.is_async(functools.partial(handler, 1))
    assert endpoint.is_async(Service())
    assert not endpoint.is_async(lambda r: r)
    assert endpoint.name_of(functools.partial(handler, 1)) == (
        "test_is_async_sees_through_partials_and_callable_objects.handler"
    )
    assert endpoint.name_of(Service()) == (
        "test_is_async_sees_through_partials_and_callable_objects.Service"
    )


def test_middlewares_built_with_around_compose_on_async_endpoints() -> None:
    order: list[str] = []

    def named(tag: str) -> Middleware:
        def middleware(next_endpoint: Endpoint) -> Endpoint:
            return endpoint.around(
                next_endpoint,
                lambda request: order.append(f"{tag}>"),
                lambda state, response, exc: order.append(f"<{tag}"),
            )

        return middleware

    async def work(request: int) -> int:
        order.append("work")
        return request

    composed = endpoint.chain(named("outer"), named("inner"))(work)
    assert endpoint.is_async(composed)
    assert asyncio.run(composed(3)) == 3
    assert order == ["outer>", "inner>", "work", "<inner", "<outer"]
