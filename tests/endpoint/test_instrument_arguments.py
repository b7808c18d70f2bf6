"""instrument's arguments: a string is the name; other misuse fails at decoration."""

from __future__ import annotations

from typing import Any

import pytest

from kitobs.config import load
from kitobs.endpoint.instrument import instrument
from kitobs.kit import Kit, reset_default, set_default
from kitobs.log import capture
from kitobs.metrics import memory
from kitobs.tracing._tracer import Tracer
from kitobs.tracing.memory import Recorder as SpanRecorder

DURATION = "kitobs_endpoint_duration_seconds"


def _kit() -> tuple[Kit, memory.Provider, SpanRecorder]:
    provider = memory.Provider()
    spans = SpanRecorder()
    logger, _ = capture.new()
    kit = Kit(
        load(path=None, env={}, search=False),
        logger=logger,
        metrics=provider,
        tracer=Tracer(processor=spans),
    )
    return kit, provider, spans


def test_a_string_is_the_endpoint_name_with_the_default_kit() -> None:
    kit, provider, spans = _kit()
    reset_default()
    try:

        @instrument("billing.charge")
        def charge(amount: int) -> int:
            return amount

        set_default(kit)
        assert charge(3) == 3
        assert charge.__name__ == "charge"
        assert (
            len(provider.observations(DURATION, endpoint="billing.charge", outcome="success")) == 1
        )
        assert [s.name for s in spans.spans] == ["billing.charge"]
    finally:
        reset_default()


def test_a_string_with_a_kit_keyword() -> None:
    kit, provider, _ = _kit()

    @instrument("billing.refund", kit=kit)
    def refund() -> None:
        return None

    refund()
    assert len(provider.observations(DURATION, endpoint="billing.refund", outcome="success")) == 1


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        pytest.param(("charge",), {"name": "other"}, "got the name twice", id="name-twice"),
        pytest.param((42,), {}, r"takes a kitobs\.Kit, not int 42", id="not-a-kit"),
        pytest.param((), {"kit": "prod"}, r"takes a kitobs\.Kit, not str 'prod'", id="kit-str"),
        pytest.param((), {"name": 7}, "name must be a str, not int 7", id="name-int"),
    ],
)
def test_wrong_arguments_fail_at_decoration(
    args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        instrument(*args, **kwargs)


def test_a_kit_twice_fails_at_decoration() -> None:
    kit, _, _ = _kit()
    with pytest.raises(TypeError, match="got a Kit twice"):
        instrument(kit, kit=kit)


def test_a_wrong_kit_on_a_function_fails_at_decoration() -> None:
    def charge() -> None:
        return None

    with pytest.raises(TypeError, match=r"takes a kitobs\.Kit"):
        instrument(charge, kit="prod")  # type: ignore[call-overload]


def test_decorating_something_not_callable_fails() -> None:
    kit, _, _ = _kit()
    with pytest.raises(TypeError, match="decorates a function or method, not str 'charge'"):
        instrument(kit)("charge")  # type: ignore[type-var]
