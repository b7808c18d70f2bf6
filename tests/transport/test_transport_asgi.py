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


def test_asgi_server_runs_every_hook_in_order(asgi_server: Served, zipkin: Receiver) -> None:
    # before hook -> sync decode -> async endpoint -> async encoder -> after hook -> finalizer
    response = httpx.post(f"{asgi_server.base}/sum", json={"a": 2, "b": 5}, headers={"x-tag": "t1"})
    assert response.status_code == 201
    assert response.json() == {"v": 7}
    assert response.headers["x-encoder"] == "async"
    assert response.headers["x-tag-seen"] == "t1"  # the after hook saw what the before hook set
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-length"] == str(len(response.content))
    finalized = httpx.get(f"{asgi_server.base}/finalized").json()
    assert finalized == [["/sum", 201, len(response.content)]]
    asgi_server.wait_metric(
        DURATION, 1, http_request_method="POST", http_route="/sum",
        http_response_status_code="201", url_scheme="http",
    )  # fmt: skip
    [span] = spans_named(zipkin.wait_for(1), "POST /sum")
    assert span["kind"] == "SERVER"


def test_asgi_server_error_encoder_for_business_errors_and_exceptions(
    asgi_server: Served,
) -> None:
    base = asgi_server.base
    ok = httpx.post(f"{base}/withdraw", json={"amount": 30})  # async decode, sync endpoint
    assert (ok.status_code, ok.json()) == (200, {"balance": 70})
    overdrawn = httpx.post(f"{base}/withdraw", json={"amount": 500})
    assert overdrawn.status_code == 409
    assert overdrawn.headers["content-type"] == "application/problem+json"
    assert overdrawn.json() == {"kind": "_Overdrawn", "detail": "balance 100 < 500"}
    negative = httpx.post(f"{base}/withdraw", json={"amount": -1})
    assert (negative.status_code, negative.json()["kind"]) == (400, "ValueError")
    bad_json = httpx.post(f"{base}/withdraw", content=b"{not json")
    assert (bad_json.status_code, bad_json.json()["kind"]) == (400, "JSONDecodeError")
    # The finalizer saw each status and body size as sent.
    finalized = httpx.get(f"{base}/finalized").json()
    assert finalized == [
        ["/withdraw", 200, len(ok.content)],
        ["/withdraw", 409, len(overdrawn.content)],
        ["/withdraw", 400, len(negative.content)],
        ["/withdraw", 400, len(bad_json.content)],
    ]
    asgi_server.wait_metric(
        DURATION, 1, http_request_method="POST", http_route="/withdraw",
        http_response_status_code="409", url_scheme="http",
    )  # fmt: skip
    # An exception the error encoder answered is still labelled with its type.
    asgi_server.wait_metric(
        DURATION, 1, http_request_method="POST", http_route="/withdraw",
        http_response_status_code="400", url_scheme="http", error_type="ValueError",
    )  # fmt: skip
    asgi_server.wait_metric(
        DURATION, 1, http_request_method="POST", http_route="/withdraw",
        http_response_status_code="400", url_scheme="http",
        error_type="json.decoder.JSONDecodeError",
    )  # fmt: skip


def test_asgi_server_unknown_route_is_unmatched(asgi_server: Served) -> None:
    assert httpx.get(f"{asgi_server.base}/elsewhere/42").status_code == 404
    asgi_server.wait_metric(
        DURATION, 1, http_request_method="GET", http_route="unmatched",
        http_response_status_code="404", url_scheme="http",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(
            b"{not json",
            "request body is not valid JSON: Expecting property name enclosed in double quotes"
            " at line 1 column 2",
            id="malformed",
        ),
        pytest.param(b"\xc3\x28", "request body is not valid JSON: not UTF-8 text", id="not-utf8"),
        pytest.param(
            b"[" * 200_000, "request body is not valid JSON: nested too deeply", id="too-deep"
        ),
    ],
)
def test_asgi_decode_json_answers_a_bad_body_with_400(
    asgi_server: Served, body: bytes, message: str
) -> None:
    response = httpx.post(f"{asgi_server.base}/sum", content=body)
    assert response.status_code == 400
    assert response.json() == {"error": message}
    asgi_server.wait_metric(
        DURATION, 1, http_request_method="POST", http_route="/sum",
        http_response_status_code="400", url_scheme="http",
        error_type="kitobs.transport.http.BadRequest",
    )  # fmt: skip
