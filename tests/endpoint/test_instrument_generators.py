"""instrument on generator and async generator functions: the whole iteration is the call."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from kitobs.config import load
from kitobs.endpoint import _record as record_module
from kitobs.endpoint import instrument as instrument_module
from kitobs.endpoint.instrument import instrument
from kitobs.kit import Kit, reset_default, set_default
from kitobs.log import capture
from kitobs.metrics import memory
from kitobs.tracing import current_ids
from kitobs.tracing._tracer import Tracer
from kitobs.tracing.memory import Recorder as SpanRecorder

DURATION = "kitobs_endpoint_duration_seconds"


class Parts:
    def __init__(self) -> None:
        self.provider = memory.Provider()
        self.logger, self.records = capture.new(trace_context=current_ids)
        self.spans = SpanRecorder()
        self.kit = Kit(
            load(path=None, env={}, search=False),
            logger=self.logger,
            metrics=self.provider,
            tracer=Tracer(processor=self.spans),
        )

    def observed(self, endpoint: str, outcome: str) -> list[float]:
        return list(self.provider.observations(DURATION, endpoint=endpoint, outcome=outcome))

    def endpoint_lines(self) -> list[dict[str, Any]]:
        return [r for r in self.records if "endpoint" in r]

    def lines(self, msg: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("msg") == msg]


class FakeClock:
    """A perf_counter_ns stand-in that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1_000_000_000

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1e9)


@pytest.fixture
def parts() -> Parts:
    return Parts()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(instrument_module, "_clock", fake)  # where an iteration starts
    monkeypatch.setattr(record_module, "_clock", fake)  # where the recorder ends it
    return fake


def test_generator_duration_covers_first_next_to_exhaustion(parts: Parts, clock: FakeClock) -> None:
    @instrument(parts.kit, name="rows")
    def rows(n: int) -> Iterator[int]:
        for i in range(n):
            clock.advance(1.0)  # the body's own work
            yield i

    assert inspect.isgeneratorfunction(rows)
    made = rows(3)
    clock.advance(100.0)  # before the first next: not part of the iteration
    assert parts.observed("rows", "success") == []
    got = []
    for item in made:
        got.append(item)
        clock.advance(0.5)  # the consumer's work between items counts: the iteration is open
    assert got == [0, 1, 2]
    assert parts.observed("rows", "success") == [4.5]
    [line] = parts.endpoint_lines()
    assert (line["outcome"], line["duration"]) == ("success", 4.5)
    [span] = parts.spans.spans
    assert span.name == "rows"
    assert span.attributes == {"kitobs.outcome": "success"}


def test_generator_error_while_iterating_is_an_exception(parts: Parts) -> None:
    error = LookupError("row 2 is gone")

    @instrument(parts.kit, name="rows")
    def rows() -> Iterator[int]:
        yield 1
        raise error

    made = rows()
    assert next(made) == 1
    with pytest.raises(LookupError) as raised:
        next(made)
    assert raised.value is error
    assert len(parts.observed("rows", "exception")) == 1
    assert parts.observed("rows", "success") == []
    [line] = parts.endpoint_lines()
    assert line["outcome"] == "exception"
    assert line["error"] == "LookupError: row 2 is gone"
    [span] = parts.spans.spans
    assert span.status_code.name == "ERROR"
    assert span.attributes is not None
    assert span.attributes["kitobs.outcome"] == "exception"
    assert [e[0] for e in span.events or ()] == ["exception"]


def test_generator_span_is_current_in_the_body_only(parts: Parts) -> None:
    log = parts.logger

    @instrument(parts.kit, name="rows")
    def rows() -> Iterator[int]:
        log.log("msg", "body")
        yield 1
        log.log("msg", "body")
        yield 2
        log.log("msg", "body")

    for _ in rows():
        log.log("msg", "consumer")
        assert current_ids() is None
    [span] = parts.spans.spans
    body = parts.lines("body")
    assert len(body) == 3
    assert all((r["trace_id"], r["span_id"]) == span.hex_ids() for r in body)
    consumer = parts.lines("consumer")
    assert len(consumer) == 2
    assert all("trace_id" not in r for r in consumer)
    [line] = parts.endpoint_lines()
    assert (line["trace_id"], line["span_id"]) == span.hex_ids()


