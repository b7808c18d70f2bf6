"""Flask under gunicorn: route templates, errors, unmatched routes, spans, via real clients."""

from __future__ import annotations

import httpx
import requests

from tests.support.zipkin import Receiver
from tests.transport.conftest import Served, series, spans_named

DURATION = "http_server_request_duration_seconds_count"


def test_route_template_not_raw_path(flask_server: Served) -> None:
    for user in (1, 2, 3):
        assert httpx.get(f"{flask_server.base}/users/{user}").json() == {"id": user}
    assert requests.post(f"{flask_server.base}/users/9", timeout=5).status_code == 200
    flask_server.wait_metric(
        DURATION, 3, http_request_method="GET", http_route="/users/<int:user_id>",
        http_response_status_code="200", url_scheme="http",
    )  # fmt: skip
    flask_server.wait_metric(
        DURATION, 1, http_request_method="POST", http_route="/users/<int:user_id>",
        http_response_status_code="200", url_scheme="http",
    )  # fmt: skip
    routes = {s["http_route"] for s in series(flask_server.scrape(), DURATION)}
    assert routes == {"/users/<int:user_id>"}


def test_exception_is_500_with_error_type(flask_server: Served, zipkin: Receiver) -> None:
    assert httpx.get(f"{flask_server.base}/boom").status_code == 500
    flask_server.wait_metric(
        DURATION, 1, http_request_method="GET", http_route="/boom",
        http_response_status_code="500", url_scheme="http", error_type="KeyError",
    )  # fmt: skip
    [span] = spans_named(zipkin.wait_for(1), "GET /boom")
    assert span["kind"] == "SERVER"
    assert span["tags"]["error.type"] == "KeyError"
    assert span["tags"]["http.response.status_code"] == "500"
    assert "error" in span["tags"]


def test_5xx_without_exception_has_status_as_error_type(flask_server: Served) -> None:
    assert httpx.get(f"{flask_server.base}/unavailable").status_code == 503
    flask_server.wait_metric(
        DURATION, 1, http_request_method="GET", http_route="/unavailable",
        http_response_status_code="503", url_scheme="http", error_type="503",
    )  # fmt: skip


def test_unknown_routes_and_methods_stay_bounded(flask_server: Served) -> None:
    for i in range(5):
        assert httpx.get(f"{flask_server.base}/no/such/{i}").status_code == 404
    assert httpx.request("BREW", f"{flask_server.base}/users/1").status_code == 405
    flask_server.wait_metric(
        DURATION, 5, http_request_method="GET", http_route="unmatched",
        http_response_status_code="404", url_scheme="http",
    )  # fmt: skip
    # Flask matched the URL but not the method: no rule, so unmatched; the method is _OTHER.
    flask_server.wait_metric(
        DURATION, 1, http_request_method="_OTHER", http_route="unmatched",
        http_response_status_code="405", url_scheme="http",
    )  # fmt: skip
    samples = flask_server.scrape()
    assert not [s for s in series(samples, DURATION) if "/no/such" in s["http_route"]]
    active = series(samples, "http_server_active_requests")
    assert {s["http_request_method"] for s in active} <= {"GET", "_OTHER"}
    for labels in active:
        key = ("http_server_active_requests", frozenset(labels.items()))
        assert samples[key] == 0


def test_server_span_continues_the_client_trace(flask_server: Served, zipkin: Receiver) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent = "00f067aa0ba902b7"
    headers = {"traceparent": f"00-{trace_id}-{parent}-01"}
    assert httpx.get(f"{flask_server.base}/users/5", headers=headers).status_code == 200
    [span] = spans_named(zipkin.wait_for(1), "GET /users/<int:user_id>")
    assert span["traceId"] == trace_id
    assert span["parentId"] == parent
    assert span["tags"]["http.route"] == "/users/<int:user_id>"
    assert span["localEndpoint"]["serviceName"] == "flask-svc"
