"""Rate limiting: token buckets and the endpoint middleware that applies them, on go-kit's model.

A `TokenBucket` holds up to *burst* tokens and gains *rate* of them per second; a call takes one.
It is safe to share between threads, endpoints and event loops, and reads an injectable monotonic
clock. A `Limiter` names a bucket (or a bounded map of them, one per key) and records its
decisions; go-kit's two middleware forms apply it:

- `erroring`: a call without a token is refused at once with `LimitedError` (429 with
  ``Retry-After`` over HTTP, ``RESOURCE_EXHAUSTED`` over gRPC, ``outcome="limited"``);
- `delaying`: a call waits for its token, as long as the request's deadline (and *max_wait*)
  allows, and is refused with `LimitedError` only when the wait would outlast it.

::

    >>> from kitobs.ratelimit import Limiter, LimitedError, erroring
    >>> from kitobs.config import load
    >>> from kitobs.kit import Kit
    >>> from kitobs.log import nop
    >>> from kitobs.metrics import memory
    >>> from kitobs.tracing import Tracer
    >>> provider = memory.Provider()
    >>> kit = Kit(load(path=None, env={}, search=False), logger=nop(), metrics=provider,
    ...           tracer=Tracer())
    >>> limiter = Limiter("api", rate=1.0, burst=2, kit=kit)
    >>> @erroring(limiter)
    ... def hello(request):
    ...     return "hi"
    >>> hello(None), hello(None)
    ('hi', 'hi')
    >>> try:
    ...     hello(None)
    ... except LimitedError as err:
    ...     print(err.status_code, err.headers, err.outcome)
    429 {'Retry-After': '1'} limited
    >>> provider.value("kitobs_ratelimit_decisions_total", limiter="api", decision="limited")
    1.0

Keyed limits (per client, per claim, per route) take ``key=``, a function of the request that
may read the request context (`from_metadata` and `from_value` build the common ones); at most
*max_keys* buckets are kept, the least recently used evicted first and counted, so a flood of
keys cannot grow memory.

What it records, on the `kitobs.Kit` given as ``kit=`` (or the process-wide default, resolved at
the first decision): ``kitobs_ratelimit_decisions_total{limiter,decision}`` (``allowed``,
``limited``), ``kitobs_ratelimit_wait_duration_seconds{limiter}`` (the delaying form's waits),
``kitobs_ratelimit_keys_evicted_total{limiter}``. `from_config` builds a limiter with the
``[ratelimit]`` settings; `kitobs.ratelimit.limits_strategy` adapts the ``limits`` library's
strategies (moving and fixed window, shared stores) to the same middleware.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from kitobs import contract
from kitobs.endpoint import Endpoint, Middleware, RequestError, around, is_async
from kitobs.endpoint import context as _context
from kitobs.errors import ConfigError

if TYPE_CHECKING:
    from kitobs.kit import Kit
    from kitobs.metrics import Counter, Histogram

__all__ = [
    "Admitter",
    "LimitedError",
    "Limiter",
    "TokenBucket",
    "delaying",
    "erroring",
    "from_config",
    "from_metadata",
    "from_value",
]


class LimitedError(RequestError):
    """LimitedError refuses a call over the rate, e.g. ``LimitedError("api: rate limited")``.

    429 with ``Retry-After`` (whole seconds until a token is due) over HTTP,
    ``RESOURCE_EXHAUSTED`` over gRPC, ``outcome="limited"`` in ``kitobs_endpoint_*``.
    """

    status_code = 429
    grpc_status = "RESOURCE_EXHAUSTED"
    outcome = "limited"

    def __init__(
        self, message: str = "", *, limiter: str = "", headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message, headers=headers)
        self.limiter = limiter


class TokenBucket:
    """TokenBucket lets *rate* calls per second through, *burst* at once, e.g. ``(100, 20)``.

    It starts full. `allow` takes a token if there is one; `reserve` takes one ahead of time and
    says how long to wait for it; `wait` and `wait_async` do the waiting, bounded by the current
    request's deadline. One lock guards the count, never held while waiting.

    Raises:
        ConfigError: *rate* is not above 0 or *burst* is below 1.
    """

    __slots__ = ("_clock", "_last", "_lock", "_tokens", "burst", "rate")

    def __init__(
        self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not (isinstance(rate, int | float) and math.isfinite(rate) and rate > 0):
            raise ConfigError("rate must be a number of tokens per second above 0", value=rate)
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ConfigError("burst must be an integer of at least 1", value=burst)
        self.rate = float(rate)
        self.burst = burst
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = float(burst)
        self._last = clock()

    def allow(self) -> bool:
        """allow takes a token and returns True, or returns False when there is none."""
        with self._lock:
            now = self._clock()
            tokens = self._tokens + (now - self._last) * self.rate
            if tokens > self.burst:
                tokens = self.burst
            self._last = now
            if tokens >= 1.0:
                self._tokens = tokens - 1.0
                return True
            self._tokens = tokens
            return False

    def retry_after(self) -> float:
        """retry_after gives the seconds until a token is due (0.0 when one is there now)."""
        with self._lock:
            tokens = self._tokens + (self._clock() - self._last) * self.rate
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def reserve(self, max_wait: float | None = None) -> float | None:
        """reserve takes a token now or ahead of time, returning the seconds to wait for it.

        0.0 means go now. When the token would come later than *max_wait* seconds (None: no
        bound) nothing is taken and None is returned.
        """
        with self._lock:
            now = self._clock()
            tokens = self._tokens + (now - self._last) * self.rate
            if tokens > self.burst:
                tokens = self.burst
            delay = 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate
            if max_wait is not None and delay > max_wait:
                self._tokens, self._last = tokens, now
                return None
            self._tokens, self._last = tokens - 1.0, now
            return delay

    def refund(self) -> None:
        """refund gives back a token `reserve` took, e.g. when the caller gave up waiting."""
        with self._lock:
            self._tokens = min(float(self.burst), self._tokens + 1.0)

    def wait(self, timeout: float | None = None) -> bool:
        """wait blocks until a token is taken (True), or returns False at once when it would
        come after *timeout* seconds or after the current request's deadline."""
        delay = self.reserve(_bound(timeout))
        if delay is None:
            return False
        if delay > 0.0 and _context.current().cancelled.wait(delay):
            self.refund()  # the caller went away while waiting
            return False
        return True

    async def wait_async(self, timeout: float | None = None) -> bool:
        """wait_async is `wait` for asyncio: the task sleeps, the event loop runs on."""
        delay = self.reserve(_bound(timeout))
        if delay is None:
            return False
        if delay > 0.0:
            try:
                await asyncio.sleep(delay)
            except BaseException:
                self.refund()
                raise
        return True


