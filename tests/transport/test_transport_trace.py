"""Two services, one calling the other through the instrumented client, make one trace."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.zipkin import Receiver
from tests.transport.conftest import Served, serve, spans_named


@pytest.fixture
def downstream(zipkin: Receiver) -> Iterator[Served]:
    yield from serve("uvicorn", "srv_starlette", zipkin, KITOBS_TESTAPP_SERVICE="users")


@pytest.fixture
def upstream(zipkin: Receiver, downstream: Served) -> Iterator[Served]:
    yield from serve(
        "gunicorn", "srv_flask", zipkin,
        KITOBS_TESTAPP_SERVICE="front", KITOBS_TESTAPP_DOWNSTREAM=downstream.base,
    )  # fmt: skip


def test_two_services_one_trace(upstream: Served, downstream: Served, zipkin: Receiver) -> None:
    assert httpx.get(f"{upstream.base}/chain").json() == {"downstream": 200}
    spans = zipkin.wait_for(3)
    [front] = spans_named(spans, "GET /chain")
    [client] = [s for s in spans if s.get("kind") == "CLIENT"]
    [users] = spans_named(spans, "GET /users/{user_id:int}")
    assert front["localEndpoint"]["serviceName"] == "front"
    assert users["localEndpoint"]["serviceName"] == "users"
    assert front["traceId"] == client["traceId"] == users["traceId"]
    assert "parentId" not in front
    assert client["parentId"] == front["id"]
    assert users["parentId"] == client["id"]
    assert client["remoteEndpoint"]["port"] == downstream.port
    # Each side counted its own layer: the front's client metric, the users' server metric.
    upstream.wait_metric(
        "http_client_request_duration_seconds_count", 1, http_request_method="GET",
        server_address="127.0.0.1", server_port=str(downstream.port),
        http_response_status_code="200",
    )  # fmt: skip
    downstream.wait_metric(
        "http_server_request_duration_seconds_count", 1, http_request_method="GET",
        http_route="/users/{user_id:int}", http_response_status_code="200", url_scheme="http",
    )  # fmt: skip
