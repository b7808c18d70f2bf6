"""Django's WSGI handler under gunicorn, instrumented by the settings-configured middleware."""

from __future__ import annotations

import httpx

from tests.support.zipkin import Receiver
from tests.transport.conftest import Served, spans_named

DURATION = "http_server_request_duration_seconds_count"


def test_django_route_unmatched_and_exception(django_server: Served, zipkin: Receiver) -> None:
    for pk in (1, 2, 3):
        assert httpx.get(f"{django_server.base}/articles/{pk}/").json() == {"pk": pk}
    assert httpx.get(f"{django_server.base}/nowhere/").status_code == 404
    assert httpx.get(f"{django_server.base}/boom/").status_code == 500
    django_server.wait_metric(
        DURATION, 3, http_request_method="GET", http_route="/articles/<int:pk>/",
        http_response_status_code="200", url_scheme="http",
    )  # fmt: skip
    django_server.wait_metric(
        DURATION, 1, http_request_method="GET", http_route="unmatched",
        http_response_status_code="404", url_scheme="http",
    )  # fmt: skip
    django_server.wait_metric(
        DURATION, 1, http_request_method="GET", http_route="/boom/",
        http_response_status_code="500", url_scheme="http", error_type="ArithmeticError",
    )  # fmt: skip
    spans = zipkin.wait_for(5)
    assert len(spans_named(spans, "GET /articles/<int:pk>/")) == 3
    [boom] = spans_named(spans, "GET /boom/")
    assert boom["tags"]["error.type"] == "ArithmeticError"
