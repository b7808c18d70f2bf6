"""The HTTP client endpoints against a real HTTP server on 127.0.0.1 (a stdlib server, port 0).

Each test checks what crossed the wire (body, headers, trace context), what the endpoint gave
back, and what it recorded (``http_client_request_duration_seconds`` and the CLIENT span).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from kitobs import config
from kitobs.endpoint import context, is_async
from kitobs.kit import Kit
from kitobs.log import nop as nop_logger
from kitobs.metrics import memory
from kitobs.sd import Endpointer, Instance, RoundRobin, StaticInstancer
from kitobs.tracing import Tracer
from kitobs.tracing.memory import Recorder
from kitobs.transport.httpclient import (
    AsyncClientEndpoint,
    ClientEndpoint,
    decode_json,
    encode_json,
    forward_metadata,
)

CLIENT = "http_client_request_duration_seconds"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append((self.path, dict(self.headers.items()), body))
        if self.path == "/slow":
            # Answer only once the test lets go (bounded, so a broken test cannot hang).
            self.server.release.wait(10)
        if self.path == "/missing":
            self._reply(404, {"error": "no such user"})
            return
        request = json.loads(body) if body else {}
        self._reply(200, {"v": request.get("a", 0) + request.get("b", 0)})

    def _reply(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[tuple[str, dict[str, str], bytes]] = []
        self.release = threading.Event()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out is gone before the answer: expected here

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


@pytest.fixture(scope="module")
def running() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.release.set()
        srv.shutdown()
        srv.server_close()
        thread.join(5)


@pytest.fixture
def server(running: _Server) -> Iterator[_Server]:
    running.seen.clear()
    running.release.clear()
    try:
        yield running
    finally:
        running.release.set()  # a handler still waiting returns


@dataclass
class Rig:
    kit: Kit
    metrics: memory.Provider
    spans: Recorder


@pytest.fixture
def rig() -> Rig:
    metrics, spans = memory.Provider(), Recorder()
    kit = Kit(
        config.load(env={}), logger=nop_logger(), metrics=metrics, tracer=Tracer(processor=spans)
    )
    return Rig(kit, metrics, spans)


def _labels(server: _Server, status: str, error: str = "") -> dict[str, str]:
    labels = {
        "http_request_method": "POST",
        "server_address": "127.0.0.1",
        "server_port": str(server.server_address[1]),
        "http_response_status_code": status,
    }
    if error:
        labels["error_type"] = error
    return labels


@dataclass
class Sum:
    a: int
    b: int


def test_sync_endpoint_encodes_calls_and_decodes(server: _Server, rig: Rig) -> None:
    with ClientEndpoint("POST", server.url("/sum"), kit=rig.kit) as add:
        assert add(Sum(2, 3)) == {"v": 5}
    [(path, headers, body)] = server.seen
    assert (path, json.loads(body)) == ("/sum", {"a": 2, "b": 3})
    rig.metrics.assert_histogram(CLIENT, count=1, **_labels(server, "200"))
    [span] = rig.spans.spans
    assert span.kind.name == "CLIENT"
    trace_id, span_id = span.hex_ids()
    # The CLIENT span's context crossed the wire: the server's span would be its child.
    assert headers["traceparent"].split("-")[1:3] == [trace_id, span_id]


def test_an_error_status_is_decoded(server: _Server, rig: Rig) -> None:
    @dataclass
    class Found:
        user: Any = None
        err: Exception | None = None

        def failed(self) -> BaseException | None:
            return self.err

    def decode(response: httpx.Response) -> Found:
        if response.status_code == 404:
            return Found(err=LookupError(response.json()["error"]))
        return Found(user=response.json())

    with ClientEndpoint("POST", server.url("/missing"), encode_json, decode, kit=rig.kit) as find:
        found = find({"name": "ada"})
        assert isinstance(found.err, LookupError)
        assert str(found.err) == "no such user"
    with (
        ClientEndpoint("POST", server.url("/missing"), kit=rig.kit) as strict,
        pytest.raises(httpx.HTTPStatusError) as raised,
    ):
        strict({})
    assert raised.value.response.status_code == 404
    rig.metrics.assert_histogram(CLIENT, count=2, **_labels(server, "404"))
    assert {s.attributes["http.response.status_code"] for s in rig.spans.spans} == {404}


def test_the_deadline_becomes_the_timeout(server: _Server, rig: Rig) -> None:
    timeouts: list[dict[str, float | None]] = []

    def look(ctx: context.RequestContext, request: httpx.Request) -> None:
        timeouts.append(dict(request.extensions["timeout"]))

    slow = ClientEndpoint("POST", server.url("/slow"), kit=rig.kit, before=[look], timeout=30.0)
    with slow, context.scoped(timeout=0.3), pytest.raises(httpx.ReadTimeout):
        slow({})
    [seen] = timeouts
    assert set(seen) == {"connect", "read", "write", "pool"}
    assert all(value is not None and 0 < value <= 0.3 for value in seen.values()), seen
    labels = _labels(server, "", "httpx.ReadTimeout")
    del labels["http_response_status_code"]  # no status arrived
    assert len(rig.metrics.observations(CLIENT, **labels)) == 1
    # Without a deadline the endpoint's own timeout applies.
    timeouts.clear()
    server.release.set()
    with ClientEndpoint("POST", server.url("/slow"), kit=rig.kit, before=[look]) as plain:
        assert plain({"a": 1}) == {"v": 1}
    assert timeouts == [{"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0}]


def test_a_passed_deadline_sends_nothing(server: _Server, rig: Rig) -> None:
    with ClientEndpoint("POST", server.url("/sum"), kit=rig.kit) as add:
        with context.scoped(timeout=0.0), pytest.raises(context.DeadlineExceeded):
            add({"a": 1})
        assert server.seen == []
        assert rig.spans.spans == []


def test_outgoing_metadata_is_forwarded_from_the_request_context(server: _Server, rig: Rig) -> None:
    before = [forward_metadata("Authorization", "x-request-id", "x-absent")]
    with ClientEndpoint("POST", server.url("/sum"), kit=rig.kit, before=before) as add:
        incoming = {"authorization": "Bearer ada", "X-Request-Id": "r-1", "cookie": "secret"}
        with context.scoped(metadata=incoming):
            assert add({"a": 1, "b": 1}) == {"v": 2}
    [(_, headers, _)] = server.seen
    lowered = {k.lower(): v for k, v in headers.items()}
    assert lowered["authorization"] == "Bearer ada"
    assert lowered["x-request-id"] == "r-1"
    assert "cookie" not in lowered  # only what was named crosses
    assert "x-absent" not in lowered


def test_a_given_client_is_used_and_left_open(server: _Server) -> None:
    client = httpx.Client()
    with ClientEndpoint("POST", server.url("/sum"), client=client) as add:
        assert add({"a": 4}) == {"v": 4}
    assert not client.is_closed
    client.close()


def test_async_endpoint(server: _Server, rig: Rig) -> None:
    before = [forward_metadata("authorization")]
    add = AsyncClientEndpoint("POST", server.url("/sum"), kit=rig.kit, before=before)
    assert is_async(add)  # so endpoint middlewares wrap it the async way

    async def calls() -> tuple[Any, Any]:
        async with add:
            with context.scoped(metadata={"authorization": "Bearer ada"}):
                ok = await add({"a": 1, "b": 2})
            with context.scoped(timeout=0.0):
                try:
                    await add({})
                except context.DeadlineExceeded as exc:
                    return ok, exc
        return ok, None

    ok, late = asyncio.run(calls())
    assert ok == {"v": 3}
    assert isinstance(late, context.DeadlineExceeded)
    [(_, headers, _)] = server.seen
    assert {k.lower(): v for k, v in headers.items()}["authorization"] == "Bearer ada"
    rig.metrics.assert_histogram(CLIENT, count=1, **_labels(server, "200"))
    [span] = rig.spans.spans
    assert span.kind.name == "CLIENT"


def test_decode_json_of_an_empty_body_is_none() -> None:
    request = httpx.Request("GET", "http://h/x")
    assert decode_json(httpx.Response(204, request=request)) is None
    assert decode_json(httpx.Response(200, json=[1], request=request)) == [1]
    assert encode_json("GET", "http://h/x", None).content == b""


def test_a_discovery_factory_builds_endpoints_from_base_urls(server: _Server, rig: Rig) -> None:
    port = server.server_address[1]

    def factory(instance: Instance) -> tuple[ClientEndpoint, Callable[[], None]]:
        base = f"http://{instance.address}:{instance.port}"
        endpoint = ClientEndpoint("POST", f"{base}/sum", kit=rig.kit)
        return endpoint, endpoint.close

    endpointer = Endpointer(StaticInstancer([Instance("127.0.0.1", port)]), factory)
    try:
        balancer = RoundRobin(endpointer.endpoints)
        assert balancer.choose()({"a": 2, "b": 2}) == {"v": 4}
    finally:
        endpointer.close()
    rig.metrics.assert_histogram(CLIENT, count=1, **_labels(server, "200"))
