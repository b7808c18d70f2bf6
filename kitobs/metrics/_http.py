"""Serving pages over HTTP: the reply of a WSGI or ASGI page, a small standalone server, and
address parsing.

`wsgi_reply` and `asgi_reply` answer one request with a page rendered for its ``Accept`` header;
`Pages` gives a backend with one page its ``wsgi_app``, ``asgi_app`` and routes from them.
`serve` runs WSGI apps by path on a loopback address in a daemon thread; `Server.close` stops it
and frees the port, so a new server can bind the same port at once.
"""

from __future__ import annotations

import asyncio
import socketserver
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from kitobs.errors import ConfigError

if TYPE_CHECKING:
    from kitobs.metrics import ASGIApp, WSGIApp

__all__ = [
    "Page",
    "Pages",
    "Server",
    "asgi_reply",
    "parse_address",
    "route",
    "serve",
    "wsgi_reply",
]

_WSGI = Callable[..., Iterable[bytes]]

#: Page renders a page for an ``Accept`` header: (body, content type).
Page = Callable[[str], tuple[bytes, str]]


def wsgi_reply(
    environ: Mapping[str, Any], start_response: Callable[..., Any], page: Page
) -> list[bytes]:
    """wsgi_reply answers a WSGI request with *page* rendered for its ``Accept`` header."""
    body, content_type = page(environ.get("HTTP_ACCEPT", ""))
    start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


async def asgi_reply(
    scope: Mapping[str, Any], send: Callable[[Mapping[str, Any]], Any], page: Page
) -> None:
    """asgi_reply answers an ASGI 3 ``http`` request with *page*; other scopes get nothing."""
    if scope.get("type") != "http":
        return
    accept = ""
    for name, value in scope.get("headers", ()):
        if name.lower() == b"accept":
            accept = value.decode("latin-1")
    # Rendering is CPU-bound and short; a thread keeps a big registry off the event loop.
    body, content_type = await asyncio.to_thread(page, accept)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Pages:
    """Pages serves a backend's one page at ``self.path`` over WSGI and ASGI.

    A backend mixes it in, sets ``path`` and defines ``_page(accept)``, which renders the page
    for an ``Accept`` header as (body, content type).
    """

    __slots__ = ()

    path: str

    def _page(self, accept: str) -> tuple[bytes, str]:
        raise NotImplementedError

    def wsgi_app(
        self, environ: Mapping[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        """wsgi_app serves the page (WSGI), e.g. the exposition negotiated by ``Accept``."""
        return wsgi_reply(environ, start_response, self._page)

    async def asgi_app(
        self,
        scope: Mapping[str, Any],
        receive: Callable[[], Any],
        send: Callable[[Mapping[str, Any]], Any],
    ) -> None:
        """asgi_app serves the page (ASGI 3 ``http`` scope), like `wsgi_app`."""
        await asgi_reply(scope, send, self._page)

    def wsgi_routes(self) -> dict[str, WSGIApp]:
        """wsgi_routes maps the page's path to its WSGI app, e.g. ``{"/metrics": app}``."""
        return {self.path: self.wsgi_app}

    def asgi_routes(self) -> dict[str, ASGIApp]:
        """asgi_routes maps the page's path to its ASGI app, e.g. ``{"/metrics": app}``."""
        return {self.path: self.asgi_app}


def parse_address(value: str, *, key: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """parse_address reads ``host:port`` (or ``:port``), e.g. ``127.0.0.1:9464``.

    Raises:
        ConfigError: not host:port, or the port is not 0..65535; the message names *key*.
    """
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(
            "is not host:port", key=key, value=value, allowed="host:port, e.g. 127.0.0.1:9464"
        )
    host = host.strip("[]") or default_host
    if host == "0.0.0.0":
        raise ConfigError(
            "binding every interface is not allowed; name the interface", key=key, value=value
        )
    return host, int(port)


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not logged to stderr."""


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _SharedPortServer(_ThreadingServer):
    # Every worker of a multi-process server binds the same port; the kernel spreads
    # connections over them, and each answers with the totals of all (Linux, same user only).
    allow_reuse_port = True


def route(routes: Mapping[str, _WSGI]) -> _WSGI:
    """route dispatches by ``PATH_INFO`` to *routes*, 404 otherwise."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        target = routes.get(environ.get("PATH_INFO", "/") or "/")
        if target is None:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
        return target(environ, start_response)

    return app


class Server:
    """Server serves WSGI apps on one address until `close`, e.g. ``serve(routes, addr)``."""

    __slots__ = ("_server", "_thread", "address")

    def __init__(
        self, routes: Mapping[str, _WSGI], host: str, port: int, *, reuse_port: bool = False
    ) -> None:
        kind = _SharedPortServer if reuse_port else _ThreadingServer
        self._server = kind((host, port), _Quiet)
        self._server.set_app(route(dict(routes)))
        self.address: tuple[str, int] = self._server.server_address[:2]  # type: ignore[assignment]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """close stops serving and frees the port; it is idempotent."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()


def serve(
    routes: Mapping[str, _WSGI], address: str, *, key: str, reuse_port: bool = False
) -> Server:
    """serve starts a `Server` on *address* (``host:port``, port 0 picks one).

    With *reuse_port*, processes of one user may each bind the same address (``SO_REUSEPORT``).
    """
    host, port = parse_address(address, key=key)
    try:
        return Server(routes, host, port, reuse_port=reuse_port)
    except OSError as err:
        raise ConfigError(f"cannot listen: {err}", key=key, value=address) from None
