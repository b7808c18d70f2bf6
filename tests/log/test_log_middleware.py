"""kitobs.endpoint.logging.logging_middleware: one line per call, caller = the endpoint."""

from __future__ import annotations

import asyncio
import functools
import inspect
from dataclasses import dataclass
from typing import Any

import pytest

from kitobs.endpoint import chain
from kitobs.endpoint.logging import logging_middleware
from kitobs.log import capture

HERE = "test_log_middleware.py"


@dataclass
class Response:
    value: int
    err: BaseException | None = None

    def failed(self) -> BaseException | None:
        return self.err


def double(request: int) -> Response:
    if request < 0:
        raise ValueError("negative")
    if request == 0:
        return Response(0, LookupError("zero"))
    return Response(request * 2)


async def async_double(request: int) -> Response:
    await asyncio.sleep(0)
    return double(request)


def _def_line(fn: Any) -> int:
    return inspect.getsourcelines(fn)[1]


def test_one_line_per_call_with_each_outcome() -> None:
    logger, records = capture.new(caller=True)
    endpoint = logging_middleware(logger)(double)
    assert endpoint(2) == Response(4)
    assert endpoint(0).value == 0
    with pytest.raises(ValueError, match="negative"):
        endpoint(-1)
    where = f"{HERE}:{_def_line(double)}"
    for record in records:
        duration = record.pop("duration")
        assert isinstance(duration, float)
        assert duration >= 0
    assert records == [
        {"level": "info", "caller": where, "endpoint": "double", "outcome": "success"},
        {
            "level": "info",
            "caller": where,
            "endpoint": "double",
            "outcome": "business_error",
            "error": "LookupError: zero",
        },
        {
            "level": "error",
            "caller": where,
            "endpoint": "double",
            "outcome": "exception",
            "error": "ValueError: negative",
        },
    ]


def test_async_endpoint_and_name_override() -> None:
    logger, records = capture.new(caller=True)
    endpoint = logging_middleware(logger, name="Doubler.double")(async_double)
    assert asyncio.run(endpoint(3)) == Response(6)
    assert inspect.iscoroutinefunction(endpoint)
    assert records[0]["endpoint"] == "Doubler.double"
    assert records[0]["caller"] == f"{HERE}:{_def_line(async_double)}"
    assert records[0]["outcome"] == "success"


def test_caller_survives_other_middlewares_and_partials() -> None:
    logger, records = capture.new(caller=True)

    def passthrough(next_endpoint: Any) -> Any:
        @functools.wraps(next_endpoint)
        def wrapped(request: Any) -> Any:
            return next_endpoint(request)

        return wrapped

    chain(logging_middleware(logger), passthrough)(double)(1)
    logging_middleware(logger)(functools.partial(double))(1)
    assert [r["caller"] for r in records] == [f"{HERE}:{_def_line(double)}"] * 2


class Callable:
    def __call__(self, request: int) -> int:
        return request


def test_callable_object_and_plain_logger() -> None:
    class Plain:
        """Only the one-method Logger protocol."""

        def __init__(self) -> None:
            self.calls: list[tuple[object, ...]] = []

        def log(self, *keyvals: object) -> None:
            self.calls.append(keyvals)

    plain = Plain()
    assert logging_middleware(plain)(Callable())(5) == 5
    ((*head, duration_key, duration, outcome_key, outcome),) = [
        (c[0], c[1], c[2], c[3], c[4], c[5]) for c in plain.calls
    ]
    assert head == ["endpoint", "Callable"]
    assert (duration_key, outcome_key, outcome) == ("duration", "outcome", "success")
    assert isinstance(duration, float)
    logger, records = capture.new(caller=True)
    logging_middleware(logger)(Callable())(1)
    assert records[0]["caller"] == f"{HERE}:{_def_line(Callable.__call__)}"


def test_logging_failure_does_not_change_the_result() -> None:
    class Exploding:
        def log(self, *keyvals: object) -> None:
            raise RuntimeError("logger broke")

    assert logging_middleware(Exploding())(double)(1) == Response(2)


def test_error_without_message_and_unprintable() -> None:
    class Silent(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no text")

    def raises_silent(request: Any) -> Any:
        raise Silent

    def raises_empty(request: Any) -> Any:
        raise KeyboardInterrupt

    logger, records = capture.new()
    for endpoint in (raises_silent, raises_empty):
        with pytest.raises((Silent, KeyboardInterrupt)):
            logging_middleware(logger)(endpoint)(None)
    assert [r["error"] for r in records] == [
        "test_error_without_message_and_unprintable.<locals>.Silent",
        "KeyboardInterrupt",
    ]
