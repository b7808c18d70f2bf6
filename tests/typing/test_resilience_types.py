"""Type checks only (mypy): breakers and limiters are middlewares, limiters are Admitters."""

from __future__ import annotations

from kitobs import ratelimit
from kitobs.circuitbreaker import Breaker
from kitobs.endpoint import Middleware
from kitobs.ratelimit import limits_strategy


def _breaker(b: Breaker) -> Middleware:
    return b


def _limiter(limiter: ratelimit.Limiter) -> ratelimit.Admitter:
    return limiter


def _limits(limiter: limits_strategy.Limiter) -> ratelimit.Admitter:
    return limiter


def _forms(limiter: ratelimit.Limiter) -> tuple[Middleware, Middleware]:
    return ratelimit.erroring(limiter), ratelimit.delaying(limiter, max_wait=0.5)
