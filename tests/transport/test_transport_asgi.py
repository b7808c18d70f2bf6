"""Starlette and FastAPI under uvicorn: routes after routing, errors, disconnects, spans."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.support.zipkin import Receiver
from tests.transport.conftest import Served, series, spans_named

DURATION = "http_server_request_duration_seconds_count"


def test_starlette_route_template(starlette_server: Served, zipkin: Receiver) -> None:
    for user in (7, 8):
        assert httpx.get(f"{starlette_server.base}/users/{user}").json() == {"id": user}
    assert httpx.get(f"{starlette_server.base}/nope/1").status_code == 404
    starlette_server.wait_metric(
        DURATION, 2, http_request_method="GET", http_route="/users/{user_id:int}",
        http_response_status_code="200", url_scheme="http",
    )  # fmt: skip
    starlette_server.wait_metric(
        DURATION, 1, http_request_method="GET", http_route="unmatched",
        http_response_status_code="404", url_scheme="http",
    )  # fmt: skip
    spans = zipkin.wait_for(3)
    assert len(spans_named(spans, "GET /users/{user_id:int}")) == 2


def test_starlette_exception_counted_outside_error_middleware(starlette_server: Served) -> None:
    assert httpx.get(f"{starlette_server.base}/boom").status_code == 500
    starlette_server.wait_metric(
        DURATION, 1, http_request_method="GET", http_route="/boom",
        http_response_status_code="500", url_scheme="http", error_type="LookupError",
    )  # fmt: skip


def test_fastapi_route_and_error(fastapi_server: Served, zipkin: Receiver) -> None:
    assert httpx.get(f"{fastapi_server.base}/items/3").json() == {"id": 3}
    assert httpx.get(f"{fastapi_server.base}/boom").status_code == 500
    assert httpx.get(f"{fastapi_server.base}/items/not-a-number").status_code == 422
    fastapi_server.wait_metric(
        DURATION, 1, http_request_method="GET", http_route="/items/{item_id}",
        http_response_status_code="200", url_scheme="http",
    )  # fmt: skip
    fastapi_server.wait_metric(
        DURATION, 1, http_request_method="GET", http_route="/items/{item_id}",
        http_response_status_code="422", url_scheme="http",
    )  # fmt: skip
    fastapi_server.wait_metric(
        DURATION, 1, http_request_method="GET", http_route="/boom",
        http_response_status_code="500", url_scheme="http", error_type="ZeroDivisionError",
    )  # fmt: skip
    [boom] = spans_named(zipkin.wait_for(3), "GET /boom")
    assert boom["tags"]["error.type"] == "ZeroDivisionError"


def test_client_timeout_then_server_still_records(starlette_server: Served) -> None:
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{starlette_server.base}/slow?s=1.0", timeout=0.2)
    # The server finishes the request after the client gave up; in flight goes back to 0.
    starlette_server.wait_metric(
        DURATION, 1, http_request_method="GET", http_route="/slow",
        http_response_status_code="200", url_scheme="http",
    )  # fmt: skip
    starlette_server.wait_metric(
        "http_server_active_requests", 0, http_request_method="GET", url_scheme="http"
    )


def test_cancelled_async_request_is_499(starlette_server: Served) -> None:
    async def go() -> None:
        async with httpx.AsyncClient(base_url=starlette_server.base) as client:
            task = asyncio.create_task(client.get("/wait"))
            # Wait until the server counts the request in flight, then cancel it.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                samples = starlette_server.scrape()
                key = (
                    "http_server_active_requests",
                    frozenset({"http_request_method": "GET", "url_scheme": "http"}.items()),
                )
                if samples.get(key) == 1:
                    break
                await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(go())
    starlette_server.wait_metric(
        DURATION, 1, http_request_method="GET", http_route="/wait",
        http_response_status_code="499", url_scheme="http",
    )  # fmt: skip
    starlette_server.wait_metric(
        "http_server_active_requests", 0, http_request_method="GET", url_scheme="http"
    )
    assert not [
        s
        for s in series(starlette_server.scrape(), DURATION)
        if s["http_response_status_code"] == "200"
    ]
