"""Core discovery types: instances, Instancers, the Endpointer, balancers and retry.

An `Instancer` publishes the complete set of instances of one service (or an error) to its
subscribers; an `Endpointer` turns each set into endpoints through a factory; a `Balancer` picks
one endpoint per call; `retry` (and `retry_async`) tries several within one deadline. What each
records on the `kitobs.Kit` (``kit=``, or the process-wide default resolved at first use, as
``@kitobs.instrument`` does) is listed in `kitobs.sd`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast

from kitobs import contract
from kitobs.endpoint import context as _ctx
from kitobs.errors import ConfigError

if TYPE_CHECKING:
    from kitobs.kit import Kit
    from kitobs.metrics import Counter, Gauge, Histogram

__all__ = [
    "Balancer",
    "Endpointer",
    "Event",
    "Instance",
    "InstanceCache",
    "Instancer",
    "LeastOutstanding",
    "Listener",
    "NoEndpointsError",
    "Registrar",
    "RetryError",
    "RoundRobin",
    "StaticInstancer",
    "WeightedRandom",
    "parse_instance",
    "retry",
    "retry_async",
    "retry_async_from_config",
    "retry_from_config",
]


@dataclass(frozen=True, slots=True)
class Instance:
    """One discovered instance: where it listens and what discovery said about it.

    Example: ``Instance("10.0.0.5", 8080, weight=10, tags=("blue",))``.
    """

    address: str
    port: int
    priority: int = 0
    weight: int = 1
    tags: tuple[str, ...] = ()
    raw: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.address:
            raise ValueError("Instance address is empty: pass a host name or IP address")
        if not 0 < self.port < 65536:
            raise ValueError(f"Instance port {self.port} is out of range: use 1 to 65535")


def parse_instance(text: str) -> Instance:
    """parse_instance reads ``"host:port"`` (or ``"[v6]:port"``), e.g. an etcd or znode value.

    Raises:
        ValueError: the text is not a host and a port.
    """
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"instance {text!r} is not 'host:port'")
    return Instance(host.strip("[]"), int(port), raw=text)


T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

Event = frozenset[Instance] | Exception
"""Event is what an Instancer publishes: the complete set of instances, or the error it hit."""
Listener = Callable[[Event], None]
"""Listener receives an Instancer's events; it must not block (it runs in the Instancer)."""


class Instancer(Protocol):
    """Instancer publishes the complete set of a service's instances, e.g. `StaticInstancer`.

    A new subscriber gets the current state at once. After an error the set is stale, and on
    recovery the Instancer publishes a fresh full set. An event equal to the last one is dropped.
    """

    def subscribe(self, listener: Listener) -> None:
        """subscribe adds *listener* and hands it the current state."""

    def unsubscribe(self, listener: Listener) -> None:
        """unsubscribe removes *listener*; an unknown one is ignored."""

    def stop(self) -> None:
        """stop ends the Instancer's watching and drops every listener."""


class Registrar(Protocol):
    """Registrar announces this process as an instance of a service, e.g. an etcd key with a lease.

    Errors are logged, not raised: registration is retried by the backend.
    """

    def register(self) -> None:
        """register announces the instance (and keeps it announced)."""

    def deregister(self) -> None:
        """deregister removes only this instance's announcement."""


class Balancer(Protocol[T_co]):
    """Balancer picks one endpoint per call, e.g. `RoundRobin` over `Endpointer.endpoints`."""

    def choose(self) -> T_co:
        """choose returns an endpoint; raises `NoEndpointsError` when there is none."""


class NoEndpointsError(LookupError):
    """NoEndpointsError is raised by a balancer with nothing to choose from: "no endpoints"."""

    def __init__(self, message: str = "no endpoints available") -> None:
        super().__init__(message)


# --------------------------------------------------------------------------------------------
# Recording, bound once per service.


def _resolve(kit: Kit | None) -> Kit:
    if kit is not None:
        from kitobs.kit import Kit as _Kit

        if not isinstance(kit, _Kit):
            raise ConfigError(f"kit= takes a kitobs.Kit, not {type(kit).__name__}")
        return kit
    from kitobs.kit import default

    return default()


