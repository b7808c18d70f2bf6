"""pybreaker_listener: record an existing ``pybreaker`` breaker the way a kitobs `Breaker` records.

For programs that already run `pybreaker` (extra ``kitobs[pybreaker]``). `instrument` adds a
`Listener` to the breaker: each state change sets ``kitobs_breaker_state{breaker}``, counts
``kitobs_breaker_transitions_total{breaker,from,to}`` (pybreaker's ``half-open`` is written
``half_open``), writes a log line (``warn`` when opening) and adds a span event carrying
pybreaker's counters (``fail_counter``, ``success_counter``) as they were when it changed.

pybreaker refuses a call before any listener hears of it, so rejections are counted by
`protecting`, the middleware that calls an endpoint through the breaker: a refused call raises
`kitobs.circuitbreaker.OpenError` (``outcome="rejected"``) and counts
``kitobs_breaker_rejected_total{reason="open"}``; the call that trips the breaker still gets
pybreaker's own error. pybreaker holds its lock across every call and has no asyncio support, so
`protecting` takes sync endpoints only::

    breaker = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60, name="payments")
    charge = protecting(breaker, kit=kit)(charge)
"""

from __future__ import annotations

import contextlib
import functools
from typing import TYPE_CHECKING, Any

import pybreaker

from kitobs import _otel_context, contract
from kitobs.circuitbreaker import OpenError
from kitobs.endpoint import Endpoint, Middleware, is_async
from kitobs.errors import ConfigError

if TYPE_CHECKING:
    from kitobs.kit import Kit
    from kitobs.metrics import Counter, Gauge

__all__ = ["Listener", "instrument", "protecting"]

_NAMES = {
    pybreaker.STATE_CLOSED: "closed",
    pybreaker.STATE_HALF_OPEN: "half_open",
    pybreaker.STATE_OPEN: "open",
}


class Listener(pybreaker.CircuitBreakerListener):
    """Listener records a pybreaker breaker's state changes, e.g. ``Listener("payments", kit)``.

    *kit* None uses `kitobs.kit.default`, resolved at the first state change or rejection.
    """

    def __init__(self, name: str, kit: Kit | None = None) -> None:
        self.name = name
        self._kit = kit
        self._bound: tuple[Gauge, Counter, Counter, Any, Any] | None = None
        if kit is not None:
            self._bind()

    def _bind(self) -> tuple[Gauge, Counter, Counter, Any, Any]:
        bound = self._bound
        if bound is None:
            from kitobs.kit import default

            kit = self._kit if self._kit is not None else default()
            metrics, name = kit.metrics, self.name
            state = metrics.declare(contract.BREAKER_STATE).labels(name)
            transitions = metrics.declare(contract.BREAKER_TRANSITIONS)
            rejected = metrics.declare(contract.BREAKER_REJECTED)
            for before, after in (
                ("closed", "open"),
                ("open", "half_open"),
                ("half_open", "open"),
                ("half_open", "closed"),
            ):
                transitions.labels(name, before, after).add(0.0)
            open_ = rejected.labels(name, "open")
            open_.add(0.0)
            rejected.labels(name, "half_open_full").add(0.0)
            bound = self._bound = (state, transitions, open_, kit.logger.warn, kit.logger.info)
        return bound

    def rejected(self) -> None:
        """rejected counts a call the breaker refused (``reason="open"``)."""
        with contextlib.suppress(Exception):
            self._bind()[2].add(1.0)

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        """state_change records one transition; pybreaker calls it."""
        with contextlib.suppress(Exception):  # recording never raises into the caller
            state, transitions, _, warn, info = self._bind()
            before = _NAMES.get(old_state.name, old_state.name) if old_state else "closed"
            after = _NAMES.get(new_state.name, new_state.name)
            state.set(contract.BREAKER_STATES.get(after, 0))
            transitions.labels(self.name, before, after).add(1.0)
            fails, successes = cb.fail_counter, cb.success_counter
            (warn if after == "open" else info)(
                "msg",
                f"circuit breaker {after.replace('_', '-')}",
                "breaker",
                self.name,
                "from",
                before,
                "to",
                after,
                "fail_counter",
                fails,
                "success_counter",
                successes,
            )
            span: Any = _otel_context.current_span()
            if span is not None:
                span.add_event(
                    "kitobs.breaker.transition",
                    {
                        "kitobs.breaker": self.name,
                        "kitobs.breaker.from": before,
                        "kitobs.breaker.to": after,
                        "kitobs.breaker.fail_counter": fails,
                        "kitobs.breaker.success_counter": successes,
                    },
                )


def instrument(
    breaker: pybreaker.CircuitBreaker, *, name: str | None = None, kit: Kit | None = None
) -> Listener:
    """instrument adds a `Listener` to *breaker* and sets its state gauge, e.g. ``(cb, kit=kit)``.

    *name* is the ``breaker`` label, by default the pybreaker breaker's own name.

    Raises:
        ConfigError: the breaker has no name and *name* is not given.
    """
    chosen = name or breaker.name
    if not chosen:
        raise ConfigError(
            "the pybreaker breaker has no name: pass name= (the breaker label)",
            allowed="pybreaker.CircuitBreaker(name=...) or instrument(cb, name=...)",
        )
    listener = Listener(chosen, kit)
    breaker.add_listener(listener)
    if kit is not None:
        with contextlib.suppress(Exception):
            current = _NAMES.get(breaker.current_state, "closed")
            listener._bind()[0].set(contract.BREAKER_STATES[current])
    return listener


def protecting(
    breaker: pybreaker.CircuitBreaker, *, name: str | None = None, kit: Kit | None = None
) -> Middleware:
    """protecting calls each request through *breaker*, e.g. ``protecting(cb, kit=kit)(ep)``.

    Instruments *breaker* (see `instrument`) and turns its refusals into `OpenError`.

    Raises:
        TypeError: when wrapping an async endpoint (pybreaker has no asyncio support).
    """
    listener = instrument(breaker, name=name, kit=kit)

    def middleware(endpoint: Endpoint) -> Endpoint:
        if is_async(endpoint):
            raise TypeError(
                "pybreaker cannot guard an async endpoint (it has no asyncio support); "
                "use kitobs.circuitbreaker.Breaker"
            )

        def protected(request: Any) -> Any:
            reached = False

            def call() -> Any:
                nonlocal reached
                reached = True
                return endpoint(request)

            try:
                return breaker.call(call)
            except pybreaker.CircuitBreakerError as err:
                if reached:
                    raise  # the call that tripped the breaker: its own error
                listener.rejected()
                raise OpenError(
                    f"circuit breaker {listener.name!r} is open",
                    breaker=listener.name,
                    headers={"Retry-After": str(max(1, int(breaker.reset_timeout)))},
                ) from err

        functools.update_wrapper(protected, endpoint)
        return protected

    return middleware
