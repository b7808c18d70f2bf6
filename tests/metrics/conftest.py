"""The ``harness`` fixture: each metrics backend in turn, with a reader of its own output."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.metrics.harnesses import HARNESSES, Harness


@pytest.fixture(params=sorted(HARNESSES))
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """harness gives one backend's `Harness` per run of the test, closed afterwards."""
    make: Callable[[], Harness] = HARNESSES[request.param]
    h = make()
    try:
        yield h
    finally:
        h.close()
