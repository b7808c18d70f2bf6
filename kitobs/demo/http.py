"""The demo's HTTP side: decode requests, call the instrumented endpoints, encode responses."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from kitobs.demo.service import IntRequest, Response, SlowRequest, TextRequest, make_endpoints
from kitobs.endpoint import chain
from kitobs.endpoint.logging import logging_middleware
from kitobs.kit import Kit

__all__ = ["DemoServer", "build_app"]

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class _BadRequest(Exception):
    pass


def _int(query: dict[str, list[str]], name: str) -> int:
    try:
        return int(query.get(name, ["0"])[0])
    except ValueError:
        raise _BadRequest(f"{name} must be an integer") from None


def _decoders() -> dict[str, Callable[[dict[str, list[str]]], Any]]:
    return {
        "/sum": lambda q: IntRequest(_int(q, "a"), _int(q, "b")),
        "/concat": lambda q: TextRequest(q.get("a", [""])[0], q.get("b", [""])[0]),
        "/slow": lambda q: SlowRequest(float(_int(q, "ms") or 100)),
        "/flaky": lambda q: None,
    }


def build_app(kit: Kit) -> WSGIApp:
    """build_app returns the demo's WSGI application, instrumented through *kit*."""
    endpoints = make_endpoints()
    middleware = chain(logging_middleware(kit.logger))
    routes: dict[str, tuple[Callable[[dict[str, list[str]]], Any], Any]] = {}
    for path, decode in _decoders().items():
        routes[path] = (decode, middleware(endpoints[path[1:]]))
    extra: dict[str, WSGIApp] = dict(kit.metrics.wsgi_routes())

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path in extra:
            return extra[path](environ, start_response)
        if path == "/healthz":
            return _send(start_response, "200 OK", {"status": "ok"})
        route = routes.get(path)
        if route is None:
            return _send(start_response, "404 Not Found", {"error": "no such route"})
        decode, endpoint = route
        try:
            request = decode(parse_qs(environ.get("QUERY_STRING", "")))
        except _BadRequest as err:
            return _send(start_response, "400 Bad Request", {"error": str(err)})
        try:
            response: Response = endpoint(request)
        except Exception as err:
            return _send(start_response, "500 Internal Server Error", {"error": str(err)})
        if response.err is not None:
            return _send(start_response, "422 Unprocessable Entity", {"error": str(response.err)})
        return _send(start_response, "200 OK", {"value": response.value})

    return app


def _send(start_response: StartResponse, status: str, body: dict[str, Any]) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        # Requests are logged through kitobs, not wsgiref's access log.
        pass


class DemoServer:
    """DemoServer serves the demo app on *host*:*port* from a background thread."""

    def __init__(self, kit: Kit, host: str, port: int) -> None:
        self._server = make_server(
            host, port, build_app(kit), server_class=_ThreadingServer, handler_class=_QuietHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="kitobs-demo-http", daemon=True
        )
        bound_host, bound_port = self._server.server_address[:2]
        self.url = f"http://{bound_host}:{bound_port}"

    def start(self) -> None:
        """start begins serving."""
        self._thread.start()

    def stop(self) -> None:
        """stop stops serving and frees the port."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()
