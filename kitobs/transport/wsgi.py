"""The WSGI transport: go-kit's HTTP `Server` around an endpoint, and `Middleware` for any app.

`Middleware` wraps an existing WSGI application (Flask, Django, a bare function) and records, per
request, ``http_server_request_duration_seconds`` and ``http_server_active_requests`` (see
`kitobs.contract`) and, with a tracer, a SERVER span whose parent comes from the request headers::

    app.wsgi_app = Middleware(app.wsgi_app, kit.metrics, tracer=kit.tracer, logger=kit.logger)

With a *logger* each request also writes one access log line (`kitobs.transport.http.AccessLog`).
Requests for the *exclude_paths* (by default the exposition pages, ``/metrics`` and
``/debug/vars``) are passed to the app unrecorded. Put it outermost, so responses written by inner
middleware (429s, 500s) are counted. The request ends when the server closes the response iterable,
so streamed bodies are timed in full. The route template comes from ``route_getter(environ)``,
called after the application returned, or else from ``environ["kitobs.route"]`` (`ROUTE_KEY`),
which framework integrations and `Server` set; a request without one is ``unmatched``. Frameworks
that turn an exception into a 500 page store it under `EXCEPTION_KEY` so that ``error_type`` names
it.

`Server` is go-kit's ``http.Server``: *decode* turns the request into the endpoint's request,
*encode* turns its response into a `Response`; *before* hooks see the environ first, *after* hooks
see the encoded response, an *error_encoder* turns an exception or a business error into a
`Response`, and *finalizers* see the environ, the status and the response size::

    server = Server(sum_endpoint, decode_json, encode_json, route="/sum")
    app = Middleware(server, kit.metrics, tracer=kit.tracer)

Both fill the request context (`kitobs.endpoint.context`) while the application runs: the
incoming headers as its metadata and, when built with ``timeout=`` (seconds), a deadline that
many seconds after the request arrived. It is built when first asked for (`context.current()`;
with a ``timeout``, at once) and then kept under `CONTEXT_KEY` in the environ. A
`Server` behind a `Middleware` keeps the middleware's context (its own ``timeout`` can only make
the deadline earlier). WSGI does not tell a server that the client went away, so ``cancelled`` is
only set by code that sets it.

The span is current while the application runs (not while the server iterates a streamed body),
and again while the request is recorded, so the duration's exemplar and the access log line carry
its trace.
"""

from __future__ import annotations

import http
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kitobs.endpoint import BUSINESS_ERROR, Endpoint, RequestError, is_async, outcome
from kitobs.endpoint.context import (
    NO_VALUES,
    Cancellation,
    Pending,
    RequestContext,
    attach,
    detach,
    from_fields,
    held,
)
from kitobs.errors import ConfigError
from kitobs.transport.http import (
    DEFAULT_EXCLUDE_PATHS,
    BadRequest,
    EnvironHeaders,
    ServerInstruments,
    Tracer,
    decode_json_body,
    encode_error,
    server_timeout,
)
from kitobs.transport.http import exclude_paths as _exclude_paths

if TYPE_CHECKING:
    from kitobs.log import Logger
    from kitobs.metrics import Provider

__all__ = [
    # Middleware for existing apps
    "Middleware",
    "ROUTE_KEY",
    "EXCEPTION_KEY",
    "CONTEXT_KEY",
    # go-kit's server
    "Server",
    "Response",
    "read_body",
    "decode_json",
    "BadRequest",
    "encode_json",
    "default_error_encoder",
    # Types
    "Environ",
    "StartResponse",
    "WSGIApp",
]

Environ = dict[str, Any]
"""Environ is a PEP 3333 environ, e.g. ``{"REQUEST_METHOD": "GET", ...}``."""
StartResponse = Callable[..., Any]
"""StartResponse is PEP 3333's ``start_response(status, headers, exc_info=None)``."""
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]
"""WSGIApp is a PEP 3333 application, e.g. ``flask_app.wsgi_app``."""

#: ROUTE_KEY is the environ key holding the matched route template, e.g. ``"/users/{id}"``.
ROUTE_KEY = "kitobs.route"
#: EXCEPTION_KEY is the environ key holding an exception the app turned into an error page.
EXCEPTION_KEY = "kitobs.exception"
#: CONTEXT_KEY is the environ key holding the request's `kitobs.endpoint.context.RequestContext`
#: once it is built (the first `kitobs.endpoint.context.current` in the request builds it).
CONTEXT_KEY = "kitobs.context"


def _route_from_environ(environ: Environ) -> str | None:
    route: str | None = environ.get(ROUTE_KEY)
    return route