class _SdRecorded:
    # The discovery metrics of one service and the logger's warn.
    __slots__ = ("errors", "instances", "last_update", "updates", "warn")

    def __init__(self, kit: Kit, service: str) -> None:
        metrics = kit.metrics
        self.instances: Gauge = metrics.declare(contract.SD_INSTANCES).labels(service)
        events = metrics.declare(contract.SD_EVENTS)
        self.updates: Counter = events.labels(service, "update")
        self.errors: Counter = events.labels(service, "error")
        self.last_update: Gauge = metrics.declare(contract.SD_LAST_UPDATE).labels(service)
        # Known up front: shown from the start, at zero.
        self.instances.set(0.0)
        self.updates.add(0.0)
        self.errors.add(0.0)
        self.warn = kit.logger.warn


class _LbRecorded:
    # The balancing metrics of one service, the tracer and the span names.
    __slots__ = ("attempts", "no_endpoints", "per_call", "span")

    def __init__(self, kit: Kit, service: str) -> None:
        metrics = kit.metrics
        attempts = metrics.declare(contract.LB_ATTEMPTS)
        self.attempts: dict[str, Counter] = {
            outcome: attempts.labels(service, outcome) for outcome in contract.LB_ATTEMPT_OUTCOMES
        }
        self.per_call: Histogram = metrics.declare(contract.LB_ATTEMPTS_PER_CALL).labels(service)
        self.no_endpoints: Counter = metrics.declare(contract.LB_NO_ENDPOINTS).labels(service)
        for child in (*self.attempts.values(), self.no_endpoints):
            child.add(0.0)
        self.span = kit.tracer.span


class _Lazy(Generic[T]):
    # A recorder built on first use: with kit=None the default Kit is looked up then, not at
    # construction (the default may be configured later, as for @kitobs.instrument).
    __slots__ = ("_build", "_kit", "_lock", "_service", "_value")

    def __init__(self, build: Callable[[Kit, str], T], kit: Kit | None, service: str) -> None:
        self._build = build
        self._kit = kit
        self._service = service
        self._lock = threading.Lock()
        self._value: T | None = build(_resolve(kit), service) if kit is not None else None

    def get(self) -> T:
        value = self._value
        if value is None:
            with self._lock:
                value = self._value
                if value is None:
                    value = self._value = self._build(_resolve(None), self._service)
        return value


# --------------------------------------------------------------------------------------------
# Instancers.


