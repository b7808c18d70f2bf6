"""instrument / instrumenting: logs, metrics and a span per call, in the documented order."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

from kitobs.config import load
from kitobs.endpoint.instrument import instrument, instrumenting
from kitobs.kit import Kit, reset_default, set_default
from kitobs.log import capture
from kitobs.metrics import memory
from kitobs.tracing import current_ids
from kitobs.tracing._tracer import Tracer
from kitobs.tracing.memory import Recorder as SpanRecorder
from kitobs.transport import wsgi

DURATION = "kitobs_endpoint_duration_seconds"


class Parts:
    def __init__(self) -> None:
        self.provider = memory.Provider()
        self.logger, self.records = capture.new(trace_context=current_ids)
        self.capture = SpanRecorder()
        self.kit = Kit(
            load(path=None, env={}, search=False),
            logger=self.logger,
            metrics=self.provider,
            tracer=Tracer(processor=self.capture),
        )

    def count(self, endpoint: str, outcome: str) -> int:
        return len(self.provider.observations(DURATION, endpoint=endpoint, outcome=outcome))


@pytest.fixture
def parts() -> Parts:
    return Parts()


def test_sync_function_keeps_its_face_and_records(parts: Parts) -> None:
    @instrument(parts.kit)
    def add(a: int, b: int = 2, *, scale: int = 1) -> int:
        """Add two numbers."""
        return (a + b) * scale

    assert add.__name__ == "add"
    assert add.__doc__ == "Add two numbers."
    assert str(inspect.signature(add)) == "(a: 'int', b: 'int' = 2, *, scale: 'int' = 1) -> 'int'"
    assert not inspect.iscoroutinefunction(add)
    assert add(1, scale=3) == 9
    name = "test_sync_function_keeps_its_face_and_records.add"
    assert parts.count(name, "success") == 1
    [span] = parts.capture.spans
    assert span.name == name
    [record] = parts.records
    assert record["endpoint"] == name
    assert record["outcome"] == "success"
    # Tracing is outermost: the log line was written inside the span.
    assert (record["trace_id"], record["span_id"]) == span.hex_ids()


def test_exception_passes_through_unchanged(parts: Parts) -> None:
    error = ValueError("bad input")

    @instrument(kit=parts.kit, name="orders.create")
    def create(order: str) -> str:
        raise error

    with pytest.raises(ValueError, match="bad input") as raised:
        create("x")
    assert raised.value is error
    assert raised.value.__traceback__ is not None
    assert parts.count("orders.create", "exception") == 1
    [span] = parts.capture.spans
    assert span.name == "orders.create"
    assert span.status_code.name == "ERROR"
    assert parts.records[0]["outcome"] == "exception"
    assert "bad input" in str(parts.records[0]["error"])


def test_async_function_stays_a_coroutine_function(parts: Parts) -> None:
    @instrument(parts.kit, name="fetch")
    async def fetch(key: str) -> str:
        await asyncio.sleep(0)
        if key == "missing":
            raise KeyError(key)
        return key * 2

    assert inspect.iscoroutinefunction(fetch)
    assert asyncio.run(fetch("ab")) == "abab"
    with pytest.raises(KeyError):
        asyncio.run(fetch("missing"))
    assert parts.count("fetch", "success") == 1
    assert parts.count("fetch", "exception") == 1
    assert len(parts.capture.spans) == 2


def test_methods_classmethods_staticmethods(parts: Parts) -> None:
    class Service:
        factor = 10

        def __init__(self, base: int) -> None:
            self.base = base

        @instrument(parts.kit)
        def plus(self, n: int) -> int:
            return self.base + n

        @instrument(parts.kit)
        @classmethod
        def scaled(cls, n: int) -> int:
            return cls.factor * n

        @instrument(parts.kit)
        @staticmethod
        def negate(n: int) -> int:
            return -n

        @instrument(parts.kit)
        async def later(self, n: int) -> int:
            return self.base - n

    svc = Service(5)
    assert svc.plus(1) == 6
    assert Service.scaled(2) == 20
    assert svc.negate(3) == -3
    assert asyncio.run(svc.later(1)) == 4
    assert str(inspect.signature(svc.plus)) == "(n: 'int') -> 'int'"
    prefix = "test_methods_classmethods_staticmethods.Service."
    for method in ("plus", "scaled", "negate", "later"):
        assert parts.count(prefix + method, "success") == 1, method


def test_bare_decorator_resolves_the_default_at_first_call(parts: Parts) -> None:
    reset_default()
    try:

        @instrument
        def ping() -> str:
            return "pong"

        # The default is set after decoration: only a lazy lookup sees it.
        set_default(parts.kit)
        assert ping() == "pong"
        assert ping() == "pong"
        assert (
            parts.count("test_bare_decorator_resolves_the_default_at_first_call.ping", "success")
            == 2
        )
    finally:
        reset_default()


def test_business_error_outcome(parts: Parts) -> None:
    class Reply:
        def failed(self) -> BaseException | None:
            return LookupError("no such user")

    @instrument(parts.kit, name="users.get")
    def get(user_id: int) -> Reply:
        return Reply()

    assert isinstance(get(3), Reply)
    assert parts.count("users.get", "business_error") == 1
    assert parts.records[0]["outcome"] == "business_error"


def test_instrumenting_middleware_on_an_endpoint(parts: Parts) -> None:
    def double(request: int) -> int:
        return request * 2

    endpoint = instrumenting(parts.kit, name="double")(double)
    assert endpoint(21) == 42
    assert parts.count("double", "success") == 1
    assert [s.name for s in parts.capture.spans] == ["double"]


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def served(parts: Parts) -> Iterator[str]:
    """A real WSGI server on loopback: transport middleware around an instrumented endpoint."""

    @instrument(parts.kit, name="sum")
    def sum_(request: dict[str, int]) -> dict[str, int]:
        return {"v": request["a"] + request["b"]}

    app = wsgi.Middleware(
        wsgi.Server(sum_, wsgi.decode_json, wsgi.encode_json, route="/sum"),
        parts.provider,
        tracer=parts.kit.tracer,
    )
    server: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()


def test_both_layers_count_once_each(parts: Parts, served: str) -> None:
    request = urllib.request.Request(
        f"{served}/sum", data=b'{"a": 1, "b": 2}', headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.read() == b'{"v": 3}'
    assert parts.count("sum", "success") == 1

    def server_observations() -> list[float]:
        return parts.provider.observations(
            "http_server_request_duration_seconds",
            http_request_method="POST", http_route="/sum",
            http_response_status_code="200", url_scheme="http",
        )  # fmt: skip

    # The server records the request when it has sent the body, which may be just after the
    # client has read it: wait (bounded) for the record rather than race it.
    deadline = time.monotonic() + 10
    while (not server_observations() or len(parts.capture.spans) < 2) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.01)
    assert len(server_observations()) == 1
    # The endpoint span is the child of the transport's SERVER span: one trace, two layers.
    endpoint_span, server_span = parts.capture.spans
    assert server_span.kind.name == "SERVER"
    assert server_span.name == "POST /sum"
    assert endpoint_span.parent_id == server_span.span_id
    assert endpoint_span.trace_id == server_span.trace_id
