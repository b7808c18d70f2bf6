"""Instrumented clients (httpx sync and async, requests, urllib) against a real uvicorn server."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from typing import Any

import httpx
import pytest
import requests

from kitobs.metrics import memory
from kitobs.tracing import Span
from kitobs.tracing._tracer import Tracer
from kitobs.transport.httpclient import (
    AsyncHTTPXTransport,
    HTTPXTransport,
    RequestsAdapter,
    urllib_handlers,
)
from tests.support.zipkin import Receiver
from tests.transport.conftest import Served, spans_named

CLIENT = "http_client_request_duration_seconds"


class Capture:
    """Capture is a span processor keeping every ended sampled span in a list."""

    def __init__(self) -> None:
        self.spans: list[Span] = []

    def on_end(self, span: Span) -> None:
        self.spans.append(span)

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def shutdown(self) -> None:
        pass


@pytest.fixture
def capture() -> Capture:
    return Capture()


@pytest.fixture
def tracer(capture: Capture) -> Tracer:
    return Tracer(processor=capture)


def _labels(server: Served, status: str, error: str = "") -> dict[str, str]:
    labels = {
        "http_request_method": "GET",
        "server_address": "127.0.0.1",
        "server_port": str(server.port),
        "http_response_status_code": status,
    }
    if error:
        labels["error_type"] = error
    return labels


def _check_propagated(capture: Capture, zipkin: Receiver, route: str) -> None:
    [client_span] = capture.spans
    assert client_span.kind.name == "CLIENT"
    trace_id, span_id = client_span.hex_ids()
    [server_span] = spans_named(zipkin.wait_for(1), f"GET {route}")
    assert server_span["traceId"] == trace_id
    assert server_span["parentId"] == span_id


def test_httpx_sync(
    starlette_server: Served, zipkin: Receiver, tracer: Tracer, capture: Capture
) -> None:
    provider = memory.Provider()
    transport = HTTPXTransport(httpx.HTTPTransport(), provider, tracer=tracer)
    with httpx.Client(transport=transport, base_url=starlette_server.base) as client:
        assert client.get("/users/1").status_code == 200
    assert len(provider.observations(CLIENT, **_labels(starlette_server, "200"))) == 1
    _check_propagated(capture, zipkin, "/users/{user_id:int}")
    assert capture.spans[0].attributes["server.port"] == starlette_server.port


def test_httpx_async_and_error_status(
    starlette_server: Served, zipkin: Receiver, tracer: Tracer, capture: Capture
) -> None:
    provider = memory.Provider()

    async def go() -> None:
        transport = AsyncHTTPXTransport(httpx.AsyncHTTPTransport(), provider, tracer=tracer)
        async with httpx.AsyncClient(transport=transport, base_url=starlette_server.base) as c:
            assert (await c.get("/boom")).status_code == 500

    asyncio.run(go())
    assert len(provider.observations(CLIENT, **_labels(starlette_server, "500", "500"))) == 1
    _check_propagated(capture, zipkin, "/boom")


def test_httpx_timeout_records_error_type(starlette_server: Served, tracer: Tracer) -> None:
    provider = memory.Provider()
    transport = HTTPXTransport(httpx.HTTPTransport(), provider, tracer=tracer)
    with (
        httpx.Client(transport=transport, base_url=starlette_server.base, timeout=0.2) as client,
        pytest.raises(httpx.ReadTimeout),
    ):
        client.get("/slow?s=1.0")
    labels = _labels(starlette_server, "", "httpx.ReadTimeout")
    del labels["http_response_status_code"]
    assert len(provider.observations(CLIENT, **labels)) == 1


def test_httpx_async_cancelled(starlette_server: Served, tracer: Tracer) -> None:
    provider = memory.Provider()

    async def go() -> None:
        transport = AsyncHTTPXTransport(httpx.AsyncHTTPTransport(), provider, tracer=tracer)
        async with httpx.AsyncClient(transport=transport, base_url=starlette_server.base) as c:
            task = asyncio.create_task(c.get("/slow?s=2"))
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(go())
    labels = _labels(starlette_server, "", "asyncio.exceptions.CancelledError")
    del labels["http_response_status_code"]
    assert len(provider.observations(CLIENT, **labels)) == 1


def test_requests_adapter(
    starlette_server: Served, zipkin: Receiver, tracer: Tracer, capture: Capture
) -> None:
    provider = memory.Provider()
    with requests.Session() as session:
        session.mount("http://", RequestsAdapter(provider, tracer=tracer))
        assert session.get(f"{starlette_server.base}/users/2", timeout=5).json() == {"id": 2}
    assert len(provider.observations(CLIENT, **_labels(starlette_server, "200"))) == 1
    _check_propagated(capture, zipkin, "/users/{user_id:int}")


def test_requests_connection_refused() -> None:
    from tests.support.servers import free_port

    provider = memory.Provider()
    port = free_port()
    with requests.Session() as session:
        session.mount("http://", RequestsAdapter(provider))
        with pytest.raises(requests.ConnectionError):
            session.get(f"http://127.0.0.1:{port}/", timeout=2)
    series = provider.series(CLIENT)
    assert series == [
        {
            "http_request_method": "GET",
            "server_address": "127.0.0.1",
            "server_port": str(port),
            "http_response_status_code": "",
            "error_type": "requests.exceptions.ConnectionError",
        }
    ]


def test_urllib_handlers(
    starlette_server: Served, zipkin: Receiver, tracer: Tracer, capture: Capture
) -> None:
    provider = memory.Provider()
    opener = urllib.request.build_opener(*urllib_handlers(provider, tracer=tracer))
    with opener.open(f"{starlette_server.base}/users/3", timeout=5) as response:
        assert response.read() == b'{"id":3}'
    with pytest.raises(urllib.error.HTTPError) as err:
        opener.open(f"{starlette_server.base}/missing", timeout=5)
    err.value.close()
    assert len(provider.observations(CLIENT, **_labels(starlette_server, "200"))) == 1
    assert len(provider.observations(CLIENT, **_labels(starlette_server, "404"))) == 1
    spans: list[Any] = zipkin.wait_for(2)
    [server_span] = spans_named(spans, "GET /users/{user_id:int}")
    assert server_span["traceId"] == capture.spans[0].hex_ids()[0]
