"""The documented recipes under real servers: scrapes unrecorded, access log lines, exemplars.

Each recipe mounts the exposition page inside the instrumented app (Flask and Django under
gunicorn, FastAPI and Django's ASGI handler under uvicorn). Exemplars are read back from the real
Prometheus (``scripts/services up``), which scrapes the recipe server on the app port.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import servers
from tests.support.zipkin import Receiver
from tests.transport.conftest import Served, series, spans_named

DURATION = "http_server_request_duration_seconds_count"

# (runner, module, the template of /users/<id>)
RECIPES = {
    "flask": ("gunicorn", "srv_recipe_flask", "/users/<int:user_id>"),
    "fastapi": ("uvicorn", "srv_recipe_fastapi", "/users/{user_id}"),
    "django": ("gunicorn", "srv_recipe_django", "/users/<int:user_id>"),
    "django-asgi": ("uvicorn", "srv_recipe_django:asgi_app", "/users/<int:user_id>"),
}


def _start(name: str, zipkin: Receiver, port: int = 0, **env: str) -> Served:
    runner, module, _ = RECIPES[name]
    return Served(runner, module, zipkin.url, port=port, KITOBS_TESTAPP_SERVICE=name, **env)


@pytest.fixture(params=sorted(RECIPES))
def recipe(request: pytest.FixtureRequest, zipkin: Receiver) -> Iterator[tuple[Served, str]]:
    """recipe is one recipe server and its route template for /users/<id>."""
    served = _start(request.param, zipkin)
    try:
        yield served, RECIPES[request.param][2]
    finally:
        served.close()


def _traceparent() -> tuple[str, str]:
    trace_id = uuid.uuid4().hex
    return trace_id, f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"


def _access_lines(served: Served, timeout: float = 10.0, want: int = 1) -> list[dict[str, Any]]:
    # The server writes the line after the response went out: poll its output.
    deadline = time.monotonic() + timeout
    while True:
        lines = []
        for line in served.log().splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("transport") == "http":
                    lines.append(record)
        if len(lines) >= want or time.monotonic() >= deadline:
            return lines
        time.sleep(0.05)


def test_scrapes_are_not_requests(recipe: tuple[Served, str], zipkin: Receiver) -> None:
    served, template = recipe
    for _ in range(3):
        page = httpx.get(f"{served.base}/metrics")
        assert page.status_code == 200
        assert "# TYPE" in page.text
    assert httpx.get(f"{served.base}/users/7").json() == {"id": 7}
    served.wait_metric(
        DURATION, 1, http_request_method="GET", http_route=template,
        http_response_status_code="200", url_scheme="http",
    )  # fmt: skip
    # Only the user request is counted: no /metrics or unmatched series, one span, one line.
    assert {s["http_route"] for s in series(served.scrape(), DURATION)} == {template}
    zipkin.wait_for(1)
    time.sleep(0.3)  # a span of a scrape would be exported by now (flush every 0.05 s)
    assert [s["name"] for s in zipkin.spans() if s["kind"] == "SERVER"] == [f"GET {template}"]
    assert [line["route"] for line in _access_lines(served)] == [template]


def test_access_log_line_names_the_request_and_its_span(
    recipe: tuple[Served, str], zipkin: Receiver
) -> None:
    served, template = recipe
    trace_id, traceparent = _traceparent()
    response = httpx.get(f"{served.base}/users/7", headers={"traceparent": traceparent})
    assert response.status_code == 200
    [span] = spans_named(zipkin.wait_for(1), f"GET {template}")
    [line] = _access_lines(served)
    assert line["level"] == "info"
    assert line["method"] == "GET"
    assert line["route"] == template
    assert line["status"] == "200"
    assert isinstance(line["duration"], float)
    assert line["duration"] > 0
    assert line["trace_id"] == trace_id == span["traceId"]
    assert line["span_id"] == span["id"]
    assert "error" not in line


def test_access_log_line_of_a_failure_is_an_error(
    recipe: tuple[Served, str], zipkin: Receiver
) -> None:
    served, _ = recipe
    assert httpx.get(f"{served.base}/boom").status_code == 500
    [line] = _access_lines(served)
    assert line["level"] == "error"
    assert line["route"] == "/boom"
    assert line["status"] == "500"
    assert line["error"] == "KeyError"


def test_access_log_can_be_switched_off(zipkin: Receiver) -> None:
    served = _start("flask", zipkin, KITOBS_TRANSPORT_HTTP_ACCESS_LOG="false")
    try:
        assert httpx.get(f"{served.base}/users/7").status_code == 200
        served.wait_metric(
            DURATION, 1, http_request_method="GET", http_route="/users/<int:user_id>",
            http_response_status_code="200", url_scheme="http",
        )  # fmt: skip
        zipkin.wait_for(1)
        assert _access_lines(served, timeout=0.5) == []
    finally:
        served.close()


def test_excluded_paths_are_configurable(zipkin: Receiver) -> None:
    # With the list emptied, scrapes are requests again: only scrapes were made, yet counted.
    served = _start("fastapi", zipkin, KITOBS_TRANSPORT_HTTP_EXCLUDE_PATHS="")
    try:
        assert httpx.get(f"{served.base}/metrics").status_code == 200
        # The readiness probe scrapes too: every span is a scrape, and there is at least one.
        spans = zipkin.wait_for(1)
        assert spans
        assert {span["tags"]["url.path"] for span in spans} == {"/metrics"}
        counted = sum(v for (n, _), v in served.scrape().items() if n == DURATION)
        assert counted >= 1
        assert _access_lines(served)
    finally:
        served.close()


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_http_histogram_exemplar_is_the_request_span(
    name: str, zipkin: Receiver, app_port: int, prometheus_url: str
) -> None:
    template = RECIPES[name][2]
    served = _start(name, zipkin, port=_free_app_port(app_port))
    try:
        trace_id, traceparent = _traceparent()
        assert httpx.get(f"{served.base}/users/7", headers={"traceparent": traceparent}).is_success
        [span] = spans_named(zipkin.wait_for(1), f"GET {template}")
        assert span["traceId"] == trace_id
        found = servers.wait_for_exemplars(
            prometheus_url,
            f'http_server_request_duration_seconds_bucket{{http_route="{template}"}}',
            lambda got: any(e["labels"].get("trace_id") == trace_id for e in got),
        )
        [mine] = [e for e in found if e["labels"].get("trace_id") == trace_id]
        assert mine["labels"]["span_id"] == span["id"]
        assert mine["series"]["http_route"] == template
    finally:
        served.close()


def _free_app_port(port: int, timeout: float = 30.0) -> int:
    # Another test may still hold the port Prometheus scrapes: wait until it is free.
    import socket

    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
            try:
                probe.bind(("127.0.0.1", port))
                return port
            except OSError:
                if time.monotonic() >= deadline:
                    raise
        time.sleep(0.2)