def test_generator_spans_nest_inside_the_body(parts: Parts) -> None:
    @instrument(parts.kit, name="lookup")
    def lookup(i: int) -> int:
        return i * 10

    @instrument(parts.kit, name="rows")
    def rows() -> Iterator[int]:
        yield lookup(1)
        yield lookup(2)

    assert list(rows()) == [10, 20]
    inner = [s for s in parts.spans.spans if s.name == "lookup"]
    [outer] = [s for s in parts.spans.spans if s.name == "rows"]
    assert len(inner) == 2
    assert all(s.parent_id == outer.span_id for s in inner)
    assert all(s.trace_id == outer.trace_id for s in inner)


def test_generator_send_return_value_and_yield_from(parts: Parts) -> None:
    @instrument(parts.kit, name="acc")
    def acc() -> Any:
        total = 0
        while True:
            got = yield total
            if got is None:
                return total
            total += got

    made = acc()
    assert next(made) == 0
    assert made.send(2) == 2
    assert made.send(3) == 5
    assert parts.records == []  # still iterating

    def outer() -> Any:
        result = yield from acc()
        return result

    delegated = outer()
    next(delegated)
    delegated.send(4)
    with pytest.raises(StopIteration) as stopped:
        delegated.send(None)
    assert stopped.value.value == 4
    made.close()
    assert len(parts.observed("acc", "success")) == 2


def test_generator_closed_early_records_once_as_success(parts: Parts) -> None:
    closed = []

    @instrument(parts.kit, name="rows")
    def rows() -> Iterator[int]:
        try:
            yield 1
            yield 2
        finally:
            closed.append(current_ids())

    for item in rows():
        assert item == 1
        break
    gc.collect()
    [span] = parts.spans.spans
    # The body's cleanup runs inside the span too.
    assert closed == [span.hex_ids()]
    assert len(parts.observed("rows", "success")) == 1
    assert [line["outcome"] for line in parts.endpoint_lines()] == ["success"]

    explicit = rows()
    next(explicit)
    explicit.close()
    explicit.close()  # a second close is a no-op and records nothing more
    assert len(parts.observed("rows", "success")) == 2
    assert len(parts.spans.spans) == 2


def test_generator_garbage_collected_records_once(parts: Parts) -> None:
    @instrument(parts.kit, name="rows")
    def rows() -> Iterator[int]:
        yield 1
        yield 2

    abandoned = rows()
    next(abandoned)
    assert parts.spans.spans == []
    del abandoned
    gc.collect()
    assert len(parts.observed("rows", "success")) == 1
    assert len(parts.spans.spans) == 1
    assert parts.spans.spans[0].end_ns > 0


def test_generator_never_iterated_records_nothing(parts: Parts) -> None:
    @instrument(parts.kit, name="rows")
    def rows() -> Iterator[int]:
        yield 1

    made = rows()
    del made
    gc.collect()
    assert parts.records == []
    assert parts.spans.spans == []


def test_generator_throw_caught_by_the_body_continues(parts: Parts) -> None:
    @instrument(parts.kit, name="rows")
    def rows() -> Iterator[str]:
        try:
            yield "first"
        except KeyError:
            yield "recovered"
        yield "last"

    made = rows()
    assert next(made) == "first"
    assert made.throw(KeyError("x")) == "recovered"
    assert parts.records == []  # still iterating
    assert list(made) == ["last"]
    assert len(parts.observed("rows", "success")) == 1

    escaping = rows()
    next(escaping)
    with pytest.raises(ValueError, match="stop"):
        escaping.throw(ValueError("stop"))
    assert len(parts.observed("rows", "exception")) == 1


def test_generator_method_and_default_kit(parts: Parts) -> None:
    class Table:
        def __init__(self, n: int) -> None:
            self.n = n

        @instrument(parts.kit, name="Table.rows")
        def rows(self) -> Iterator[int]:
            yield from range(self.n)

    assert list(Table(3).rows()) == [0, 1, 2]
    assert len(parts.observed("Table.rows", "success")) == 1

    reset_default()
    try:

        @instrument(name="lazy")
        def lazy() -> Iterator[int]:
            yield current_ids() is not None  # type: ignore[misc]

        set_default(parts.kit)
        assert list(lazy()) == [True]
        assert len(parts.observed("lazy", "success")) == 1
    finally:
        reset_default()


def test_async_generator_times_the_iteration(parts: Parts, clock: FakeClock) -> None:
    @instrument(parts.kit, name="stream")
    async def stream(n: int) -> AsyncIterator[int]:
        for i in range(n):
            await asyncio.sleep(0)
            clock.advance(1.0)
            yield i

    assert inspect.isasyncgenfunction(stream)

    async def main() -> list[int]:
        got = []
        async for item in stream(2):
            got.append(item)
            clock.advance(0.25)
        return got

    assert asyncio.run(main()) == [0, 1]
    assert parts.observed("stream", "success") == [2.5]
    [span] = parts.spans.spans
    assert span.attributes == {"kitobs.outcome": "success"}


