"""Circuit breaker: an endpoint middleware that fails fast while a dependency is failing.

A `Breaker` follows gobreaker's state machine. It starts *closed* and lets every call through,
counting successes and failures (`Counts`); when its trip rule says so (by default
`consecutive_failures`), it *opens*: calls fail fast with `OpenError` for *open_timeout*
seconds. Then it turns *half-open* and lets *half_open_requests* probes through; further calls
meanwhile get `HalfOpenFullError`. As many probe successes close it again, one probe failure opens
it again. The call that trips the breaker returns its own result or error; only later calls are
refused. A breaker is a `kitobs.endpoint.Middleware`, for sync and async endpoints alike::

    >>> from kitobs.circuitbreaker import Breaker, OpenError
    >>> from kitobs.config import load
    >>> from kitobs.kit import Kit
    >>> from kitobs.log import nop
    >>> from kitobs.metrics import memory
    >>> from kitobs.tracing import Tracer
    >>> provider = memory.Provider()
    >>> kit = Kit(load(path=None, env={}, search=False), logger=nop(), metrics=provider,
    ...           tracer=Tracer())
    >>> breaker = Breaker("payments", consecutive_failures=2, open_timeout=30.0, kit=kit)
    >>> @breaker
    ... def charge(amount):
    ...     raise ConnectionError("payments is down")
    >>> for _ in range(3):
    ...     try:
    ...         charge(10)
    ...     except (ConnectionError, OpenError) as err:
    ...         print(type(err).__name__)
    ...         last = err
    ConnectionError
    ConnectionError
    OpenError
    >>> last.status_code, last.headers, last.outcome
    (503, {'Retry-After': '30'}, 'rejected')
    >>> breaker.state, provider.value("kitobs_breaker_state", breaker="payments")
    ('open', 2.0)

What counts as a failure is decided at construction: ``failures="exception"`` (a raised
exception), ``"business"`` (a `kitobs.endpoint.Failer` response whose ``failed()`` is not None),
``"both"`` (the default), or your own ``is_failure(response, exc)``. A `RequestError` raised by
middleware inside the breaker (a rate limiter, auth) is not a failure: it says nothing about the
dependency. Any other exception is, `asyncio.CancelledError` included (as a cancelled context is
in gobreaker), so every call that got through ends as one success or one failure.

No lock is held while the protected call runs, so callers are never serialised; the closed state's
path takes the lock once, after the call. In the half-open state exactly *half_open_requests*
calls get through, whatever the number of threads or tasks.

What it records, on the `kitobs.Kit` given as ``kit=`` (or the process-wide default, resolved at
the first call, as ``@kitobs.instrument`` does): ``kitobs_breaker_state{breaker}`` (0 closed,
1 half-open, 2 open), ``kitobs_breaker_transitions_total{breaker,from,to}``,
``kitobs_breaker_rejected_total{breaker,reason}`` (``open``, ``half_open_full``), a log line per
transition (``warn`` when opening, ``info`` otherwise) and a span event on the current span,
both carrying the counts that caused the transition. A refused call raises an `OpenError`, which
`kitobs.instrument` and the endpoint middlewares record as ``outcome="rejected"``.

`from_config` builds a breaker with the ``[circuitbreaker]`` settings;
`kitobs.circuitbreaker.pybreaker_listener` records an existing `pybreaker` breaker the same way.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from kitobs import _otel_context, contract
from kitobs.endpoint import Endpoint, RequestError, is_async, outcome
from kitobs.endpoint.context import scoped
from kitobs.errors import ConfigError

if TYPE_CHECKING:
    from kitobs.kit import Kit
    from kitobs.metrics import Counter, Gauge

__all__ = [
    "Breaker",
    "CLOSED",
    "Counts",
    "HALF_OPEN",
    "HalfOpenFullError",
    "OPEN",
    "OpenError",
    "TripRule",
    "consecutive_failures",
    "failure_ratio",
    "from_config",
]

#: The states, by their names in ``kitobs_breaker_state`` and the transition labels.
CLOSED = "closed"
#: The half-open state: a bounded number of probes go through (``kitobs_breaker_state`` 1).
HALF_OPEN = "half_open"
#: The open state: calls fail fast with `OpenError` (``kitobs_breaker_state`` 2).
OPEN = "open"

_VALUE = contract.BREAKER_STATES
_FAILURE_KINDS = ("exception", "business", "both")
# Responses that cannot be a Failer: a call answered with one succeeded, no lookup needed.
_PLAIN: frozenset[type] = frozenset((type(None), int, float, str, bytes, bool, dict, list, tuple))


class OpenError(RequestError):
    """OpenError refuses a call while the breaker is open, e.g. ``OpenError("payments is open")``.

    503 with ``Retry-After`` (the seconds until the breaker lets probes through) over HTTP,
    ``UNAVAILABLE`` over gRPC, ``outcome="rejected"`` in ``kitobs_endpoint_*``. Catching it also
    catches `HalfOpenFullError`.
    """

    status_code = 503
    grpc_status = "UNAVAILABLE"
    outcome = "rejected"

    def __init__(
        self, message: str = "", *, breaker: str = "", headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message, headers=headers)
        self.breaker = breaker


class HalfOpenFullError(OpenError):
    """HalfOpenFullError refuses a call in the half-open state once every probe slot is taken.

    E.g. the second call while the one probe of ``half_open_requests=1`` is running. Mapped like
    `OpenError`, of which it is a subclass.
    """


class Counts(NamedTuple):
    """Counts are a breaker's requests and results in its current state, as in gobreaker.

    E.g. ``Counts(requests=5, total_successes=0, total_failures=5, consecutive_successes=0,
    consecutive_failures=5)``: what a trip rule decides on, and what a transition reports.
    """

    requests: int = 0
    total_successes: int = 0
    total_failures: int = 0
    consecutive_successes: int = 0
    consecutive_failures: int = 0


TripRule = Callable[[Counts], bool]
"""TripRule decides, after a failure in the closed state, whether to open, e.g.
``lambda c: c.consecutive_failures >= 5``."""


def consecutive_failures(n: int) -> TripRule:
    """consecutive_failures opens after *n* failures in a row, e.g. ``consecutive_failures(5)``.

    Raises:
        ConfigError: *n* is below 1.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError("consecutive_failures must be an integer of at least 1", value=n)

    def rule(counts: Counts) -> bool:
        return counts.consecutive_failures >= n

    rule.__qualname__ = rule.__name__ = f"consecutive_failures({n})"
    return rule


