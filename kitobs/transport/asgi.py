"""The ASGI transport: go-kit's HTTP `Server` around an endpoint, and `Middleware` for any app.

`Middleware` wraps an existing ASGI 3 application (Starlette, FastAPI, a bare coroutine) and
records, per HTTP request, ``http_server_request_duration_seconds`` and
``http_server_active_requests`` and, with a tracer, a SERVER span whose parent comes from the
request headers, current while the app runs::

    app = Middleware(app, kit.metrics, tracer=kit.tracer, logger=kit.logger)

With a *logger* each request also writes one access log line (`kitobs.transport.http.AccessLog`).
Requests for the *exclude_paths* (by default the exposition pages, ``/metrics`` and
``/debug/vars``; matched against ``scope["path"]``) are passed to the app unrecorded. Put it
outermost, so responses of inner middleware (429s, 500s) are counted. The route template is
read AFTER the app ran, from the scope the router updated: ``route_getter(scope)`` if given, else
``scope["route"].path`` (Starlette and FastAPI put the matched route there), else
``scope["kitobs.route"]``; no route gives ``unmatched``. A client that disconnects before the
response starts is recorded with status ``499``; an app that raises (including a cancelled task)
is recorded with its exception's ``error_type``, and status 500 if nothing was sent. WebSocket and
lifespan scopes pass through; when the app completes a lifespan shutdown, the exit flush (spans,
statsd lines, the last push, log buffers, within ``kit.exit_timeout``; docs/shutdown.md) runs
first. uvicorn needs this: after its graceful shutdown it re-raises SIGTERM with the default
disposition, so the process dies without running atexit hooks.

Both fill the request context (`kitobs.endpoint.context`) while the app runs: the request headers
as its metadata (decoded on first read), a deadline when built with ``timeout=`` (seconds), and
``cancelled`` set when the `Middleware` sees the client's ``http.disconnect`` (before or after
the context was built). It is built when first asked for (with a ``timeout``, at once) and then
kept under `CONTEXT_KEY` in the scope; a `Server` behind a `Middleware` keeps the middleware's
context (its own ``timeout`` can only make the deadline earlier). Each request runs in its own
task, so contexts never mix between concurrent requests.

`Server` is go-kit's ``http.Server`` for ASGI, with the same hooks as
`kitobs.transport.wsgi.Server`; the endpoint, *decode* and *encode* may each be sync or async
(decided at construction).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import (
    Awaitable,
    Callable,
    Iterable,
    MutableMapping,
    Sequence,
)
from typing import TYPE_CHECKING, Any

from kitobs import _exit
from kitobs.endpoint import BUSINESS_ERROR, Endpoint, RequestError, is_async, outcome
from kitobs.endpoint.context import (
    NO_VALUES,
    Cancellation,
    LazyMetadata,
    Pending,
    RequestContext,
    attach,
    detach,
    from_fields,
    held,
)
from kitobs.transport.http import (
    DEFAULT_EXCLUDE_PATHS,
    BadRequest,
    ScopeHeaders,
    ServerInstruments,
    Tracer,
    decode_json_body,
    server_timeout,
)
from kitobs.transport.http import exclude_paths as _exclude_paths
from kitobs.transport.wsgi import Response, default_error_encoder

if TYPE_CHECKING:
    from kitobs.log import Logger
    from kitobs.metrics import Provider

__all__ = [
    # Middleware for existing apps
    "Middleware",
    "ROUTE_KEY",
    "EXCEPTION_KEY",
    "CONTEXT_KEY",
    "DISCONNECTED_STATUS",
    "route_from_scope",
    # go-kit's server
    "Server",
    "Response",
    "decode_json",
    "BadRequest",
    "encode_json",
    # Types
    "Scope",
    "Message",
    "Receive",
    "Send",
    "ASGIApp",
]

Scope = MutableMapping[str, Any]
"""Scope is an ASGI connection scope, e.g. ``{"type": "http", "method": "GET", ...}``."""
Message = MutableMapping[str, Any]
"""Message is one ASGI event, e.g. ``{"type": "http.response.start", "status": 200}``."""
Receive = Callable[[], Awaitable[Message]]
"""Receive is ASGI's ``receive()``."""
Send = Callable[[Message], Awaitable[None]]
"""Send is ASGI's ``send(message)``."""
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
"""ASGIApp is an ASGI 3 application, e.g. a Starlette app."""

