"""Plain WSGI under gunicorn: go-kit Servers (decode/encode/finalizer) behind wsgi.Middleware."""

from __future__ import annotations

import urllib.error
import urllib.request

import httpx
import pytest

from kitobs.errors import ConfigError
from kitobs.transport import wsgi
from tests.support.zipkin import Receiver
from tests.transport.conftest import Served, spans_named

DURATION = "http_server_request_duration_seconds_count"


def test_server_decodes_calls_encodes_and_finalizes(wsgi_server: Served) -> None:
    response = httpx.post(f"{wsgi_server.base}/sum", json={"a": 2, "b": 5})
    assert response.json() == {"v": 7}
    # The finalizer saw the status and the body size the client received.
    finalized = httpx.get(f"{wsgi_server.base}/finalized").text
    assert finalized == repr((200, len(response.content)))
    wsgi_server.wait_metric(
        DURATION, 1, http_request_method="POST", http_route="/sum",
        http_response_status_code="200", url_scheme="http",
    )  # fmt: skip


def test_business_error_goes_through_the_error_encoder(wsgi_server: Served) -> None:
    response = httpx.post(f"{wsgi_server.base}/checked", json={"a": 5000, "b": 1})
    assert response.status_code == 422
    assert response.json() == {"error": "too big"}
    wsgi_server.wait_metric(
        DURATION, 1, http_request_method="POST", http_route="/checked",
        http_response_status_code="422", url_scheme="http",
    )  # fmt: skip


def test_route_getter_key_and_unmatched(wsgi_server: Served, zipkin: Receiver) -> None:
    for item in ("a", "b", "c", "d"):
        with urllib.request.urlopen(f"{wsgi_server.base}/items/{item}", timeout=5) as r:
            assert r.read() == f"item /items/{item}".encode()
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{wsgi_server.base}/elsewhere", timeout=5)
    missing.value.close()
    wsgi_server.wait_metric(
        DURATION, 4, http_request_method="GET", http_route="/items/{id}",
        http_response_status_code="200", url_scheme="http",
    )  # fmt: skip
    wsgi_server.wait_metric(
        DURATION, 1, http_request_method="GET", http_route="unmatched",
        http_response_status_code="404", url_scheme="http",
    )  # fmt: skip
    spans = zipkin.wait_for(5)
    assert len(spans_named(spans, "GET /items/{id}")) == 4
    [unmatched] = spans_named(spans, "GET")  # no route: the span keeps the bare method name
    assert "http.route" not in unmatched["tags"]
    assert unmatched["tags"]["url.path"] == "/elsewhere"


def test_app_exception_recorded_and_propagated(wsgi_server: Served) -> None:
    assert httpx.get(f"{wsgi_server.base}/boom").status_code == 500  # gunicorn's error page
    wsgi_server.wait_metric(
        DURATION, 1, http_request_method="GET", http_route="unmatched",
        http_response_status_code="500", url_scheme="http", error_type="RuntimeError",
    )  # fmt: skip
    assert "plain wsgi failure" in wsgi_server.log()  # gunicorn saw the same exception


def test_server_refuses_async_endpoint() -> None:
    async def endpoint(request: object) -> object:
        return request

    with pytest.raises(ConfigError, match="sync endpoint"):
        wsgi.Server(endpoint, wsgi.decode_json, wsgi.encode_json)


def test_server_hooks_and_custom_error_encoder(wsgi_server: Served) -> None:
    base = wsgi_server.base
    ok = httpx.post(f"{base}/tagged", json={"a": 1, "b": 2}, headers={"X-Tag": "t9"})
    assert ok.json() == {"v": 3}
    assert ok.headers["x-tag-seen"] == "t9"  # the after hook saw what the before hook set
    failed = httpx.post(f"{base}/tagged", json={"a": 5000, "b": 1}, headers={"X-Tag": "t10"})
    assert failed.status_code == 418
    assert failed.headers["content-type"] == "application/problem+json"
    assert failed.json() == {"kind": "_Overflow", "detail": "too big"}
    assert "x-tag-seen" not in failed.headers  # after hooks run on successes only
    broken = httpx.post(f"{base}/tagged", content=b"{not json")
    assert (broken.status_code, broken.json()["kind"]) == (418, "BadRequest")
    wsgi_server.wait_metric(
        DURATION, 1, http_request_method="POST", http_route="/tagged",
        http_response_status_code="418", url_scheme="http",
        error_type="kitobs.transport.http.BadRequest",
    )  # fmt: skip
    wsgi_server.wait_metric(
        DURATION, 1, http_request_method="POST", http_route="/tagged",
        http_response_status_code="418", url_scheme="http",
    )  # fmt: skip


BAD_BODIES = [
    pytest.param(
        b'{"a": 1, "b": ',
        "request body is not valid JSON: Expecting value at line 1 column 15",
        id="truncated",
    ),
    pytest.param(b"\xc3\x28", "request body is not valid JSON: not UTF-8 text", id="not-utf8"),
    pytest.param(
        b"[" * 200_000, "request body is not valid JSON: nested too deeply", id="too-deep"
    ),
]


@pytest.mark.parametrize(("body", "message"), BAD_BODIES)
def test_decode_json_answers_a_bad_body_with_400(
    wsgi_server: Served, body: bytes, message: str
) -> None:
    response = httpx.post(f"{wsgi_server.base}/sum", content=body)
    assert response.status_code == 400
    assert response.json() == {"error": message}
    wsgi_server.wait_metric(
        DURATION, 1, http_request_method="POST", http_route="/sum",
        http_response_status_code="400", url_scheme="http",
        error_type="kitobs.transport.http.BadRequest",
    )  # fmt: skip
