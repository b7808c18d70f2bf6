"""The demo's HTTP side, built from kitobs' transport the way a user would build it.

Each route is a go-kit style `kitobs.transport.wsgi.Server` (decode, endpoint, encode) around an
instrumented endpoint; a small router picks the route; `kitobs.transport.wsgi.Middleware` wraps
the whole application outermost, so every request, including unknown paths and the metrics pages,
gets ``http_server_*`` metrics and a SERVER span.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from kitobs.demo import guards
from kitobs.demo.messaging import Relay
from kitobs.demo.service import IntRequest, SlowRequest, TextRequest, make_endpoints
from kitobs.endpoint.instrument import instrumenting
from kitobs.kit import Kit
from kitobs.transport import wsgi

__all__ = ["BadRequest", "DemoServer", "build_app"]

Decoder = Callable[[wsgi.Environ], Any]


class BadRequest(Exception):
    """BadRequest is a malformed query string; it is answered with status 400."""

    status_code = 400


def _query(environ: wsgi.Environ) -> dict[str, list[str]]:
    return parse_qs(environ.get("QUERY_STRING", ""))


def _int(query: dict[str, list[str]], name: str, default: int = 0) -> int:
    raw = query.get(name, [str(default)])[0]
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer") from None


def _decode_sum(environ: wsgi.Environ) -> IntRequest:
    query = _query(environ)
    return IntRequest(_int(query, "a"), _int(query, "b"))


def _decode_concat(environ: wsgi.Environ) -> TextRequest:
    query = _query(environ)
    return TextRequest(query.get("a", [""])[0], query.get("b", [""])[0])


def _decoders() -> dict[str, Decoder]:
    return {
        "/sum": _decode_sum,
        "/concat": _decode_concat,
        "/slow": lambda env: SlowRequest(float(_int(_query(env), "ms", 100))),
        "/flaky": lambda env: None,
    }


def _encode(response: Any) -> wsgi.Response:
    return wsgi.encode_json({"value": response.value})


def build_app(
    kit: Kit,
    base_url: str = "http://127.0.0.1",
    key: guards.SigningKey | None = None,
    relay: Relay | None = None,
) -> wsgi.WSGIApp:
    """build_app returns the demo's WSGI application, instrumented through *kit*.

    *base_url* is where the app is served (its JWKS is read back from there); without a signing
    *key*, ``/whoami`` is not served, and without a *relay* (`kitobs.demo.messaging`), neither
    is ``/relay``.
    """
    endpoints = make_endpoints()
    instrumented = instrumenting(kit)
    guard = guards.ServerGuards(kit, base_url, key)
    routes: dict[str, wsgi.WSGIApp] = {}
    for path, decode in _decoders().items():
        name = path[1:]
        # Instrumented outermost, so a refused call is recorded (outcome="limited").
        endpoint = instrumented(guard.guard(path, endpoints[name]))
        routes[path] = wsgi.Server(endpoint, decode, _encode, route=path)
    no_request: Decoder = lambda env: None  # noqa: E731
    routes["/admin"] = wsgi.Server(
        instrumented(guard.api(guard.admin(guards.admin))), no_request, wsgi.encode_json,
        route="/admin",
    )  # fmt: skip
    if relay is not None:
        relayed = instrumenting(kit, name="relay")(guard.api(relay.call))
        routes["/relay"] = wsgi.Server(relayed, _decode_sum, _encode, route="/relay")
    if guard.bearer is not None and key is not None:
        routes["/whoami"] = wsgi.Server(
            instrumented(guard.api(guard.bearer(guards.whoami))), no_request, wsgi.encode_json,
            route="/whoami",
        )  # fmt: skip
        jwks = "/.well-known/jwks.json"
        routes[jwks] = _with_route(jwks, _json("200 OK", key.jwks))
    for path, page in kit.metrics.wsgi_routes().items():
        routes[path] = _with_route(path, page)
    routes["/healthz"] = _with_route("/healthz", _healthz)

    def router(environ: wsgi.Environ, start_response: wsgi.StartResponse) -> Iterable[bytes]:
        app = routes.get(environ.get("PATH_INFO", "/"))
        if app is None:
            return _not_found(environ, start_response)
        return app(environ, start_response)

    return wsgi.Middleware(router, kit.metrics, tracer=kit.tracer)


def _with_route(route: str, app: Callable[..., Any]) -> wsgi.WSGIApp:
    def routed(environ: wsgi.Environ, start_response: wsgi.StartResponse) -> Iterable[bytes]:
        environ[wsgi.ROUTE_KEY] = route
        result: Iterable[bytes] = app(environ, start_response)
        return result

    return routed


def _json(status: str, body: bytes) -> wsgi.WSGIApp:
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]

    def app(environ: wsgi.Environ, start_response: wsgi.StartResponse) -> Iterable[bytes]:
        start_response(status, headers)
        return [body]

    return app


_healthz = _json("200 OK", b'{"status": "ok"}')
_not_found = _json("404 Not Found", b'{"error": "no such route"}')


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        # Requests are logged through kitobs, not wsgiref's access log.
        pass


class DemoServer:
    """DemoServer serves the demo app on *host*:*port* from a background thread."""

    def __init__(
        self,
        kit: Kit,
        host: str,
        port: int,
        key: guards.SigningKey | None = None,
        relay: Relay | None = None,
    ) -> None:
        self._server = make_server(
            host, port, _not_found, server_class=_ThreadingServer, handler_class=_QuietHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="kitobs-demo-http", daemon=True
        )
        bound_host, bound_port = self._server.server_address[:2]
        if isinstance(bound_host, bytes):
            bound_host = bound_host.decode()
        self.url = f"http://{bound_host}:{bound_port}"
        # Built once the port is known: the app reads its own JWKS back from its URL.
        self._server.set_app(build_app(kit, self.url, key, relay))

    def start(self) -> None:
        """start begins serving."""
        self._thread.start()

    def stop(self) -> None:
        """stop stops serving and frees the port."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()