#: ROUTE_KEY is the scope key an app may set to the matched route template.
ROUTE_KEY = "kitobs.route"
#: EXCEPTION_KEY is the scope key holding an exception the app turned into an error response.
EXCEPTION_KEY = "kitobs.exception"
#: CONTEXT_KEY is the scope key holding the request's `kitobs.endpoint.context.RequestContext`
#: once it is built (the first `kitobs.endpoint.context.current` in the request builds it).
CONTEXT_KEY = "kitobs.context"
#: DISCONNECTED_STATUS labels requests whose client went away before the response started.
DISCONNECTED_STATUS = 499
# Set in the scope when the client disconnected, so a context built afterwards is cancelled.
_DISCONNECTED_KEY = "kitobs.disconnected"


def route_from_scope(scope: Scope) -> str | None:
    """route_from_scope reads the matched route template, e.g. ``"/users/{id}"``, or None.

    Starlette and FastAPI store the matched route in ``scope["route"]``; a ``Mount`` left there
    means nothing inside it matched. Inside a ``Mount`` the template is the inner route's path
    (the mount prefix is not added: a prefix with parameters would put raw values in the label).
    Otherwise ``scope["kitobs.route"]``.
    """
    matched = scope.get("route")
    if matched is not None:
        if getattr(matched, "routes", None) is not None:  # a Mount whose inner router missed
            return None
        path = getattr(matched, "path", None)
        if isinstance(path, str):
            return path
    route: str | None = scope.get(ROUTE_KEY)
    return route


class _ScopeMetadata(LazyMetadata):
    # The request headers as context metadata, decoded only when someone reads them.
    __slots__ = ("_scope",)

    def __init__(self, scope: Scope) -> None:
        self._scope = scope
        self._decoded = None

    def pairs(self) -> Iterable[tuple[str, str]]:
        return (
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in self._scope.get("headers", ())
        )


def _built_context(scope: Scope) -> RequestContext:
    # A Pending's build: the request's context, made once and kept in the scope. setdefault
    # keeps the first of two threads that build it at once, so both get the same object. A
    # disconnect the middleware saw before the context was built cancels it now.
    ctx: RequestContext | None = scope.get(CONTEXT_KEY)
    if ctx is None:
        ctx = scope.setdefault(
            CONTEXT_KEY, from_fields((None, Cancellation(), _ScopeMetadata(scope), NO_VALUES))
        )
        if _DISCONNECTED_KEY in scope:
            ctx.cancelled.set()
    return ctx


def _request_context(scope: Scope, timeout: float | None) -> RequestContext | Pending:
    # What a Server makes current: its own context (built on first use), or, with a timeout, a
    # context whose deadline is the earlier of the outer one (if any) and its own.
    if timeout is None:
        return (_built_context, scope)
    ctx = scope[CONTEXT_KEY] = _built_context(scope).derive(timeout=timeout)
    return ctx


class _Exchange:
    # One request: wraps receive/send to see disconnects, the status and the body size.
    __slots__ = ("_receive", "_scope", "_send", "code", "disconnected", "size")

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._scope = scope
        self._receive = receive
        self._send = send
        self.code = 0
        self.size = 0
        self.disconnected = False

    async def receive(self) -> Message:
        message = await self._receive()
        if message.get("type") == "http.disconnect":
            # Recorded first, then the context (if built) cancelled: a context built at the
            # same time in another thread sees one or the other (see _built_context).
            scope = self._scope
            scope[_DISCONNECTED_KEY] = True
            ctx = scope.get(CONTEXT_KEY)
            if ctx is not None:
                ctx.cancelled.set()
            if not self.code:
                self.disconnected = True
        return message

    async def send(self, message: Message) -> None:
        kind = message.get("type")
        if kind == "http.response.start":
            self.code = int(message.get("status", 0))
        elif kind == "http.response.body":
            self.size += len(message.get("body", b""))
        await self._send(message)


