"""Type checks only (mypy): every form of instrument keeps the decorated function's type."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

from kitobs.endpoint.instrument import instrument
from kitobs.kit import Kit


def _rows(n: int) -> Iterator[int]:
    yield n


async def _stream(n: int) -> AsyncIterator[int]:
    yield n


def _bare() -> Callable[[int], Iterator[int]]:
    return instrument(_rows)


def _named() -> Callable[[int], Iterator[int]]:
    return instrument("orders.rows")(_rows)


def _named_with_kit(kit: Kit) -> Callable[[int], AsyncIterator[int]]:
    return instrument("orders.stream", kit=kit)(_stream)


def _kit_and_name(kit: Kit) -> Callable[[int], Iterator[int]]:
    return instrument(kit, name="orders.rows")(_rows)
