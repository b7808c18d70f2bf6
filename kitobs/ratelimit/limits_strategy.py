"""limits_strategy: the ``limits`` library's strategies behind kitobs's rate-limit middleware.

For limits kept in a shared store (Redis, Memcached, MongoDB: every process of a service draws
on one count) or counted by window rather than by token bucket (extra ``kitobs[limits]``). A
`Limiter` here is an `kitobs.ratelimit.Admitter`, so `kitobs.ratelimit.erroring` applies it and
records the same metrics (``kitobs_ratelimit_decisions_total``; a refused call is
``outcome="limited"`` with ``Retry-After`` from the window's reset time)::

    from kitobs.ratelimit import erroring, from_metadata
    from kitobs.ratelimit.limits_strategy import Limiter

    limiter = Limiter("api", "100/minute", strategy="moving-window",
                      storage="redis://localhost:6379", key=from_metadata("x-api-key"), kit=kit)
    endpoint = erroring(limiter)(endpoint)

The delaying form waits until the window's reset time, bounded by the request's deadline, then
tries once more; it waits by blocking the thread, so give async endpoints the erroring form.
Keys live in the store, which expires them: there is no map to evict from, so
``kitobs_ratelimit_keys_evicted_total`` stays at zero.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

import limits
import limits.strategies
from limits.storage import Storage, storage_from_string

from kitobs import contract
from kitobs.errors import ConfigError

if TYPE_CHECKING:
    from kitobs.kit import Kit
    from kitobs.metrics import Counter, Histogram

__all__ = ["STRATEGIES", "Limiter"]

#: The strategies by their names in ``limits`` (``RATELIMIT_STRATEGY`` in Flask-Limiter).
STRATEGIES: dict[str, type[limits.strategies.RateLimiter]] = {
    "moving-window": limits.strategies.MovingWindowRateLimiter,
    "fixed-window": limits.strategies.FixedWindowRateLimiter,
    "sliding-window-counter": limits.strategies.SlidingWindowCounterRateLimiter,
}


class Limiter:
    """Limiter applies a ``limits`` rate, e.g. ``Limiter("api", "100/minute", kit=kit)``.

    Args:
        name: the ``limiter`` label, and the namespace of its keys in the store.
        rate: a ``limits`` rate string (``"10/second"``, ``"1000 per hour"``) or item.
        strategy: one of `STRATEGIES`.
        storage: a ``limits`` storage URI (``"memory://"``, ``"redis://host:6379"``) or object.
        key: a function of the request giving its key; None: one limit for all.
        kit: where it records; None uses `kitobs.kit.default`, resolved at the first decision.

    Raises:
        ConfigError: an unknown strategy or a rate ``limits`` cannot parse.
    """

    def __init__(
        self,
        name: str,
        rate: str | limits.RateLimitItem,
        *,
        strategy: str = "moving-window",
        storage: str | Storage = "memory://",
        key: Callable[[Any], Hashable] | None = None,
        kit: Kit | None = None,
    ) -> None:
        if strategy not in STRATEGIES:
            raise ConfigError("unknown limits strategy", value=strategy, allowed=list(STRATEGIES))
        try:
            self.item = limits.parse(rate) if isinstance(rate, str) else rate
        except ValueError as err:
            raise ConfigError(
                f"rate is not a limits rate: {err}", value=rate, allowed="e.g. '10/second'"
            ) from None
        store = storage_from_string(storage) if isinstance(storage, str) else storage
        self.strategy = STRATEGIES[strategy](store)
        self.name = name
        self.key = key
        self._kit = kit
        self._bound: tuple[Counter, Counter, Histogram] | None = None
        if kit is not None:
            self._bind()

    def _bind(self) -> tuple[Counter, Counter, Histogram]:
        bound = self._bound
        if bound is None:
            from kitobs.kit import default

            kit = self._kit if self._kit is not None else default()
            decisions = kit.metrics.declare(contract.RATELIMIT_DECISIONS)
            allowed = decisions.labels(self.name, "allowed")
            limited = decisions.labels(self.name, "limited")
            evicted = kit.metrics.declare(contract.RATELIMIT_KEYS_EVICTED).labels(self.name)
            for child in (allowed, limited, evicted):
                child.add(0.0)
            waited = kit.metrics.declare(contract.RATELIMIT_WAIT_DURATION).labels(self.name)
            bound = self._bound = (allowed, limited, waited)
        return bound

    def _ids(self, request: Any) -> tuple[str, ...]:
        key = self.key
        return (self.name,) if key is None else (self.name, str(key(request)))

    def retry_after(self, request: Any) -> int:
        """retry_after gives the whole seconds (at least 1) until the request's window resets."""
        stats = self.strategy.get_window_stats(self.item, *self._ids(request))
        return max(1, math.ceil(stats.reset_time - time.time()))

    def admit(self, request: Any) -> int:
        """admit hits the limit for *request*: 0 when allowed, else the seconds until reset."""
        allowed, limited, _ = self._bound or self._bind()
        ids = self._ids(request)
        if self.strategy.hit(self.item, *ids):
            with contextlib.suppress(Exception):
                allowed.add(1.0)
            return 0
        with contextlib.suppress(Exception):
            limited.add(1.0)
        stats = self.strategy.get_window_stats(self.item, *ids)
        return max(1, math.ceil(stats.reset_time - time.time()))

    def reserve(self, request: Any, max_wait: float | None) -> float | None:
        """reserve hits the limit now, or waits for the window's reset (within *max_wait*) and
        hits it once more; gives the seconds waited, or None when refused."""
        allowed, limited, waited = self._bound or self._bind()
        ids = self._ids(request)
        delay = 0.0
        if not self.strategy.hit(self.item, *ids):
            stats = self.strategy.get_window_stats(self.item, *ids)
            delay = max(0.0, stats.reset_time - time.time())
            if (max_wait is not None and delay > max_wait) or not self._after(delay, ids):
                with contextlib.suppress(Exception):
                    limited.add(1.0)
                return None
        with contextlib.suppress(Exception):
            allowed.add(1.0)
            waited.observe(delay)
        return 0.0  # any wait has been done here

    def _after(self, delay: float, ids: tuple[str, ...]) -> bool:
        time.sleep(delay)
        return self.strategy.hit(self.item, *ids)