class Middleware:
    """Middleware records HTTP server metrics and spans, e.g. ``Middleware(starlette_app, p)``.

    Args:
        app: the ASGI application to instrument.
        metrics: the provider the contract's HTTP server metrics are declared on.
        tracer: starts a SERVER span per request when given (e.g. ``kit.tracer``).
        route_getter: returns the route template from the scope after the app ran, or None;
            default `route_from_scope`.
        logger: writes one access log line per request when given (e.g. ``kit.logger``).
        exclude_paths: ``scope["path"]`` values passed through unrecorded, e.g. ``("/metrics",)``.
        timeout: seconds each request may take, the request context's deadline; None for none.

    Raises:
        ConfigError: an excluded path does not start with ``/``, or *timeout* is not positive.
    """

    __slots__ = ("_app", "_excluded", "_instruments", "_route_getter", "_timeout", "_traced")

    def __init__(
        self,
        app: ASGIApp,
        metrics: Provider,
        *,
        tracer: Tracer | None = None,
        route_getter: Callable[[Scope], str | None] | None = None,
        logger: Logger | None = None,
        exclude_paths: Iterable[str] = DEFAULT_EXCLUDE_PATHS,
        timeout: float | None = None,
    ) -> None:
        self._app = app
        self._excluded = _exclude_paths(exclude_paths)
        self._instruments = ServerInstruments(metrics, tracer, logger)
        self._route_getter = route_getter or route_from_scope
        self._traced = tracer is not None
        self._timeout = server_timeout(timeout)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "") in self._excluded:
            if scope["type"] == "lifespan":
                send = _flush_before_shutdown(send)
            await self._app(scope, receive, send)
            return
        instruments = self._instruments
        call = instruments.start(
            scope.get("method", ""),
            scope.get("scheme", "http"),
            ScopeHeaders(scope) if self._traced else None,
            scope.get("path", ""),
        )
        timeout = self._timeout
        ctx: RequestContext | Pending
        if timeout is None:
            ctx = (_built_context, scope)  # built only if someone asks for it
        else:
            ctx = scope[CONTEXT_KEY] = from_fields(
                (time.monotonic() + timeout, Cancellation(), _ScopeMetadata(scope), NO_VALUES)
            )
        exchange = _Exchange(scope, receive, send)
        error: BaseException | None = None
        token = attach(ctx)
        try:
            await self._app(scope, exchange.receive, exchange.send)
        except BaseException as exc:
            error = exc
            raise
        finally:
            detach(token)
            code = exchange.code
            if exchange.disconnected:
                code = DISCONNECTED_STATUS
            elif not code:
                code = 500
            if error is None:
                error = scope.get(EXCEPTION_KEY)
            try:
                template = self._route_getter(scope)
            except Exception:  # a broken getter must not fail the request
                template = None
            instruments.finish(call, template, code, error)


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def decode_json(scope: Scope, body: bytes) -> Any:
    """decode_json decodes a JSON request body, e.g. ``{"a": 1}``; an empty body gives None.

    Raises:
        BadRequest: the body is not JSON (the default error encoder answers 400 with a message
            that says so).
    """
    return decode_json_body(body)


def encode_json(response: Any) -> Response:
    """encode_json encodes an endpoint response as JSON with status 200, e.g. ``{"v": 3}``."""
    return Response(200, json.dumps(response).encode())


