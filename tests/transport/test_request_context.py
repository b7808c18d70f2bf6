"""The request context behind real servers (gunicorn gthread, uvicorn) and real HTTP clients.

Endpoints behind each server transport answer with what `kitobs.endpoint.context.current` shows
them; concurrent requests carry different ``X-Who`` headers, so a context seen by the wrong
request would answer with another request's name. The client tests send to a loopback server
that accepts and never answers.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import httpx
import pytest
import requests

from kitobs.endpoint import context
from kitobs.metrics import memory
from kitobs.transport import httpclient
from tests.support.zipkin import Receiver
from tests.transport.conftest import Served, serve

CONCURRENT = 12


def _get(url: str, who: str) -> dict[str, Any]:
    request = urllib.request.Request(url, headers={"X-Who": who, "Authorization": f"Bearer {who}"})
    with urllib.request.urlopen(request, timeout=20) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def _many(url: str) -> list[tuple[str, dict[str, Any]]]:
    whos = [f"client{i}" for i in range(CONCURRENT)]
    with futures.ThreadPoolExecutor(CONCURRENT) as pool:
        answers = list(pool.map(lambda who: _get(url, who), whos))
    return list(zip(whos, answers, strict=True))


@pytest.fixture(
    params=[
        ("gunicorn", "srv_context:wsgi_app"),
        ("uvicorn", "srv_context:asgi_app"),
        ("gunicorn", "srv_context:flask_app"),
        ("uvicorn", "srv_context:starlette_app"),
    ],
    ids=["wsgi", "asgi", "flask", "starlette"],
)
def context_server(request: pytest.FixtureRequest, zipkin: Receiver) -> Iterator[Served]:
    runner, module = request.param
    yield from serve(runner, module, zipkin)


def test_endpoints_see_their_own_headers_and_a_deadline(context_server: Served) -> None:
    for who, seen in _many(f"{context_server.base}/ctx"):
        assert seen["who"] == who
        assert seen["auth"] == f"Bearer {who}"
        # The servers are built with timeout=30: some of it is left, never more.
        assert 0 < seen["remaining"] <= 30


@pytest.mark.parametrize("module", ["srv_context:wsgi_app", "srv_context:asgi_app"])
def test_values_a_middleware_adds_reach_only_its_request(zipkin: Receiver, module: str) -> None:
    runner = "gunicorn" if "wsgi" in module else "uvicorn"
    for served in serve(runner, module, zipkin):
        for who, seen in _many(f"{served.base}/ctx"):
            assert seen["user"] == f"user-{who}"


def test_starlette_sync_views_in_the_thread_pool_see_the_context(zipkin: Receiver) -> None:
    for served in serve("uvicorn", "srv_context:starlette_app", zipkin):
        for who, seen in _many(f"{served.base}/sync"):
            assert seen["who"] == who
            assert 0 < seen["remaining"] <= 30


def test_django_views_see_their_own_headers(django_server: Served) -> None:
    for who, seen in _many(f"{django_server.base}/ctx/"):
        assert seen["who"] == who
        assert seen["remaining"] is None  # no KITOBS["timeout"] in that project


# -- clients --------------------------------------------------------------------------------------


class _Silent:
    """_Silent accepts connections on 127.0.0.1 and never answers; it hangs up after *hold* s."""

    def __init__(self, hold: float = 8.0) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/slow"
        self._hold = hold
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self._sock.settimeout(0.1)
        held: list[tuple[socket.socket, float]] = []
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
                held.append((conn, time.monotonic()))
                self.accepted += 1
            except TimeoutError:
                pass
            for conn, since in list(held):
                if time.monotonic() - since > self._hold:
                    conn.close()
                    held.remove((conn, since))
        for conn, _ in held:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


@pytest.fixture
def silent() -> Iterator[_Silent]:
    server = _Silent()
    try:
        yield server
    finally:
        server.close()


def test_httpx_times_out_at_the_request_deadline(silent: _Silent) -> None:
    transport = httpclient.HTTPXTransport(httpx.HTTPTransport(), memory.Provider())
    with (
        httpx.Client(transport=transport, timeout=60) as client,
        context.scoped(timeout=0.5),
        pytest.raises(httpx.ReadTimeout) as caught,
    ):
        client.get(silent.url)
    # The client's own 60 s were cut to what was left of the deadline.
    assert 0 < caught.value.request.extensions["timeout"]["read"] <= 0.5


def test_async_httpx_times_out_at_the_request_deadline(silent: _Silent) -> None:
    import asyncio

    async def call() -> httpx.Request:
        transport = httpclient.AsyncHTTPXTransport(httpx.AsyncHTTPTransport(), memory.Provider())
        async with httpx.AsyncClient(transport=transport, timeout=60) as client:
            with context.scoped(timeout=0.5), pytest.raises(httpx.ReadTimeout) as caught:
                await client.get(silent.url)
            return caught.value.request

    request = asyncio.run(call())
    assert 0 < request.extensions["timeout"]["read"] <= 0.5


def test_requests_times_out_at_the_request_deadline(silent: _Silent) -> None:
    session = requests.Session()
    session.mount("http://", httpclient.RequestsAdapter(memory.Provider()))
    with context.scoped(timeout=0.5), pytest.raises(requests.exceptions.ReadTimeout):
        session.get(silent.url, timeout=60)
    session.close()


def test_urllib_times_out_at_the_request_deadline(silent: _Silent) -> None:
    opener = urllib.request.build_opener(*httpclient.urllib_handlers(memory.Provider()))
    with context.scoped(timeout=0.5), pytest.raises(TimeoutError):
        opener.open(silent.url, timeout=60)


def test_a_passed_deadline_fails_before_sending(silent: _Silent) -> None:
    transport = httpclient.HTTPXTransport(httpx.HTTPTransport(), memory.Provider())
    with (
        httpx.Client(transport=transport) as client,
        context.scoped(deadline=time.monotonic() - 1.0),
        pytest.raises(context.DeadlineExceeded, match=r"GET http://127\.0\.0\.1:\d+/slow"),
    ):
        client.get(silent.url)
    assert silent.accepted == 0
