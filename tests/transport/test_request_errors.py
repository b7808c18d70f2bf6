"""Real servers answer a `kitobs.endpoint.RequestError` with its status, headers and message.

Auth, rate-limit and breaker middleware refuse a call by raising one; every server transport
(kitobs's WSGI and ASGI `Server`, the Flask, Starlette, FastAPI and Django integrations, under
gunicorn and uvicorn) must send the caller its status (429 here) and its ``Retry-After``, and
record that status. An unexpected exception is a 500 whose body does not quote it.
"""

from __future__ import annotations

import httpx
import pytest

from tests.transport.conftest import Served

DURATION = "http_server_request_duration_seconds_count"

# fixture name -> the path of its /refused route and the http_route it is recorded under
SERVERS = {
    "wsgi_server": ("/refused", "/refused"),
    "asgi_server": ("/refused", "/refused"),
    "flask_server": ("/refused", "/refused"),
    "starlette_server": ("/refused", "/refused"),
    "fastapi_server": ("/refused", "/refused"),
    "django_server": ("/refused/", "/refused/"),
    "django_asgi_server": ("/refused/", "/refused/"),
}


@pytest.mark.parametrize("fixture", SERVERS)
def test_request_error_is_answered_with_its_status_and_headers(
    request: pytest.FixtureRequest, fixture: str
) -> None:
    served: Served = request.getfixturevalue(fixture)
    path, route = SERVERS[fixture]
    response = httpx.get(f"{served.base}{path}")
    assert response.status_code == 429, response.text
    assert response.headers["Retry-After"] == "7"
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == {"error": "slow down"}
    served.wait_metric(
        DURATION, 1, http_request_method="GET", http_route=route,
        http_response_status_code="429", url_scheme="http",
    )  # fmt: skip


@pytest.mark.parametrize("fixture", ["wsgi_server", "asgi_server"])
def test_unexpected_exception_is_a_500_that_does_not_quote_it(
    request: pytest.FixtureRequest, fixture: str
) -> None:
    served: Served = request.getfixturevalue(fixture)
    response = httpx.get(f"{served.base}/leaky")
    assert response.status_code == 500
    assert response.json() == {"error": "internal server error"}
    assert "hunter2" not in response.text
    served.wait_metric(
        DURATION, 1, http_request_method="GET", http_route="/leaky",
        http_response_status_code="500", url_scheme="http", error_type="KeyError",
    )  # fmt: skip