class Server:
    """Server serves one endpoint over ASGI, go-kit style, e.g. ``Server(ep, decode, encode)``.

    Per request: *before* hooks (scope), ``decode(scope, body)``, the endpoint, *encode*, *after*
    hooks (scope, response); then the response is sent and *finalizers* run with (scope, status,
    body size). Exceptions and business errors go to *error_encoder* (by default
    `kitobs.transport.wsgi.default_error_encoder`: a `kitobs.endpoint.RequestError` gets its
    status and headers, anything else a 500); exceptions other than a RequestError are stored
    under `EXCEPTION_KEY` for an outer `Middleware`. The endpoint, *decode* and *encode* may be
    async. Lifespan events are acknowledged, so the server runs as a whole app under uvicorn. The
    request context is current throughout; *timeout* (seconds) sets or shortens its deadline.

    Raises:
        ConfigError: *timeout* is not positive.
    """

    __slots__ = (
        "_after",
        "_before",
        "_decode",
        "_decode_async",
        "_encode",
        "_encode_async",
        "_endpoint",
        "_endpoint_async",
        "_error_encoder",
        "_finalizers",
        "_route",
        "_timeout",
    )

    def __init__(
        self,
        endpoint: Endpoint,
        decode: Callable[[Scope, bytes], Any],
        encode: Callable[[Any], Any],
        *,
        before: Sequence[Callable[[Scope], None]] = (),
        after: Sequence[Callable[[Scope, Response], None]] = (),
        error_encoder: Callable[[BaseException], Response] = default_error_encoder,
        finalizers: Sequence[Callable[[Scope, int, int], None]] = (),
        route: str | None = None,
        timeout: float | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._endpoint_async = is_async(endpoint)
        self._decode = decode
        self._decode_async = is_async(decode)
        self._encode = encode
        self._encode_async = is_async(encode)
        self._before = tuple(before)
        self._after = tuple(after)
        self._error_encoder = error_encoder
        self._finalizers = tuple(finalizers)
        self._route = route
        self._timeout = server_timeout(timeout)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if self._route is not None:
            scope[ROUTE_KEY] = self._route
        timeout = self._timeout
        token = None
        if held().__class__ is not tuple and scope.get(CONTEXT_KEY) is None:
            # No outer Middleware gave this request a context: this server does.
            token = attach(_request_context(scope, timeout))
        elif timeout is not None:
            token = attach(_request_context(scope, timeout))
        try:
            for hook in self._before:
                hook(scope)
            body = await _read_body(receive)
            request = self._decode(scope, body)
            if self._decode_async:
                request = await request
            response = self._endpoint(request)
            if self._endpoint_async:
                response = await response
            kind, err = outcome(response, None)
            if kind == BUSINESS_ERROR and err is not None:
                encoded = self._error_encoder(err)
            else:
                encoded = self._encode(response)
                if self._encode_async:
                    encoded = await encoded
                for after in self._after:
                    after(scope, encoded)
        except Exception as exc:
            if not isinstance(exc, RequestError):
                # A RequestError is an answer chosen on purpose (401, 429, 503), labelled by
                # its status alone, as a framework's handled error is.
                scope[EXCEPTION_KEY] = exc
            encoded = self._error_encoder(exc)
        finally:
            if token is not None:
                detach(token)
        headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in encoded.headers]
        if not any(name == b"content-type" for name, _ in headers):
            headers.append((b"content-type", b"application/json"))
        headers.append((b"content-length", str(len(encoded.body)).encode()))
        await send({"type": "http.response.start", "status": encoded.status, "headers": headers})
        await send({"type": "http.response.body", "body": encoded.body})
        for finalizer in self._finalizers:
            finalizer(scope, encoded.status, len(encoded.body))


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await asyncio.to_thread(_exit.run)
            await send({"type": "lifespan.shutdown.complete"})
            return


def _flush_before_shutdown(send: Send) -> Send:
    async def forward(message: Message) -> None:
        if message.get("type") == "lifespan.shutdown.complete":
            # The server may end the process right after (uvicorn re-raises SIGTERM): flush now,
            # off the event loop.
            await asyncio.to_thread(_exit.run)
        await send(message)

    return forward
