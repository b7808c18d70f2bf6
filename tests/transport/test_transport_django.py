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


def test_django_under_asgi_runs_the_middleware_on_the_loop(
    django_asgi_server: Served, zipkin: Receiver
) -> None:
    base = django_asgi_server.base
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    seen = [httpx.get(f"{base}/articles/{pk}/").json() for pk in (1, 2)]
    traced = httpx.get(f"{base}/articles/3/", headers={"traceparent": parent}).json()
    legacy = httpx.get(f"{base}/legacy/").json()
    assert httpx.get(f"{base}/nowhere/").status_code == 404
    assert httpx.get(f"{base}/boom/").status_code == 500
    # The middleware started every request on the event loop's thread (a sync-only middleware
    # is moved to a worker thread by Django); async views ran there too, the sync one was adapted.
    loop_thread = seen[0]["middleware_thread"]
    assert {s["middleware_thread"] for s in [*seen, traced, legacy]} == {loop_thread}
    assert {s["thread"] for s in [*seen, traced]} == {loop_thread}
    assert legacy["thread"] != loop_thread
    django_asgi_server.wait_metric(
        DURATION, 3, http_request_method="GET", http_route="/articles/<int:pk>/",
        http_response_status_code="200", url_scheme="http",
    )  # fmt: skip
    django_asgi_server.wait_metric(
        DURATION, 1, http_request_method="GET", http_route="unmatched",
        http_response_status_code="404", url_scheme="http",
    )  # fmt: skip
    django_asgi_server.wait_metric(
        DURATION, 1, http_request_method="GET", http_route="/boom/",
        http_response_status_code="500", url_scheme="http", error_type="ArithmeticError",
    )  # fmt: skip
    spans = zipkin.wait_for(7)
    articles = spans_named(spans, "GET /articles/<int:pk>/")
    # The SERVER span of each request is the current span inside its view, sync or async.
    for view_saw in [*seen, traced]:
        [span] = [s for s in articles if s["id"] == view_saw["ids"][1]]
        assert span["traceId"] == view_saw["ids"][0]
        assert span["kind"] == "SERVER"
    [span] = spans_named(spans, "GET /legacy/")
    assert [span["traceId"], span["id"]] == legacy["ids"]
    # The incoming traceparent is the parent of its request's span.
    [child] = [s for s in articles if s["id"] == traced["ids"][1]]
    assert [child["traceId"], child["parentId"]] == parent.split("-")[1:3]
    [boom] = spans_named(spans, "GET /boom/")
    assert boom["tags"]["error.type"] == "ArithmeticError"