class InstanceCache:
    """InstanceCache is the shared part of an Instancer, e.g. ``InstanceCache("users")``.

    A backend calls `publish` with each complete set or error; the cache drops an event equal to
    the last one, hands every subscriber each new event, and gives a new subscriber the current
    state. It records ``kitobs_sd_instances``, ``kitobs_sd_events_total`` and
    ``kitobs_sd_last_update_timestamp_seconds`` for *service*, and logs at warn when the service
    drops to zero instances or the backend loses its server (the first error after a good set).
    """

    def __init__(self, service: str, *, kit: Kit | None = None) -> None:
        self.service = service
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []
        self._state: Event | None = None
        self._recorded = _Lazy(_SdRecorded, kit, service)

    @property
    def state(self) -> Event | None:
        """The last event published (None before the first)."""
        return self._state

    def publish(self, event: Event) -> bool:
        """publish hands *event* to every subscriber; False when it equals the last (dropped)."""
        with self._lock:
            previous = self._state
            if _same(previous, event):
                return False
            self._state = event
            listeners = list(self._listeners)
        self._record(previous, event)
        for listener in listeners:
            with contextlib.suppress(Exception):  # one failing listener must not starve others
                listener(event)
        return True

    def _record(self, previous: Event | None, event: Event) -> None:
        with contextlib.suppress(Exception):  # recording never raises
            recorded = self._recorded.get()
            if isinstance(event, Exception):
                recorded.errors.add(1)
                if not isinstance(previous, Exception):
                    recorded.warn(
                        "msg", "service discovery lost its server, keeping the last instances",
                        "service", self.service, "error", repr(event),
                    )  # fmt: skip
                return
            recorded.updates.add(1)
            recorded.instances.set(float(len(event)))
            recorded.last_update.set(time.time())
            if not event and previous is not None:
                recorded.warn("msg", "service has no instances", "service", self.service)

    def subscribe(self, listener: Listener) -> None:
        """subscribe adds *listener* and hands it the current state, if there is one yet."""
        with self._lock:
            self._listeners.append(listener)
            state = self._state
        if state is not None:
            listener(state)

    def unsubscribe(self, listener: Listener) -> None:
        """unsubscribe removes *listener*; an unknown one is ignored."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def stop(self) -> None:
        """stop drops every listener."""
        with self._lock:
            self._listeners.clear()


def _same(a: Event | None, b: Event) -> bool:
    if isinstance(a, Exception) and isinstance(b, Exception):
        return type(a) is type(b) and a.args == b.args
    if isinstance(a, frozenset) and isinstance(b, frozenset):
        # Instance equality leaves out ``raw``; weights and priorities count.
        return a == b
    return False


class StaticInstancer:
    """An Instancer over a fixed set of instances; a new listener gets the set at once.

    Example: ``StaticInstancer([Instance("10.0.0.5", 8080)], service="users")``.
    """

    def __init__(
        self, instances: Iterable[Instance], *, service: str = "static", kit: Kit | None = None
    ) -> None:
        self.service = service
        self._cache = InstanceCache(service, kit=kit)
        self._cache.publish(frozenset(instances))

    def subscribe(self, listener: Listener) -> None:
        """Add ``listener`` and hand it the current complete set."""
        self._cache.subscribe(listener)

    def unsubscribe(self, listener: Listener) -> None:
        """Remove ``listener``; unknown listeners are ignored."""
        self._cache.unsubscribe(listener)

    def update(self, instances: Iterable[Instance]) -> None:
        """update replaces the set, e.g. from a reloaded configuration file."""
        self._cache.publish(frozenset(instances))

    def stop(self) -> None:
        """Drop every listener."""
        self._cache.stop()

    # The names of the first releases.
    register = subscribe
    deregister = unsubscribe


# --------------------------------------------------------------------------------------------
# Endpointer and balancers.

Factory = Callable[[Instance], tuple[T, Callable[[], None] | None]]


class Endpointer(Generic[T]):
    """Turns an Instancer's sets into endpoints through ``factory``.

    ``factory(instance)`` returns ``(endpoint, close)`` (``close`` may be None); it is called once
    per new instance. Endpoints of surviving instances are kept, those of vanished instances are
    closed, and on an error the last good set keeps serving, unless *invalidate_after* is given:
    then, that many seconds after the first error with no good set since, every endpoint is
    closed and the balancers see none until a good set arrives. A factory error skips the
    instance and counts ``kitobs_sd_factory_errors_total``. ``endpoints()`` is a cheap snapshot
    read (a new list object on every change).

    Example: ``Endpointer(instancer, lambda i: (ClientEndpoint("GET", url(i)), None))``.
    """

    def __init__(
        self,
        instancer: Instancer,
        factory: Factory[T],
        *,
        service: str | None = None,
        invalidate_after: float | None = None,
        kit: Kit | None = None,
    ) -> None:
        if invalidate_after is not None and invalidate_after < 0:
            raise ConfigError(
                f"invalidate_after is {invalidate_after}: give seconds >= 0, or None to keep the "
                "last good endpoints on errors"
            )
        self.service = service if service is not None else getattr(instancer, "service", "")
        self._factory = factory
        self._invalidate_after = invalidate_after
        self._lock = threading.Lock()
        self._built: dict[Instance, tuple[T, Callable[[], None] | None]] = {}
        self._snapshot: list[T] = []
        self._weighted: list[tuple[T, int]] = []
        self._instance_of: dict[int, Instance] = {}
        self._failing_since: float | None = None
        self.last_error: Exception | None = None
        self.factory_errors = 0
        self._factory_errors = _Lazy(_factory_counter, kit, self.service)
        self._instancer = instancer
        instancer.subscribe(self._update)

    def _update(self, event: Event) -> None:
        if isinstance(event, Exception):
            self.last_error = event
            if self._failing_since is None:
                self._failing_since = time.monotonic()
            return  # keep serving the last good set (see endpoints() for invalidate_after)
        self._failing_since = None
        self.last_error = None
        self._replace(event)

    def _replace(self, instances: frozenset[Instance]) -> None:
        with self._lock:
            built: dict[Instance, tuple[T, Callable[[], None] | None]] = {}
            # Only the lowest priority group serves (RFC 2782); backends without priorities
            # give every instance priority 0.
            lowest = min((i.priority for i in instances), default=0)
            for instance in sorted(instances, key=lambda i: (i.address, i.port)):
                if instance.priority != lowest:
                    continue
                if instance in self._built:
                    built[instance] = self._built[instance]
                    continue
                try:
                    built[instance] = self._factory(instance)
                except Exception:
                    self.factory_errors += 1
                    with contextlib.suppress(Exception):  # recording never raises
                        self._factory_errors.get().add(1)
            vanished = [pair for inst, pair in self._built.items() if inst not in built]
            self._built = built
            self._snapshot = [endpoint for endpoint, _ in built.values()]
            self._weighted = [(endpoint, inst.weight) for inst, (endpoint, _) in built.items()]
            self._instance_of = {id(endpoint): inst for inst, (endpoint, _) in built.items()}
        for _, close in vanished:
            if close is not None:
                with contextlib.suppress(Exception):  # a failing closer must not stop the update
                    close()

    def _check_invalid(self) -> None:
        since = self._failing_since
        if (
            since is not None
            and self._invalidate_after is not None
            and self._snapshot
            and time.monotonic() - since >= self._invalidate_after
        ):
            self._replace(frozenset())

    def endpoints(self) -> list[T]:
        """Return the current endpoints (a snapshot list; do not mutate it)."""
        if self._failing_since is not None:
            self._check_invalid()
        return self._snapshot

    def weighted(self) -> list[tuple[T, int]]:
        """weighted gives ``(endpoint, weight)`` pairs, e.g. for `WeightedRandom`."""
        if self._failing_since is not None:
            self._check_invalid()
        return self._weighted

    def instance_of(self, endpoint: object) -> Instance | None:
        """instance_of gives the instance *endpoint* was built for (None if it is not current)."""
        return self._instance_of.get(id(endpoint))

    def close(self) -> None:
        """Stop listening and close every endpoint."""
        self._instancer.unsubscribe(self._update)
        self._replace(frozenset())


def _factory_counter(kit: Kit, service: str) -> Counter:
    counter = kit.metrics.declare(contract.SD_FACTORY_ERRORS).labels(service)
    counter.add(0.0)
    return counter


class RoundRobin(Generic[T]):
    """Hands out the items of a snapshot in turn; raises NoEndpointsError when it is empty."""

    def __init__(self, snapshot: Callable[[], list[T]]) -> None:
        self._snapshot = snapshot
        self._counter = itertools.count()

    def choose(self) -> T:
        """Return the next item of the current snapshot."""
        items = self._snapshot()
        if not items:
            raise NoEndpointsError()
        return items[next(self._counter) % len(items)]


class WeightedRandom(Generic[T]):
    """Picks an item of a snapshot of ``(item, weight)`` pairs at random, in proportion to weight.

    Weights below 1 count as 1 so that an instance discovery gave weight 0 still gets a little load
    (RFC 2782 gives weight 0 "a very small chance"). Use it with `Endpointer.weighted`.
    """

    def __init__(
        self, snapshot: Callable[[], list[tuple[T, int]]], seed: int | None = None
    ) -> None:
        self._snapshot = snapshot
        self._random = random.Random(seed)

    def choose(self) -> T:
        """Return one item of the current snapshot, drawn by weight."""
        pairs = self._snapshot()
        if not pairs:
            raise NoEndpointsError()
        weights = [max(weight, 1) for _, weight in pairs]
        return self._random.choices([item for item, _ in pairs], weights)[0]


class _Counted:
    # An endpoint with its count of calls in flight; the balancer compares the counts.
    __slots__ = ("__weakref__", "endpoint", "in_flight")

    def __init__(self, endpoint: Callable[[Any], Any]) -> None:
        self.endpoint = endpoint
        self.in_flight = 0

    def __call__(self, request: Any) -> Any:
        # += on an attribute is not atomic across threads; a count off by one now and then
        # only shifts a choice, never a result.
        self.in_flight += 1
        try:
            return self.endpoint(request)
        finally:
            self.in_flight -= 1


class _AsyncCounted(_Counted):
    __slots__ = ()

    async def __call__(self, request: Any) -> Any:
        self.in_flight += 1
        try:
            return await self.endpoint(request)
        finally:
            self.in_flight -= 1


class LeastOutstanding(Generic[T]):
    """LeastOutstanding picks the less loaded of two random endpoints ("power of two choices").

    Load is the number of calls in flight through this balancer. It returns a wrapper of the
    endpoint that counts the call; `retry` maps it back to its instance. Sync and async
    endpoints both work (an ``async def`` endpoint, or pass ``asynchronous=True``).

    Example: ``LeastOutstanding(endpointer.endpoints)``.
    """

    def __init__(
        self,
        snapshot: Callable[[], list[T]],
        *,
        asynchronous: bool | None = None,
        seed: int | None = None,
    ) -> None:
        self._snapshot = snapshot
        self._random = random.Random(seed)
        self._asynchronous = asynchronous
        self._seen: list[T] | None = None
        self._counted: list[_Counted] = []

    def _wrap(self, items: list[T]) -> list[_Counted]:
        from kitobs.endpoint import is_async

        old = {id(c.endpoint): c for c in self._counted}
        wrapped: list[_Counted] = []
        for item in items:
            counted = old.get(id(item))
            if counted is None:
                asynchronous = self._asynchronous
                if asynchronous is None:
                    asynchronous = is_async(cast("Callable[..., Any]", item))
                counted = (_AsyncCounted if asynchronous else _Counted)(
                    cast("Callable[[Any], Any]", item)
                )
            wrapped.append(counted)
        self._counted = wrapped
        self._seen = items
        return wrapped

    def choose(self) -> T:
        """Return the less loaded of two endpoints of the current snapshot (wrapped)."""
        items = self._snapshot()
        # The wrappers are rebuilt when the snapshot changes: `Endpointer.endpoints` gives a new
        # list object then; the length check catches a list changed in place.
        counted = self._counted
        if items is not self._seen or len(items) != len(counted):
            counted = self._wrap(items)
        n = len(counted)
        if n == 0:
            raise NoEndpointsError()
        if n == 1:
            return counted[0]  # type: ignore[return-value]
        a, b = self._random.sample(range(n), 2)
        first, second = counted[a], counted[b]
        return first if first.in_flight <= second.in_flight else second  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# Retry.


class RetryError(Exception):
    """Every attempt of a retried call failed, or the deadline passed; ``errors`` holds each one.

    ``final`` is the last error (a `TimeoutError` when the deadline ended the call).
    """

    def __init__(self, message: str, errors: list[BaseException]) -> None:
        super().__init__(f"{message}: " + "; ".join(repr(e) for e in errors))
        self.errors = errors
        self.final: BaseException | None = errors[-1] if errors else None


_ATTEMPT = "kitobs.sd.attempt"
_INSTANCE = "kitobs.sd.instance"
_SERVICE = "kitobs.sd.service"


def _check_retry(max_attempts: int, timeout: float | None) -> None:
    if max_attempts < 1:
        raise ConfigError(f"max_attempts is {max_attempts}: allow at least 1 attempt")
    if timeout is not None and timeout <= 0:
        raise ConfigError(f"timeout is {timeout}: give a positive number of seconds, or None")


def _describe(instance_of: Callable[[Any], Instance | None] | None, endpoint: Any) -> str:
    if instance_of is None:
        return ""
    target = getattr(endpoint, "endpoint", endpoint) if isinstance(endpoint, _Counted) else endpoint
    instance = instance_of(target)
    return "" if instance is None else f"{instance.address}:{instance.port}"


def _deadline_of(timeout: float | None) -> float | None:
    own = None if timeout is None else time.monotonic() + timeout
    outer = _ctx.current().deadline
    if outer is None:
        return own
    return outer if own is None else min(own, outer)


def retry(
    balancer: Balancer[Callable[[Any], Any]],
    max_attempts: int = 3,
    timeout: float | None = 1.0,
    *,
    service: str = "",
    instance_of: Callable[[Any], Instance | None] | None = None,
    kit: Kit | None = None,
) -> Callable[[Any], Any]:
    """Return an endpoint that tries up to ``max_attempts`` endpoints within one deadline.

    *max_attempts* counts every attempt, the first included (go-kit's ``Retry(max, ...)``). The
    deadline is the earlier of the request context's and *timeout* seconds from the call (None:
    the context's only). Each attempt runs in a derived request context with that deadline, so
    the client transport's timeout is the time left; attempts run one after another in the
    caller's thread. A balancer with no endpoints counts as a failed attempt; a retry prefers an
    endpoint the call has not tried yet (a few re-picks of the balancer). On failure it
    raises `RetryError` carrying every attempt's error, a `TimeoutError` last when the deadline
    ended it.

    Records one span per attempt under the current span (``kitobs.sd.attempt``, with the
    attempt number and the instance given by *instance_of*, e.g. `Endpointer.instance_of`),
    ``kitobs_lb_attempts_total{service,outcome}``, ``kitobs_lb_attempts_per_call{service}`` and
    ``kitobs_lb_no_endpoints_total{service}``.
    """
    _check_retry(max_attempts, timeout)
    recorded = _Lazy(_LbRecorded, kit, service)

    def call(request: Any) -> Any:
        rec = recorded.get()
        deadline = _deadline_of(timeout)
        errors: list[BaseException] = []
        tried: list[int] = []
        attempt = 0
        try:
            while attempt < max_attempts:
                if deadline is not None and time.monotonic() >= deadline:
                    errors.append(_ctx.DeadlineExceeded(f"retry deadline passed ({service})"))
                    _count(rec, "timeout")
                    raise RetryError("retry deadline passed", errors)
                attempt += 1
                try:
                    endpoint = _choose(balancer, tried)
                except LookupError as error:
                    errors.append(error)
                    _count(rec, "no_endpoints")
                    with contextlib.suppress(Exception):
                        rec.no_endpoints.add(1)
                    continue
                with rec.span(_ATTEMPT) as span:
                    _mark_attempt(span, service, attempt, _describe(instance_of, endpoint))
                    try:
                        with _ctx.scoped(deadline=deadline):
                            response = endpoint(request)
                    except Exception as error:  # each attempt's error is kept for the caller
                        errors.append(error)
                        _count(rec, "error")
                        _fail(span, error)
                        continue
                _count(rec, "success")
                return response
            raise RetryError(f"all {max_attempts} attempts failed", errors)
        finally:
            with contextlib.suppress(Exception):
                rec.per_call.observe(attempt)

    return call


def retry_async(
    balancer: Balancer[Callable[[Any], Awaitable[Any]]],
    max_attempts: int = 3,
    timeout: float | None = 1.0,
    *,
    service: str = "",
    instance_of: Callable[[Any], Instance | None] | None = None,
    kit: Kit | None = None,
) -> Callable[[Any], Awaitable[Any]]:
    """retry_async is `retry` for async endpoints: ``await retry_async(balancer)(request)``.

    An attempt still running when the deadline passes is cancelled (its task gets
    `asyncio.CancelledError`), and its `TimeoutError` ends the `RetryError`'s errors.
    """
    _check_retry(max_attempts, timeout)
    recorded = _Lazy(_LbRecorded, kit, service)

    async def call(request: Any) -> Any:
        rec = recorded.get()
        deadline = _deadline_of(timeout)
        errors: list[BaseException] = []
        tried: list[int] = []
        attempt = 0
        try:
            while attempt < max_attempts:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    errors.append(_ctx.DeadlineExceeded(f"retry deadline passed ({service})"))
                    _count(rec, "timeout")
                    raise RetryError("retry deadline passed", errors)
                attempt += 1
                try:
                    endpoint = _choose(balancer, tried)
                except LookupError as error:
                    errors.append(error)
                    _count(rec, "no_endpoints")
                    with contextlib.suppress(Exception):
                        rec.no_endpoints.add(1)
                    continue
                with rec.span(_ATTEMPT) as span:
                    _mark_attempt(span, service, attempt, _describe(instance_of, endpoint))
                    try:
                        with _ctx.scoped(deadline=deadline):
                            response = await asyncio.wait_for(endpoint(request), left)
                    except TimeoutError as error:
                        errors.append(error)
                        _count(rec, "timeout")
                        _fail(span, error)
                        if deadline is not None and time.monotonic() >= deadline:
                            raise RetryError("retry deadline passed", errors) from None
                        continue
                    except Exception as error:  # each attempt's error is kept for the caller
                        errors.append(error)
                        _count(rec, "error")
                        _fail(span, error)
                        continue
                _count(rec, "success")
                return response
            raise RetryError(f"all {max_attempts} attempts failed", errors)
        finally:
            with contextlib.suppress(Exception):
                rec.per_call.observe(attempt)

    return call


def _choose(balancer: Balancer[Any], tried: list[int]) -> Any:
    # A retry prefers an endpoint this call has not tried yet: with callers sharing a balancer,
    # consecutive picks of one call can land on the same (failing) endpoint. A few re-picks,
    # then whatever the balancer gives (there may be a single endpoint).
    endpoint = balancer.choose()
    if tried:
        for _ in range(_REPICKS):
            if _identity(endpoint) not in tried:
                break
            endpoint = balancer.choose()
    tried.append(_identity(endpoint))
    return endpoint


_REPICKS = 4


def _identity(endpoint: Any) -> int:
    return id(endpoint.endpoint if isinstance(endpoint, _Counted) else endpoint)


def _count(rec: _LbRecorded, outcome: str) -> None:
    with contextlib.suppress(Exception):  # recording never raises
        rec.attempts[outcome].add(1)


def _mark_attempt(span: Any, service: str, attempt: int, instance: str) -> None:
    with contextlib.suppress(Exception):  # recording never raises
        span.set_attribute(_ATTEMPT, attempt)
        span.set_attribute(_SERVICE, service)
        if instance:
            span.set_attribute(_INSTANCE, instance)


def _fail(span: Any, error: BaseException) -> None:
    with contextlib.suppress(Exception):  # recording never raises
        span.fail(error, escaped=False)


def _retry_params(kit: Kit | None, overrides: dict[str, Any]) -> tuple[Kit, dict[str, Any]]:
    chosen = _resolve(kit)
    s = chosen.settings.sd
    params: dict[str, Any] = {
        "max_attempts": s.retry_max_attempts,
        "timeout": s.retry_timeout or None,  # 0 in the settings: the request's deadline only
    }
    params.update(overrides)
    return chosen, params


def retry_from_config(
    balancer: Balancer[Callable[[Any], Any]],
    *,
    service: str = "",
    kit: Kit | None = None,
    **overrides: Any,
) -> Callable[[Any], Any]:
    """retry_from_config is `retry` with the ``[sd]`` settings of *kit* (default Kit if None).

    E.g. ``retry_from_config(balancer, service="users")``; keyword arguments of `retry` win.
    """
    chosen, params = _retry_params(kit, overrides)
    return retry(balancer, service=service, kit=chosen, **params)


def retry_async_from_config(
    balancer: Balancer[Callable[[Any], Awaitable[Any]]],
    *,
    service: str = "",
    kit: Kit | None = None,
    **overrides: Any,
) -> Callable[[Any], Awaitable[Any]]:
    """retry_async_from_config is `retry_async` with the ``[sd]`` settings of *kit*."""
    chosen, params = _retry_params(kit, overrides)
    return retry_async(balancer, service=service, kit=chosen, **params)