def _bound(timeout: float | None) -> float | None:
    # The longest wait: *timeout* and the request's remaining time, whichever is shorter.
    remaining = _context.time_remaining()
    if remaining is None:
        return timeout
    return remaining if timeout is None else min(timeout, remaining)


class Admitter(Protocol):
    """Admitter decides for one call and records the decision, e.g. a `Limiter`.

    `erroring` needs ``admit``, `delaying` needs ``reserve`` too.
    """

    name: str

    def admit(self, request: Any) -> int:
        """admit lets a call through (0) or refuses it with the seconds to wait (1 or more)."""
        ...

    def reserve(self, request: Any, max_wait: float | None) -> float | None:
        """reserve gives the seconds the call must wait, or None when refused (past max_wait)."""
        ...


class _Recorded:
    # A limiter's metric children, bound once from the Kit; the label sets known up front are
    # shown from the start, at zero.
    __slots__ = ("allowed", "evicted", "limited", "waited")

    def __init__(self, kit: Kit, name: str) -> None:
        metrics = kit.metrics
        decisions = metrics.declare(contract.RATELIMIT_DECISIONS)
        self.allowed: Counter = decisions.labels(name, "allowed")
        self.limited: Counter = decisions.labels(name, "limited")
        self.waited: Histogram = metrics.declare(contract.RATELIMIT_WAIT_DURATION).labels(name)
        self.evicted: Counter = metrics.declare(contract.RATELIMIT_KEYS_EVICTED).labels(name)
        for child in (self.allowed, self.limited, self.evicted):
            child.add(0.0)