class _Recorder:
    # One request: captures the status from start_response, counts the body and records on close.
    __slots__ = ("_body", "_call", "_environ", "_middleware", "_start_response", "code", "size")

    def __init__(
        self, middleware: Middleware, environ: Environ, start_response: StartResponse, call: Any
    ) -> None:
        self._middleware = middleware
        self._environ = environ
        self._start_response = start_response
        self._call = call
        self._body: Iterable[bytes] = ()
        self.code = 0
        self.size = 0

    def start_response(self, status: str, headers: Any, exc_info: Any = None) -> Any:
        try:
            self.code = int(status[:3])
        except ValueError:
            self.code = 0
        if exc_info is None:
            return self._start_response(status, headers)
        return self._start_response(status, headers, exc_info)

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._body:
                self.size += len(chunk)
                yield chunk
            # The whole body went out: record now, even if the server is slow to call close().
            self._finish(None)
        except GeneratorExit:
            # The server stopped iterating early (the client went away, or it only wanted the
            # headers): not an application error; close() records the request.
            raise
        except BaseException as exc:
            self._finish(exc)
            raise

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._finish(None)

    def _finish(self, exc: BaseException | None) -> None:
        call = self._call
        if call is None:
            return
        self._call = None
        middleware = self._middleware
        environ = self._environ
        if exc is None:
            exc = environ.get(EXCEPTION_KEY)
        code = self.code or 500
        try:
            template = middleware._route_getter(environ)
        except Exception:  # a broken getter must not fail the request
            template = None
        middleware._instruments.finish(call, template, code, exc)


class Middleware:
    """Middleware records HTTP server metrics and spans, e.g. ``Middleware(flask_app.wsgi_app, p)``.

    Args:
        app: the WSGI application to instrument.
        metrics: the provider the contract's HTTP server metrics are declared on.
        tracer: starts a SERVER span per request when given (e.g. ``kit.tracer``).
        route_getter: returns the route template from the environ after the app ran, or None.
        logger: writes one access log line per request when given (e.g. ``kit.logger``).
        exclude_paths: ``PATH_INFO`` values passed through unrecorded, e.g. ``("/metrics",)``.
        timeout: seconds each request may take, the request context's deadline; None for none.

    Raises:
        ConfigError: an excluded path does not start with ``/``, or *timeout* is not positive.
    """

    __slots__ = ("_app", "_excluded", "_instruments", "_route_getter", "_timeout", "_traced")

    def __init__(
        self,
        app: WSGIApp,
        metrics: Provider,
        *,
        tracer: Tracer | None = None,
        route_getter: Callable[[Environ], str | None] | None = None,
        logger: Logger | None = None,
        exclude_paths: Iterable[str] = DEFAULT_EXCLUDE_PATHS,
        timeout: float | None = None,
    ) -> None:
        self._app = app
        self._excluded = _exclude_paths(exclude_paths)
        self._instruments = ServerInstruments(metrics, tracer, logger)
        self._route_getter = route_getter or _route_from_environ
        self._traced = tracer is not None
        self._timeout = server_timeout(timeout)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "") in self._excluded:
            return self._app(environ, start_response)
        timeout = self._timeout
        ctx: RequestContext | Pending
        if timeout is None:
            ctx = (_built_context, environ)  # built only if someone asks for it
        else:
            ctx = environ[CONTEXT_KEY] = from_fields(
                (time.monotonic() + timeout, Cancellation(), EnvironHeaders(environ), NO_VALUES)
            )
        call = self._instruments.start(
            environ.get("REQUEST_METHOD", ""),
            environ.get("wsgi.url_scheme", "http"),
            EnvironHeaders(environ) if self._traced else None,
            environ.get("PATH_INFO", ""),
        )
        recorder = _Recorder(self, environ, start_response, call)
        token = attach(ctx)
        try:
            recorder._body = self._app(environ, recorder.start_response)
        except BaseException as exc:
            recorder._finish(exc)
            raise
        finally:
            detach(token)
            # The span stays open until the body is closed, but is current only while the app
            # runs: the server may close the body in a context of its own.
            self._instruments.release(call)
        return recorder


def _built_context(environ: Environ) -> RequestContext:
    # A Pending's build: the request's context, made once and kept in the environ. setdefault
    # keeps the first of two threads that build it at once, so both get the same object.
    ctx: RequestContext | None = environ.get(CONTEXT_KEY)
    if ctx is None:
        ctx = environ.setdefault(
            CONTEXT_KEY,
            from_fields((None, Cancellation(), EnvironHeaders(environ), NO_VALUES)),
        )
    return ctx


def _request_context(environ: Environ, timeout: float | None) -> RequestContext | Pending:
    # What a Server makes current: its own context (built on first use), or, with a timeout, a
    # context whose deadline is the earlier of the outer one (if any) and its own.
    if timeout is None:
        return (_built_context, environ)
    ctx = environ[CONTEXT_KEY] = _built_context(environ).derive(timeout=timeout)
    return ctx


@dataclass(slots=True)
class Response:
    """Response is what a `Server` sends, e.g. ``Response(200, b'{"v": 3}', [("x-id", "7")])``.

    ``Content-Length`` is added by the server; ``Content-Type`` defaults to JSON.
    """

    status: int = 200
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)


