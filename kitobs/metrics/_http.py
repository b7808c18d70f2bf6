"""Serving pages over HTTP: the reply of a WSGI or ASGI page, a small standalone server, and
address parsing.

`wsgi_reply` and `asgi_reply` answer one request with a page rendered for its ``Accept`` header;
`Pages` gives a backend with one page its ``wsgi_app``, ``asgi_app`` and routes from them. The ASGI
app is an `ASGIPage` object rather than a method, so frameworks that tell request handlers from
ASGI apps by type (Starlette's and FastAPI's ``app.add_route``) serve it as an ASGI app.
`serve` runs WSGI apps by path on a loopback address in a daemon thread; `Server.close` stops it
and frees the port, so a new server can bind the same port at once.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import socketserver
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from kitobs.errors import ConfigError

if TYPE_CHECKING:
    from kitobs.metrics import ASGIApp, WSGIApp

__all__ = [
    "ASGIPage",
    "Page",
    "Pages",
    "Server",
    "asgi_reply",
    "listen_address",
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


class ASGIPage:
    """ASGIPage serves a `Page` as an ASGI 3 app, e.g. ``app.add_route("/metrics", page)``.

    It is an object, not a function: Starlette's ``add_route`` wraps functions and methods as
    request handlers (``handler(request)``) and mounts any other callable as an ASGI app.
    """

    __slots__ = ("_page",)

    def __init__(self, page: Page) -> None:
        self._page = page

    async def __call__(
        self,
        scope: Mapping[str, Any],
        receive: Callable[[], Any],
        send: Callable[[Mapping[str, Any]], Any],
    ) -> None:
        """Answer an ASGI ``http`` request with the page; other scopes get nothing."""
        await asgi_reply(scope, send, self._page)


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

    @property
    def asgi_app(self) -> ASGIPage:
        """asgi_app serves the page (ASGI 3 ``http`` scope), like `wsgi_app`: an `ASGIPage`."""
        return ASGIPage(self._page)

    def wsgi_routes(self) -> dict[str, WSGIApp]:
        """wsgi_routes maps the page's path to its WSGI app, e.g. ``{"/metrics": app}``."""
        return {self.path: self.wsgi_app}

    def asgi_routes(self) -> dict[str, ASGIApp]:
        """asgi_routes maps the page's path to its ASGI app, e.g. ``{"/metrics": app}``."""
        return {self.path: self.asgi_app}


def parse_address(
    value: str, *, key: str, default_host: str = "127.0.0.1", allow_public: bool = False
) -> tuple[str, int]:
    """parse_address reads a listen address ``host:port`` (or ``:port``, ``[::1]:port``), e.g.
    ``127.0.0.1:9464``, and checks that it names an interface.

    Every spelling of "all interfaces" (``0.0.0.0``, ``0``, ``0x0``, ``::``, ``::ffff:0.0.0.0``,
    or a name resolving to one of them) is refused unless *allow_public*: the host is resolved as
    the socket layer will resolve it (`listen_address`), not compared as text.

    Raises:
        ConfigError: not host:port, the port is not 0..65535, the host does not resolve, or it
            means every interface; the message names *key*.
    """
    host, port = _split(value, key=key, default_host=default_host)
    listen_address(host, port, key=key, value=value, allow_public=allow_public)
    return host, port


def _split(value: str, *, key: str, default_host: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(
            "is not host:port", key=key, value=value, allowed="host:port, e.g. 127.0.0.1:9464"
        )
    # [::1]:9464: brackets set off an IPv6 address from the port (the last colon does too).
    host = host.strip("[]")
    return host or default_host, int(port)


def _every_interface(address: str) -> bool:
    """Say whether a numeric address (as getaddrinfo returns it) means every interface."""
    ip = ipaddress.ip_address(address.partition("%")[0])  # drop an IPv6 zone such as %eth0
    if ip.is_unspecified:
        return True
    # ::ffff:0.0.0.0 is IPv4's 0.0.0.0 reached through an IPv6 socket, which binds it as such.
    mapped = getattr(ip, "ipv4_mapped", None)
    return mapped is not None and mapped.is_unspecified


def listen_address(
    host: str, port: int, *, key: str, value: str, allow_public: bool = False
) -> tuple[socket.AddressFamily, tuple[Any, ...]]:
    """listen_address resolves *host* and *port* into the socket family and address to bind.

    A numeric host is read as the socket layer reads it (``0`` and ``0x0`` are IPv4 0.0.0.0);
    a name (``localhost``) is resolved, preferring IPv4 as binding a name did before. An address
    meaning every interface is refused unless *allow_public*.

    Raises:
        ConfigError: *host* does not resolve, or it means every interface; names *key*.
    """
    try:
        found = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST | socket.AI_PASSIVE
        )
    except (OSError, UnicodeError):
        try:  # not numeric: a host name
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as err:
            raise ConfigError(f"cannot resolve the host: {err}", key=key, value=value) from None
    found = [f for f in found if f[0] in (socket.AF_INET, socket.AF_INET6)]
    if not found:
        raise ConfigError("the host has no IPv4 or IPv6 address", key=key, value=value)
    if not allow_public and any(_every_interface(str(f[4][0])) for f in found):
        raise ConfigError(
            "binding every interface is not allowed; name the interface",
            key=key,
            value=value,
            allowed="an interface's address such as 127.0.0.1 or [::1], or set "
            "metrics.allow_public_listen = true",
        )
    ipv4 = [f for f in found if f[0] == socket.AF_INET]
    family, _, _, _, sockaddr = (ipv4 or found)[0]
    return family, sockaddr


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not logged to stderr."""


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        family: socket.AddressFamily,
        address: tuple[Any, ...],
        handler: type[WSGIRequestHandler],
    ) -> None:
        self.address_family = family  # read when the socket is made: AF_INET6 for [::1]
        super().__init__(address, handler)


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
        self,
        routes: Mapping[str, _WSGI],
        family: socket.AddressFamily,
        sockaddr: tuple[Any, ...],
        *,
        reuse_port: bool = False,
    ) -> None:
        kind = _SharedPortServer if reuse_port else _ThreadingServer
        self._server = kind(family, sockaddr, _Quiet)
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
    routes: Mapping[str, _WSGI],
    address: str,
    *,
    key: str,
    allow_public: bool = False,
    reuse_port: bool = False,
) -> Server:
    """serve starts a `Server` on *address* (``host:port`` or ``[::1]:port``; port 0 picks one).

    With *reuse_port*, processes of one user may each bind the same address (``SO_REUSEPORT``).

    Raises:
        ConfigError: a bad or every-interface address (see `parse_address`), or the bind failed.
    """
    host, port = _split(address, key=key, default_host="127.0.0.1")
    family, sockaddr = listen_address(host, port, key=key, value=address, allow_public=allow_public)
    try:
        return Server(routes, family, sockaddr, reuse_port=reuse_port)
    except OSError as err:
        raise ConfigError(f"cannot listen: {err}", key=key, value=address) from None