def failure_ratio(ratio: float, *, minimum: int = 10) -> TripRule:
    """failure_ratio opens when at least *ratio* of *minimum* or more calls failed.

    E.g. ``failure_ratio(0.5, minimum=20)``; pair it with an ``interval`` so old calls age out.

    Raises:
        ConfigError: *ratio* is not in (0, 1] or *minimum* is below 1.
    """
    if not 0.0 < ratio <= 1.0:
        raise ConfigError("failure_ratio must be above 0 and at most 1", value=ratio)
    if minimum < 1:
        raise ConfigError("failure_ratio's minimum must be at least 1", value=minimum)

    def rule(counts: Counts) -> bool:
        return counts.requests >= minimum and counts.total_failures >= ratio * counts.requests

    rule.__qualname__ = rule.__name__ = f"failure_ratio({ratio}, minimum={minimum})"
    return rule


class _Recorded:
    # The breaker's metric children, logger and the name, bound once from the Kit.
    __slots__ = ("info", "rejected_full", "rejected_open", "state", "transitions", "warn")

    def __init__(self, kit: Kit, name: str, start: str) -> None:
        metrics = kit.metrics
        self.state: Gauge = metrics.declare(contract.BREAKER_STATE).labels(name)
        transitions = metrics.declare(contract.BREAKER_TRANSITIONS)
        rejected = metrics.declare(contract.BREAKER_REJECTED)
        self.transitions: dict[tuple[str, str], Counter] = {
            pair: transitions.labels(name, *pair)
            for pair in ((CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, OPEN), (HALF_OPEN, CLOSED))
        }
        self.rejected_open: Counter = rejected.labels(name, "open")
        self.rejected_full: Counter = rejected.labels(name, "half_open_full")
        # Every series known up front is shown from the start, at zero.
        self.state.set(_VALUE[start])
        for child in (*self.transitions.values(), self.rejected_open, self.rejected_full):
            child.add(0.0)
        logger = kit.logger
        self.warn = logger.warn
        self.info = logger.info