def test_async_generator_span_is_current_in_the_body_only(parts: Parts) -> None:
    log = parts.logger

    @instrument(parts.kit, name="stream")
    async def stream() -> AsyncIterator[int]:
        for i in range(3):
            log.log("msg", "body")
            await asyncio.sleep(0)  # other tasks run here, in their own contexts
            log.log("msg", "body")
            yield i

    async def bystander() -> None:
        for _ in range(5):
            log.log("msg", "bystander")
            await asyncio.sleep(0)

    async def main() -> None:
        other = asyncio.create_task(bystander())
        async for _ in stream():
            log.log("msg", "consumer")
            await asyncio.sleep(0)
            log.log("msg", "consumer")
        await other

    asyncio.run(main())
    [span] = parts.spans.spans
    body = parts.lines("body")
    assert len(body) == 6
    assert all((r["trace_id"], r["span_id"]) == span.hex_ids() for r in body)
    for msg, count in (("consumer", 6), ("bystander", 5)):
        lines = parts.lines(msg)
        assert len(lines) == count
        assert all("trace_id" not in r for r in lines)
    [line] = parts.endpoint_lines()
    assert (line["trace_id"], line["span_id"]) == span.hex_ids()


def test_async_generator_error_while_iterating_is_an_exception(parts: Parts) -> None:
    @instrument(parts.kit, name="stream")
    async def stream() -> AsyncIterator[int]:
        yield 1
        raise RuntimeError("feed lost")

    async def main() -> None:
        async for _ in stream():
            pass

    with pytest.raises(RuntimeError, match="feed lost"):
        asyncio.run(main())
    assert len(parts.observed("stream", "exception")) == 1
    assert parts.observed("stream", "success") == []
    [line] = parts.endpoint_lines()
    assert line["error"] == "RuntimeError: feed lost"
    assert parts.spans.spans[0].status_code.name == "ERROR"


def test_async_generator_closed_or_abandoned_records_once(parts: Parts) -> None:
    cleanups: list[object] = []

    @instrument(parts.kit, name="stream")
    async def stream() -> AsyncIterator[int]:
        try:
            yield 1
            yield 2
        finally:
            cleanups.append(current_ids())

    async def closed() -> None:
        made = stream()
        assert await made.__anext__() == 1
        await made.aclose()
        await made.aclose()

    asyncio.run(closed())
    assert len(parts.observed("stream", "success")) == 1
    assert cleanups == [parts.spans.spans[0].hex_ids()]

    async def abandoned() -> None:
        async for _ in stream():
            break  # left open: the event loop's finalizer hook schedules its aclose()
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(abandoned())
    assert len(parts.observed("stream", "success")) == 2
    assert len(parts.spans.spans) == 2
    assert len(cleanups) == 2


def test_async_generator_athrow(parts: Parts) -> None:
    @instrument(parts.kit, name="stream")
    async def stream() -> AsyncIterator[str]:
        try:
            yield "a"
        except KeyError:
            yield "caught"

    async def main() -> None:
        made = stream()
        assert await made.__anext__() == "a"
        assert await made.athrow(KeyError("k")) == "caught"
        assert parts.records == []
        with pytest.raises(StopAsyncIteration):
            await made.__anext__()

    asyncio.run(main())
    assert len(parts.observed("stream", "success")) == 1


def test_generator_under_contextmanager(parts: Parts) -> None:
    @contextlib.contextmanager
    @instrument(parts.kit, name="session")
    def session() -> Iterator[str]:
        yield "conn"

    with session() as conn:
        assert conn == "conn"
        assert current_ids() is None  # the with-block is the consumer's code
    assert len(parts.observed("session", "success")) == 1
    with pytest.raises(KeyError), session():
        raise KeyError("lost")
    assert len(parts.observed("session", "exception")) == 1
    assert parts.endpoint_lines()[-1]["error"] == "KeyError: 'lost'"


def test_generator_objects_keep_the_function_name(parts: Parts) -> None:
    @instrument(parts.kit, name="rows")
    def rows() -> Iterator[int]:
        yield 1

    @instrument(parts.kit, name="stream")
    async def stream() -> AsyncIterator[int]:
        yield 1

    made, streamed = rows(), stream()
    assert inspect.isgenerator(made)
    assert inspect.isasyncgen(streamed)
    assert made.__qualname__.endswith("rows")
    assert streamed.__qualname__.endswith("stream")
    assert "rows" in repr(made)
    made.close()
    asyncio.run(streamed.aclose())