def read_body(environ: Environ) -> bytes:
    """read_body reads the request body, e.g. ``json.loads(read_body(environ))``."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length <= 0:
        return b""
    body: bytes = environ["wsgi.input"].read(length)
    return body


def decode_json(environ: Environ) -> Any:
    """decode_json decodes a JSON request body, e.g. ``{"a": 1}``; an empty body gives None.

    Raises:
        BadRequest: the body is not JSON (`default_error_encoder` answers 400 with a message
            that says so).
    """
    return decode_json_body(read_body(environ))


def encode_json(response: Any) -> Response:
    """encode_json encodes an endpoint response as JSON with status 200, e.g. ``{"v": 3}``."""
    return Response(200, json.dumps(response).encode())


def default_error_encoder(error: BaseException) -> Response:
    """default_error_encoder answers ``{"error": "<message>"}`` with the error's status and headers.

    An error with an int ``status_code`` in 400-599 (a `kitobs.endpoint.RequestError`:
    an auth failure's 401 with ``WWW-Authenticate``, a rate limiter's 429 with ``Retry-After``, an
    open circuit breaker's 503; `BadRequest`; go-kit's ``StatusCoder``) gets that status, its
    ``headers`` and its message. Anything else is a 500 whose body does not quote the exception
    (see `kitobs.transport.http.encode_error`).
    """
    code, headers, body = encode_error(error)
    return Response(code, body, headers)


def _status_line(code: int) -> str:
    try:
        return f"{code} {http.HTTPStatus(code).phrase}"
    except ValueError:
        return f"{code} Unknown"


class Server:
    """Server serves one endpoint over WSGI, go-kit style, e.g. ``Server(ep, decode, encode)``.

    Order per request: *before* hooks (environ), *decode*, the endpoint, *encode*, *after* hooks
    (environ, response), then the response is sent and *finalizers* run with (environ, status,
    body size). An exception from any step, or a business error (a `kitobs.endpoint.Failer`
    response that failed), goes to *error_encoder* (by default `default_error_encoder`: a
    `kitobs.endpoint.RequestError` gets its status and headers, anything else a 500); exceptions
    other than a RequestError are also stored under `EXCEPTION_KEY` so an outer `Middleware`
    labels ``error_type``. *route* names the route
    template for the outer middleware. The hooks, *decode*, the endpoint and *encode* run
    with the request context current; *timeout* (seconds) sets or shortens its deadline.

    Raises:
        ConfigError: *endpoint* is async (serve it with `kitobs.transport.asgi.Server`), or
            *timeout* is not positive.
    """

    __slots__ = (
        "_after",
        "_before",
        "_decode",
        "_encode",
        "_endpoint",
        "_error_encoder",
        "_finalizers",
        "_route",
        "_timeout",
    )

    def __init__(
        self,
        endpoint: Endpoint,
        decode: Callable[[Environ], Any],
        encode: Callable[[Any], Response],
        *,
        before: Sequence[Callable[[Environ], None]] = (),
        after: Sequence[Callable[[Environ, Response], None]] = (),
        error_encoder: Callable[[BaseException], Response] = default_error_encoder,
        finalizers: Sequence[Callable[[Environ, int, int], None]] = (),
        route: str | None = None,
        timeout: float | None = None,
    ) -> None:
        if is_async(endpoint):
            raise ConfigError(
                "wsgi.Server needs a sync endpoint",
                value=getattr(endpoint, "__qualname__", repr(endpoint)),
                allowed="a plain function; serve async endpoints with kitobs.transport.asgi",
            )
        self._endpoint = endpoint
        self._decode = decode
        self._encode = encode
        self._before = tuple(before)
        self._after = tuple(after)
        self._error_encoder = error_encoder
        self._finalizers = tuple(finalizers)
        self._route = route
        self._timeout = server_timeout(timeout)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if self._route is not None:
            environ[ROUTE_KEY] = self._route
        timeout = self._timeout
        token = None
        if held().__class__ is not tuple and environ.get(CONTEXT_KEY) is None:
            # No outer Middleware gave this request a context: this server does.
            token = attach(_request_context(environ, timeout))
        elif timeout is not None:
            token = attach(_request_context(environ, timeout))
        try:
            for hook in self._before:
                hook(environ)
            response = self._endpoint(self._decode(environ))
            kind, err = outcome(response, None)
            if kind == BUSINESS_ERROR and err is not None:
                encoded = self._error_encoder(err)
            else:
                encoded = self._encode(response)
                for after in self._after:
                    after(environ, encoded)
        except Exception as exc:
            if not isinstance(exc, RequestError):
                # A RequestError is an answer chosen on purpose (401, 429, 503), labelled by
                # its status alone, as a framework's handled error is.
                environ[EXCEPTION_KEY] = exc
            encoded = self._error_encoder(exc)
        finally:
            if token is not None:
                detach(token)
        headers = list(encoded.headers)
        if not any(name.lower() == "content-type" for name, _ in headers):
            headers.append(("Content-Type", "application/json"))
        headers.append(("Content-Length", str(len(encoded.body))))
        start_response(_status_line(encoded.status), headers)
        for finalizer in self._finalizers:
            finalizer(environ, encoded.status, len(encoded.body))
        return [encoded.body]
