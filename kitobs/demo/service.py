"""The demo's business logic, in go-kit's addsvc spirit: a service, its endpoints, nothing else.

Nothing here knows about HTTP, logs or metrics: the endpoints are plain functions from a request
to a response, and instrumentation is added around them by middleware, as a user would.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "IntRequest",
    "Response",
    "TextRequest",
    "SlowRequest",
    "TooLarge",
    "Unlucky",
    "make_endpoints",
]

#: Sums above this are refused with a business error (go-kit's addsvc has the same rule).
MAX_SUM = 1_000_000


class TooLarge(Exception):
    """TooLarge is the business error of a sum over `MAX_SUM`; HTTP answers 422."""

    status_code = 422


class Unlucky(Exception):
    """Unlucky is the business error `flaky` returns now and then; HTTP answers 422."""

    status_code = 422


@dataclass(frozen=True, slots=True)
class IntRequest:
    """IntRequest asks to add two integers."""

    a: int
    b: int


@dataclass(frozen=True, slots=True)
class TextRequest:
    """TextRequest asks to concatenate two strings."""

    a: str
    b: str


@dataclass(frozen=True, slots=True)
class SlowRequest:
    """SlowRequest asks for a reply after *ms* milliseconds."""

    ms: float


@dataclass(slots=True)
class Response:
    """Response carries a value or a business error (it is a `kitobs.endpoint.Failer`)."""

    value: Any = None
    err: Exception | None = field(default=None)

    def failed(self) -> BaseException | None:
        """failed returns the business error, or None on success."""
        return self.err


def make_endpoints(rng: random.Random | None = None) -> dict[str, Any]:
    """make_endpoints returns the demo's endpoints by name: sum, concat, slow, flaky."""
    chance = rng or random.Random()

    def sum_(request: IntRequest) -> Response:
        total = request.a + request.b
        if total > MAX_SUM:
            return Response(err=TooLarge(f"sum {total} is over {MAX_SUM}"))
        return Response(total)

    def concat(request: TextRequest) -> Response:
        return Response(request.a + request.b)

    def slow(request: SlowRequest) -> Response:
        time.sleep(max(0.0, min(request.ms, 5000.0)) / 1000.0)
        return Response(request.ms)

    def flaky(request: Any) -> Response:
        roll = chance.random()
        if roll < 0.1:
            raise RuntimeError("flaky endpoint failed")
        if roll < 0.25:
            return Response(err=Unlucky("no luck this time"))
        return Response("ok")

    sum_.__name__ = sum_.__qualname__ = "sum"
    concat.__qualname__ = "concat"
    slow.__qualname__ = "slow"
    flaky.__qualname__ = "flaky"
    return {"sum": sum_, "concat": concat, "slow": slow, "flaky": flaky}
