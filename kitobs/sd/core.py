"""Core discovery types: the Instance, a static Instancer and a round-robin balancer."""

from __future__ import annotations

import contextlib
import itertools
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = [
    "Endpointer",
    "Instance",
    "RetryError",
    "RoundRobin",
    "StaticInstancer",
    "WeightedRandom",
    "retry",
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


T = TypeVar("T")

Listener = Callable[[frozenset[Instance] | Exception], None]


class StaticInstancer:
    """An Instancer over a fixed set of instances; a new listener gets the set at once."""

    def __init__(self, instances: Iterable[Instance]) -> None:
        self._instances = frozenset(instances)
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []

    def register(self, listener: Listener) -> None:
        """Add ``listener`` and hand it the current complete set."""
        with self._lock:
            self._listeners.append(listener)
        listener(self._instances)

    def deregister(self, listener: Listener) -> None:
        """Remove ``listener``; unknown listeners are ignored."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def stop(self) -> None:
        """Drop every listener."""
        with self._lock:
            self._listeners.clear()


class RoundRobin(Generic[T]):
    """Hands out the items of a snapshot in turn; raises LookupError when it is empty."""

    def __init__(self, snapshot: Callable[[], list[T]]) -> None:
        self._snapshot = snapshot
        self._counter = itertools.count()

    def choose(self) -> T:
        """Return the next item of the current snapshot."""
        items = self._snapshot()
        if not items:
            raise LookupError("no endpoints available")
        return items[next(self._counter) % len(items)]


class Endpointer(Generic[T]):
    """Turns an Instancer's sets into endpoints through ``factory``.

    Endpoints of surviving instances are kept, those of vanished instances are closed, and on an
    error the last good set keeps serving. ``endpoints()`` is a cheap snapshot read.
    """

    def __init__(
        self,
        instancer: StaticInstancer,
        factory: Callable[[Instance], tuple[T, Callable[[], None]]],
    ) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._built: dict[Instance, tuple[T, Callable[[], None]]] = {}
        self._snapshot: list[T] = []
        self.factory_errors = 0
        self._instancer = instancer
        instancer.register(self._update)

    def _update(self, event: frozenset[Instance] | Exception) -> None:
        if isinstance(event, Exception):
            return  # keep serving the last good set
        with self._lock:
            built: dict[Instance, tuple[T, Callable[[], None]]] = {}
            for instance in sorted(event, key=lambda i: (i.address, i.port)):
                if instance in self._built:
                    built[instance] = self._built[instance]
                    continue
                try:
                    built[instance] = self._factory(instance)
                except Exception:
                    self.factory_errors += 1
            vanished = [pair for inst, pair in self._built.items() if inst not in built]
            self._built = built
            self._snapshot = [endpoint for endpoint, _ in built.values()]
        for _, close in vanished:
            with contextlib.suppress(Exception):  # a failing closer must not stop the update
                close()

    def endpoints(self) -> list[T]:
        """Return the current endpoints (a snapshot list; do not mutate it)."""
        return self._snapshot

    def close(self) -> None:
        """Stop listening and close every endpoint."""
        self._instancer.deregister(self._update)
        self._update(frozenset())


class RetryError(Exception):
    """Every attempt of a retried call failed, or the deadline passed; ``errors`` holds each one."""

    def __init__(self, message: str, errors: list[BaseException]) -> None:
        super().__init__(f"{message}: " + "; ".join(repr(e) for e in errors))
        self.errors = errors


def retry(
    balancer: RoundRobin[Callable[[object], object]],
    max_attempts: int,
    timeout: float,
) -> Callable[[object], object]:
    """Return an endpoint that tries up to ``max_attempts`` endpoints within ``timeout`` seconds.

    Attempts run one after another in the caller's thread; the error raised on failure carries
    every attempt's error, including the deadline.
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts is {max_attempts}: allow at least 1 attempt")
    if timeout <= 0:
        raise ValueError(f"timeout is {timeout}: give a positive number of seconds")

    def call(request: object) -> object:
        deadline = time.monotonic() + timeout
        errors: list[BaseException] = []
        for _ in range(max_attempts):
            if time.monotonic() >= deadline:
                errors.append(TimeoutError(f"deadline of {timeout}s passed"))
                raise RetryError("retry deadline passed", errors)
            try:
                return balancer.choose()(request)
            except Exception as error:  # each attempt's error is kept for the caller
                errors.append(error)
        raise RetryError(f"all {max_attempts} attempts failed", errors)

    return call


class WeightedRandom(Generic[T]):
    """Picks an item of a snapshot of ``(item, weight)`` pairs at random, in proportion to weight.

    Weights below 1 count as 1 so that an instance discovery gave weight 0 still gets a little load.
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
            raise LookupError("no endpoints available")
        weights = [max(weight, 1) for _, weight in pairs]
        return self._random.choices([item for item, _ in pairs], weights)[0]