class Limiter:
    """Limiter is a named token bucket, or one per key, that records its decisions.

    E.g. ``Limiter("api", rate=100, burst=20, kit=kit)``, or per client:
    ``Limiter("per_client", rate=10, burst=10, key=from_metadata("x-api-key"), kit=kit)``.
    Apply it with `erroring` or `delaying`; one limiter may guard several endpoints, which then
    share its tokens.

    Args:
        name: the ``limiter`` label.
        rate: tokens added per second (per key when keyed).
        burst: the bucket size.
        key: a function of the request giving its bucket's key; None: one bucket for all.
        max_keys: buckets kept when keyed; the least recently used is evicted beyond it.
        max_wait: the `delaying` form's longest wait in seconds, unless it is given one;
            None: as long as the request's deadline allows.
        kit: where it records; None uses `kitobs.kit.default`, resolved at the first decision.
        clock: a monotonic clock in seconds, e.g. a fake one in tests.

    Raises:
        ConfigError: a parameter out of range, named in the message.
    """

    __slots__ = (
        "_buckets",
        "_clock",
        "_lock",
        "_one",
        "_recorded",
        "burst",
        "key",
        "max_keys",
        "max_wait",
        "name",
        "rate",
    )

    def __init__(
        self,
        name: str,
        *,
        rate: float,
        burst: int,
        key: Callable[[Any], Hashable] | None = None,
        max_keys: int = 10000,
        max_wait: float | None = None,
        kit: Kit | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_wait is not None and not max_wait >= 0.0:
            raise ConfigError("max_wait must be a number of seconds >= 0", value=max_wait)
        if not isinstance(name, str) or not name:
            raise ConfigError("a limiter needs a non-empty name (its limiter label)", value=name)
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise ConfigError("max_keys must be an integer of at least 1", value=max_keys)
        if kit is not None:
            from kitobs.kit import Kit

            if not isinstance(kit, Kit):
                raise ConfigError(f"kit= takes a kitobs.Kit, not {type(kit).__name__}")
        self.name = name
        self._one = TokenBucket(rate, burst, clock=clock)  # checks rate and burst
        self.rate, self.burst = self._one.rate, burst
        self.key = key
        self.max_keys = max_keys
        self.max_wait = max_wait
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[Hashable, TokenBucket] = OrderedDict()
        self._recorded = _Recorded(kit, name) if kit is not None else None

    def _record(self) -> _Recorded:
        recorded = self._recorded
        if recorded is None:
            from kitobs.kit import default

            with self._lock:
                recorded = self._recorded
                if recorded is None:
                    recorded = self._recorded = _Recorded(default(), self.name)
        return recorded

    def bucket(self, request: Any = None) -> TokenBucket:
        """bucket gives the `TokenBucket` a request draws from (made for a new key)."""
        key = self.key
        if key is None:
            return self._one
        k = key(request)
        buckets = self._buckets
        evicted = 0
        with self._lock:
            found = buckets.get(k)
            if found is None:
                found = buckets[k] = TokenBucket(self.rate, self.burst, clock=self._clock)
                while len(buckets) > self.max_keys:
                    buckets.popitem(last=False)
                    evicted += 1
            else:
                buckets.move_to_end(k)
        if evicted:
            with contextlib.suppress(Exception):
                self._record().evicted.add(evicted)
        return found

    def __len__(self) -> int:
        """The number of buckets held (1 when not keyed)."""
        return len(self._buckets) if self.key is not None else 1

    def allow(self, request: Any = None) -> bool:
        """allow takes a token for *request* (its key's bucket) and records the decision."""
        return self.admit(request) == 0

    def admit(self, request: Any) -> int:
        """admit lets a call through (0) or refuses it with the whole seconds until a token."""
        recorded = self._recorded or self._record()
        bucket = self._one if self.key is None else self.bucket(request)
        if bucket.allow():
            recorded.allowed.add(1.0)
            return 0
        recorded.limited.add(1.0)
        return max(1, math.ceil(bucket.retry_after()))

    def reserve(self, request: Any, max_wait: float | None) -> float | None:
        """reserve takes a token ahead of time, giving the seconds to wait, or None when it would
        come later than *max_wait*; records the decision (and the wait)."""
        recorded = self._recorded or self._record()
        delay = self.bucket(request).reserve(max_wait)
        with contextlib.suppress(Exception):
            if delay is None:
                recorded.limited.add(1.0)
            else:
                recorded.allowed.add(1.0)
                recorded.waited.observe(delay)
        return delay

    def retry_after(self, request: Any = None) -> int:
        """retry_after gives the whole seconds (at least 1) until *request*'s bucket has a token."""
        return max(1, math.ceil(self.bucket(request).retry_after()))


def _limited(admitter: Admitter, retry: int) -> LimitedError:
    return LimitedError(
        f"rate limiter {admitter.name!r}: too many requests",
        limiter=admitter.name,
        headers={"Retry-After": str(retry)},
    )


def _nothing(state: None, response: Any, exc: BaseException | None) -> None:
    pass


def erroring(limiter: Admitter) -> Middleware:
    """erroring refuses a call without a token with `LimitedError`, e.g. ``erroring(limiter)``.

    go-kit's ``NewErroringLimiter``; works on sync and async endpoints alike.
    """

    admit = limiter.admit

    def start(request: Any) -> None:
        retry = admit(request)
        if retry:
            raise _limited(limiter, retry)

    def middleware(endpoint: Endpoint) -> Endpoint:
        return around(endpoint, start, _nothing)

    return middleware


def delaying(limiter: Admitter, *, max_wait: float | None = None) -> Middleware:
    """delaying holds a call until its token is due, e.g. ``delaying(limiter, max_wait=0.5)``.

    go-kit's ``NewDelayingLimiter``. The wait is bounded by the request's deadline (see
    `kitobs.endpoint.context`) and by *max_wait* seconds (by default the limiter's own
    ``max_wait``, if it has one); a call whose token would come later is
    refused at once with `LimitedError`, without waiting. An async endpoint's task sleeps; a
    sync one's thread blocks (and stops waiting when the request is cancelled).
    """
    if max_wait is not None and not max_wait >= 0.0:
        raise ConfigError("max_wait must be a number of seconds >= 0", value=max_wait)

    if max_wait is None:
        max_wait = getattr(limiter, "max_wait", None)

    def middleware(endpoint: Endpoint) -> Endpoint:
        reserve = limiter.reserve
        retry_after: Callable[[Any], int] = getattr(limiter, "retry_after", lambda r: 1)

        if is_async(endpoint):

            async def delayed_async(request: Any) -> Any:
                delay = reserve(request, _bound(max_wait))
                if delay is None:
                    raise _limited(limiter, retry_after(request))
                if delay > 0.0:
                    await asyncio.sleep(delay)
                return await endpoint(request)

            delayed_async._kitobs_async = True  # type: ignore[attr-defined]
            functools.update_wrapper(delayed_async, endpoint)
            return delayed_async

        def delayed(request: Any) -> Any:
            delay = reserve(request, _bound(max_wait))
            if delay is None:
                raise _limited(limiter, retry_after(request))
            if delay > 0.0:
                _context.current().cancelled.wait(delay)
            return endpoint(request)

        functools.update_wrapper(delayed, endpoint)
        return delayed

    return middleware


def from_metadata(name: str, default: str = "") -> Callable[[Any], Hashable]:
    """from_metadata keys by an incoming header or gRPC metadata entry, e.g. ``"x-api-key"``.

    A request without it shares the *default* key's bucket.
    """

    def key(request: Any) -> Hashable:
        value: Hashable = _context.current().metadata.get(name, default)
        return value

    return key


def from_value(name: str, field: str | None = None, default: str = "") -> Callable[[Any], Hashable]:
    """from_value keys by a request context value, e.g. ``from_value("claims", "sub")``.

    With *field*, the value's item (a mapping) or attribute of that name; a request without it
    shares the *default* key's bucket.
    """

    def key(request: Any) -> Hashable:
        value: Any = _context.current().values.get(name)
        if field is not None and value is not None:
            value = value.get(field) if isinstance(value, Mapping) else getattr(value, field, None)
        if value is None:
            return default
        return value if isinstance(value, Hashable) else str(value)

    return key


def from_config(kit: Kit | None, name: str, **overrides: Any) -> Limiter:
    """from_config builds a `Limiter` with the ``[ratelimit]`` settings of *kit*.

    E.g. ``from_config(kit, "api")`` or ``from_config(kit, "per_client", key=from_metadata(
    "x-api-key"))``: keyword arguments of `Limiter` win over the settings. *kit* None uses
    `kitobs.kit.default`.
    """
    from kitobs.kit import default

    chosen = kit if kit is not None else default()
    s = chosen.settings.ratelimit
    params: dict[str, Any] = {
        "rate": s.rate,
        "burst": s.burst,
        "max_keys": s.max_keys,
        "max_wait": s.max_wait or None,  # 0 in the settings: no bound but the deadline
    }
    params.update(overrides)
    return Limiter(name, kit=chosen, **params)