class _Transition(NamedTuple):
    # One state change, reported (log line, span event) after the lock is released.
    before: str
    after: str
    counts: Counts


class Breaker:
    """Breaker is a circuit breaker and the middleware applying it, e.g. ``Breaker("payments")``.

    ``breaker(endpoint)`` wraps a sync or async endpoint; one breaker may wrap several endpoints,
    which then share its state.

    Args:
        name: the ``breaker`` label and the name in log lines and span events.
        consecutive_failures: the default trip rule's threshold (gobreaker's default is 5 too).
        trip: a `TripRule` replacing that default, e.g. `failure_ratio`.
        open_timeout: seconds spent open before turning half-open.
        half_open_requests: probes let through when half-open (gobreaker's ``MaxRequests``).
        probe_timeout: seconds a half-open probe may take: it runs with its request context's
            deadline moved to at most that far ahead (`kitobs.endpoint.context.scoped`), so the
            client calls it makes give up in time and a hanging dependency cannot keep the
            probe slots; None leaves the deadline as it is.
        interval: seconds of the closed state's counting window (the counts start again after
            it); 0 counts until the state changes.
        failures: ``"exception"``, ``"business"`` or ``"both"``: what counts as a failure.
        is_failure: ``is_failure(response, exc) -> bool`` replacing *failures*.
        kit: where it records; None uses `kitobs.kit.default`, resolved at the first call.
        clock: a monotonic clock in seconds, e.g. a fake one in tests.

    Raises:
        ConfigError: a parameter out of range, named in the message.
    """

    __slots__ = (
        "_cf",
        "_clock",
        "_cs",
        "_custom",
        "_expiry",
        "_f",
        "_fast",
        "_generation",
        "_lock",
        "_recorded",
        "_requests",
        "_s",
        "_state",
        "_window",
        "exc_failure",
        "half_open_requests",
        "interval",
        "name",
        "open_timeout",
        "probe_timeout",
        "response_failure",
        "trip",
    )

    def __init__(
        self,
        name: str,
        *,
        consecutive_failures: int = 5,
        trip: TripRule | None = None,
        open_timeout: float = 60.0,
        half_open_requests: int = 1,
        probe_timeout: float | None = None,
        interval: float = 0.0,
        failures: str = "both",
        is_failure: Callable[[Any, BaseException | None], bool] | None = None,
        kit: Kit | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError("a breaker needs a non-empty name (its breaker label)", value=name)
        if not open_timeout >= 0.0:
            raise ConfigError("open_timeout must be a number of seconds >= 0", value=open_timeout)
        if probe_timeout is not None and not probe_timeout > 0.0:
            raise ConfigError(
                "probe_timeout must be a number of seconds above 0, or None", value=probe_timeout
            )
        if not interval >= 0.0:
            raise ConfigError("interval must be a number of seconds >= 0", value=interval)
        if isinstance(half_open_requests, bool) or half_open_requests < 1:
            raise ConfigError("half_open_requests must be at least 1", value=half_open_requests)
        if failures not in _FAILURE_KINDS:
            raise ConfigError(
                "failures is not a known kind", value=failures, allowed=_FAILURE_KINDS
            )
        if kit is not None:
            from kitobs.kit import Kit

            if not isinstance(kit, Kit):
                raise ConfigError(f"kit= takes a kitobs.Kit, not {type(kit).__name__}")
        self.name = name
        self.trip: TripRule = trip if trip is not None else _rule(consecutive_failures)
        self.open_timeout = float(open_timeout)
        self.half_open_requests = half_open_requests
        self.probe_timeout = probe_timeout
        self.interval = float(interval)
        # Decided once: how a response and an exception are judged.
        self.response_failure, self.exc_failure = _judges(failures, is_failure)
        self._custom = is_failure
        self._clock = clock
        self._window = self.interval > 0.0
        self._lock = threading.Lock()
        self._state = CLOSED
        self._generation = 0
        self._requests = self._s = self._f = self._cs = self._cf = 0
        self._expiry = clock() + self.interval if self._window else math.inf
        # Read without the lock by the closed state's path: True while closed (one attribute
        # read is atomic, and a call that read it just before a trip is ordered before the trip).
        self._fast = True
        self._recorded: _Recorded | None = _Recorded(kit, name, CLOSED) if kit else None

    # -- state --------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """state is ``"closed"``, ``"half_open"`` or ``"open"``, as of now."""
        with self._lock:
            moved = self._current(self._clock())
        self._report(moved)
        return self._state

    def counts(self) -> Counts:
        """counts gives the current state's `Counts`, e.g. ``breaker.counts().total_failures``."""
        with self._lock:
            moved = self._current(self._clock())
            counts = self._counts()
        self._report(moved)
        return counts

    def _counts(self) -> Counts:
        return Counts(self._requests, self._s, self._f, self._cs, self._cf)

    def _record(self) -> _Recorded:
        recorded = self._recorded
        if recorded is None:
            from kitobs.kit import default

            with self._lock:
                recorded = self._recorded
                if recorded is None:
                    recorded = self._recorded = _Recorded(default(), self.name, self._state)
        return recorded

    def _current(self, now: float) -> _Transition | None:
        # Under the lock: the state as of *now*, moving on when a timer ran out.
        state = self._state
        if state == CLOSED:
            if now >= self._expiry:
                self._new_generation(now)
        elif state == OPEN and now >= self._expiry:
            return self._move(HALF_OPEN, now)
        return None

    def _new_generation(self, now: float) -> None:
        self._generation += 1
        self._requests = self._s = self._f = self._cs = self._cf = 0
        state = self._state
        if state == CLOSED:
            self._expiry = now + self.interval if self._window else math.inf
        elif state == OPEN:
            self._expiry = now + self.open_timeout
        else:
            self._expiry = math.inf

    def _move(self, to: str, now: float) -> _Transition:
        # Under the lock. The counts are kept for the report before the new generation clears
        # them (gobreaker clears first and reports nothing).
        before = self._state
        counts = self._counts()
        self._state = to
        self._fast = to == CLOSED
        self._new_generation(now)
        recorded = self._recorded or self._record_locked()
        with contextlib.suppress(Exception):  # recording never raises into the caller
            recorded.state.set(_VALUE[to])
            recorded.transitions[before, to].add(1.0)
        return _Transition(before, to, counts)

    def _record_locked(self) -> _Recorded:
        from kitobs.kit import default

        recorded = self._recorded = _Recorded(default(), self.name, self._state)
        return recorded

    def _report(self, moved: _Transition | None) -> None:
        # After the lock is released: the log line and the span event of a transition.
        if moved is None:
            return
        recorded = self._recorded
        if recorded is None:
            return
        counts = moved.counts._asdict()
        with contextlib.suppress(Exception):
            emit = recorded.warn if moved.after == OPEN else recorded.info
            emit(
                "msg",
                f"circuit breaker {moved.after.replace('_', '-')}",
                "breaker",
                self.name,
                "from",
                moved.before,
                "to",
                moved.after,
                *(x for pair in counts.items() for x in pair),
            )
        with contextlib.suppress(Exception):
            span: Any = _otel_context.current_span()
            if span is not None:
                span.add_event(
                    "kitobs.breaker.transition",
                    {
                        "kitobs.breaker": self.name,
                        "kitobs.breaker.from": moved.before,
                        "kitobs.breaker.to": moved.after,
                        **{f"kitobs.breaker.{k}": v for k, v in counts.items()},
                    },
                )

    # -- the two steps around a call ----------------------------------------------------------

    def _before(self) -> int:
        # The path of every state but a plain closed one: under the lock, may refuse.
        # Returns the generation, negated when the request was counted here (half-open).
        refused: OpenError | None = None
        with self._lock:
            now = self._clock()
            moved = self._current(now)
            state = self._state
            generation = self._generation
            if state == OPEN:
                retry = max(1, math.ceil(self._expiry - now))
                refused = OpenError(
                    f"circuit breaker {self.name!r} is open",
                    breaker=self.name,
                    headers={"Retry-After": str(retry)},
                )
                counter = (self._recorded or self._record_locked()).rejected_open
            elif state == HALF_OPEN:
                if self._requests >= self.half_open_requests:
                    refused = HalfOpenFullError(
                        f"circuit breaker {self.name!r} is half-open and its "
                        f"{self.half_open_requests} probe(s) are running",
                        breaker=self.name,
                        headers={"Retry-After": "1"},
                    )
                    counter = (self._recorded or self._record_locked()).rejected_full
                else:
                    self._requests += 1
                    generation = -generation - 1
        self._report(moved)
        if refused is None:
            return generation
        with contextlib.suppress(Exception):
            counter.add(1.0)
        raise refused

    def _after(self, generation: int, failed: bool) -> None:
        counted = generation < 0
        if counted:
            generation = -generation - 1
        moved = None
        with self._lock:
            if generation != self._generation or self._state == OPEN:
                return  # the state changed meanwhile: the result belongs to no count
            if self._window and self._state == CLOSED:
                now = self._clock()
                if now >= self._expiry:
                    self._new_generation(now)
                    return
            if not counted:
                self._requests += 1
            if failed:
                self._f += 1
                self._cf += 1
                self._cs = 0
                if self._state == CLOSED:
                    if self.trip(self._counts()):
                        moved = self._move(OPEN, self._clock())
                else:
                    moved = self._move(OPEN, self._clock())
            else:
                self._s += 1
                self._cs += 1
                self._cf = 0
                if self._state == HALF_OPEN and self._cs >= self.half_open_requests:
                    moved = self._move(CLOSED, self._clock())
        if moved is not None:
            self._report(moved)

    # -- the middleware -----------------------------------------------------------------------

    def __call__(self, endpoint: Endpoint) -> Endpoint:
        """The breaker as a middleware: ``breaker(endpoint)`` guards a sync or async endpoint."""
        # Written out rather than built on `kitobs.endpoint.around`: the closed state's path is
        # this one frame (one unlocked read, the call, one lock), which around's two step calls
        # would double.
        before, after, window = self._before, self._after, self._window
        response_failure, exc_failure = self.response_failure, self.exc_failure
        # A custom predicate judges every response; the built-in ones skip plain values.
        plain = _PLAIN if self._custom is None else frozenset()
        breaker, lock = self, self._lock
        # Without a counting window a closed breaker is passed on one unlocked read; with one,
        # every call looks at the window's end under the lock.
        unwindowed = not window
        probe = self.probe_timeout

        def start() -> int:
            if breaker._recorded is None:
                # The default Kit, looked up at the first call (it may be set after wrapping).
                breaker._record()
            return before()

        if is_async(endpoint):

            async def guarded_async(request: Any) -> Any:
                # The generation is read before the state: a trip in between sends the call on
                # the locked path, and a result for an older generation is dropped.
                generation = breaker._generation
                if not (unwindowed and breaker._fast and breaker._recorded is not None):
                    generation = start()
                try:
                    if generation >= 0 or probe is None:
                        response = await endpoint(request)
                    else:  # a half-open probe, with its deadline
                        with scoped(timeout=probe):
                            response = await endpoint(request)
                except BaseException as exc:
                    after(generation, exc_failure(exc))
                    raise
                if (
                    response_failure is not None
                    and type(response) not in plain
                    and response_failure(response)
                ):
                    after(generation, True)
                elif unwindowed and generation >= 0:
                    # A closed-state success, counted here: the common case, one lock, no frame.
                    with lock:
                        if breaker._generation == generation:
                            breaker._requests += 1
                            breaker._s += 1
                            breaker._cs += 1
                            breaker._cf = 0
                else:
                    after(generation, False)
                return response

            guarded_async._kitobs_async = True  # type: ignore[attr-defined]
            functools.update_wrapper(guarded_async, endpoint)
            return guarded_async

        def guarded(request: Any) -> Any:
            # The generation is read before the state: a trip in between sends the call on
            # the locked path, and a result for an older generation is dropped.
            generation = breaker._generation
            if not (unwindowed and breaker._fast and breaker._recorded is not None):
                generation = start()
            try:
                if generation >= 0 or probe is None:
                    response = endpoint(request)
                else:  # a half-open probe, with its deadline
                    with scoped(timeout=probe):
                        response = endpoint(request)
            except BaseException as exc:
                after(generation, exc_failure(exc))
                raise
            if (
                response_failure is not None
                and type(response) not in plain
                and response_failure(response)
            ):
                after(generation, True)
            elif unwindowed and generation >= 0:
                # A closed-state success, counted here: the common case, one lock, no frame.
                with lock:
                    if breaker._generation == generation:
                        breaker._requests += 1
                        breaker._s += 1
                        breaker._cs += 1
                        breaker._cf = 0
            else:
                after(generation, False)
            return response

        functools.update_wrapper(guarded, endpoint)
        return guarded


def _rule(n: int) -> TripRule:
    return consecutive_failures(n)


def _judges(
    failures: str, is_failure: Callable[[Any, BaseException | None], bool] | None
) -> tuple[Callable[[Any], bool] | None, Callable[[BaseException], bool]]:
    # (response judge or None when no response is a failure, exception judge).
    if is_failure is not None:
        custom = is_failure

        # A predicate that raises judges the call a failure: every call that got through must
        # end as a success or a failure, or a half-open breaker would keep its probe slot.
        def response_custom(response: Any) -> bool:
            try:
                return bool(custom(response, None))
            except Exception:
                return True

        def exc_custom(exc: BaseException) -> bool:
            try:
                return bool(custom(None, exc))
            except Exception:
                return True

        return response_custom, exc_custom

    def business(response: Any) -> bool:
        return outcome(response, None)[1] is not None

    def raised(exc: BaseException) -> bool:
        return not isinstance(exc, RequestError)

    def never(exc: BaseException) -> bool:
        return False

    if failures == "exception":
        return None, raised
    if failures == "business":
        return business, never
    return business, raised


def from_config(kit: Kit | None, name: str, **overrides: Any) -> Breaker:
    """from_config builds a `Breaker` with the ``[circuitbreaker]`` settings of *kit*.

    E.g. ``from_config(kit, "payments")``, or ``from_config(kit, "payments", open_timeout=5.0)``:
    keyword arguments of `Breaker` win over the settings. *kit* None uses `kitobs.kit.default`.
    """
    from kitobs.kit import default

    chosen = kit if kit is not None else default()
    s = chosen.settings.circuitbreaker
    params: dict[str, Any] = {
        "consecutive_failures": s.consecutive_failures,
        "open_timeout": s.open_timeout,
        "half_open_requests": s.half_open_requests,
        "probe_timeout": s.probe_timeout or None,  # 0 in the settings: the deadline as it is
        "interval": s.interval,
        "failures": s.failures,
    }
    params.update(overrides)
    return Breaker(name, kit=chosen, **params)
