"""A limiter and a breaker behind a real WSGI server on loopback.

The limiter's key is read from the request context the transport fills from the real HTTP
headers, and the delaying form is bounded by the deadline the server sets. The HTTP status of a
refused call is the transports' business; these assert on the metrics and outcomes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import httpx
import pytest

from kitobs.circuitbreaker import Breaker
from kitobs.endpoint import chain
from kitobs.endpoint.instrument import instrumenting
from kitobs.ratelimit import Limiter, delaying, erroring, from_metadata
from kitobs.transport import wsgi
from tests.support.resilience import Recording, recording

DECISIONS = "kitobs_ratelimit_decisions_total"
DURATION = "kitobs_endpoint_duration_seconds"


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def served() -> Iterator[tuple[str, Recording]]:
    rec = recording()
    per_client = Limiter(
        "per_client", rate=0.001, burst=2, key=from_metadata("x-client"), kit=rec.kit
    )
    slow = Limiter("slow", rate=0.001, burst=1, kit=rec.kit)
    breaker = Breaker("upstream", consecutive_failures=1, open_timeout=600.0, kit=rec.kit)

    def echo(request: Any) -> Any:
        return request

    def failing(request: Any) -> Any:
        raise ConnectionError("upstream down")

    routes = {
        "/echo": wsgi.Server(
            chain(instrumenting(rec.kit, name="echo"), erroring(per_client))(echo),
            wsgi.decode_json,
            wsgi.encode_json,
        ),
        "/slow": wsgi.Server(
            chain(instrumenting(rec.kit, name="slow"), delaying(slow))(echo),
            wsgi.decode_json,
            wsgi.encode_json,
            timeout=0.2,
        ),
        "/upstream": wsgi.Server(
            chain(instrumenting(rec.kit, name="upstream"), breaker)(failing),
            wsgi.decode_json,
            wsgi.encode_json,
        ),
    }

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        return routes[environ["PATH_INFO"]](environ, start_response)

    server: WSGIServer = make_server(
        "127.0.0.1", 0, wsgi.Middleware(app, rec.metrics), handler_class=_Quiet
    )
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", rec
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()


def _count(rec: Recording, endpoint: str, outcome: str) -> int:
    return len(rec.metrics.observations(DURATION, endpoint=endpoint, outcome=outcome))


def test_a_keyed_limiter_behind_a_real_server(served: tuple[str, Recording]) -> None:
    base, rec = served
    with httpx.Client(base_url=base, timeout=5) as client:
        for client_id in ("ada", "ada", "ada", "bob"):
            client.post("/echo", json={"n": 1}, headers={"X-Client": client_id})
    rec.metrics.assert_counter(DECISIONS, 3, limiter="per_client", decision="allowed")
    rec.metrics.assert_counter(DECISIONS, 1, limiter="per_client", decision="limited")
    assert (_count(rec, "echo", "success"), _count(rec, "echo", "limited")) == (3, 1)


def test_the_delaying_limiter_is_bounded_by_the_server_deadline(
    served: tuple[str, Recording],
) -> None:
    base, rec = served
    with httpx.Client(base_url=base, timeout=5) as client:
        client.post("/slow", json={})
        client.post("/slow", json={})  # the next token is 1000 s away, the deadline 0.2 s
    rec.metrics.assert_counter(DECISIONS, 1, limiter="slow", decision="limited")
    assert (_count(rec, "slow", "success"), _count(rec, "slow", "limited")) == (1, 1)


def test_an_open_breaker_behind_a_real_server(served: tuple[str, Recording]) -> None:
    base, rec = served
    with httpx.Client(base_url=base, timeout=5) as client:
        for _ in range(3):
            client.post("/upstream", json={})
    rec.metrics.assert_gauge("kitobs_breaker_state", 2, breaker="upstream")
    rec.metrics.assert_counter(
        "kitobs_breaker_rejected_total", 2, breaker="upstream", reason="open"
    )
    assert (_count(rec, "upstream", "exception"), _count(rec, "upstream", "rejected")) == (1, 2)
