"""Instrumented HTTP clients: httpx (sync and async), requests, and urllib.request.

Each records ``http_client_request_duration_seconds`` (method, ``server_address``,
``server_port``, status, ``error_type``) and, with a tracer, a CLIENT span whose context is
injected into the outgoing headers, so the server's span becomes its child::

    transport = HTTPXTransport(httpx.HTTPTransport(), kit.metrics, tracer=kit.tracer)
    client = httpx.Client(transport=transport)
    atransport = AsyncHTTPXTransport(httpx.AsyncHTTPTransport(), kit.metrics, tracer=kit.tracer)
    aclient = httpx.AsyncClient(transport=atransport)
    session = requests.Session(); session.mount("http://", RequestsAdapter(kit.metrics))
    opener = urllib.request.build_opener(*urllib_handlers(kit.metrics, tracer=kit.tracer))

The duration ends when the response headers have arrived (the body may still be streaming).
A timeout or connection error is recorded with the exception's qualified name as ``error_type``
(``httpx.ReadTimeout``) and no status; the exception then propagates unchanged. httpx and
requests come with the ``kitobs[http]`` extra.

All of them read the request context (`kitobs.endpoint.context`): inside a request with a
deadline, each timeout (httpx's connect, read, write and pool ones, requests' connect and read,
urllib's socket timeout) is cut to the time remaining, so an outgoing call never outlives the
request it serves. Once the deadline has passed, the call raises
`kitobs.endpoint.context.DeadlineExceeded` without sending anything (and without recording).

`ClientEndpoint` and `AsyncClientEndpoint` are go-kit's HTTP client endpoint: an `Endpoint` that
encodes the request, sends it through an instrumented httpx client and decodes the response::

    add = ClientEndpoint("POST", "http://127.0.0.1:8080/sum", encode_json, decode_json, kit=kit)
    add({"a": 1, "b": 2})  # -> {"v": 3}
    add.close()

The headers under `kitobs.endpoint.context.OUTGOING_METADATA` in the context's values (e.g. the
``authorization`` of `kitobs.auth.jwt.signer`) are added to each request that does not already
have one of that name.
"""

from __future__ import annotations

import socket
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import fields, is_dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx
import requests
import requests.adapters

from kitobs.endpoint.context import OUTGOING_METADATA, DeadlineExceeded, RequestContext
from kitobs.endpoint.context import current as _current
from kitobs.transport.http import ClientInstruments, Tracer, redact_url

if TYPE_CHECKING:
    from kitobs.kit import Kit
    from kitobs.metrics import Provider

__all__ = [
    "HTTPXTransport",
    "AsyncHTTPXTransport",
    "RequestsAdapter",
    "urllib_handlers",
    "URLLibHandler",
    "URLLibHTTPSHandler",
    # Client endpoints
    "ClientEndpoint",
    "AsyncClientEndpoint",
    "EncodeRequest",
    "DecodeResponse",
    "RequestFunc",
    "encode_json",
    "decode_json",
    "forward_metadata",
    "DEFAULT_TIMEOUT",
]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_HTTPX_TIMEOUTS = ("connect", "read", "write", "pool")


def _remaining(deadline: float, method: str, url: str) -> float:
    # Seconds left before the request context's deadline; none left means nothing is sent.
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise DeadlineExceeded(
            f"{method} {redact_url(url)} not sent: the request's deadline passed "
            f"{-remaining:.3f}s ago"
        )
    return remaining


def _cap_httpx(request: httpx.Request, deadline: float) -> None:
    remaining = _remaining(deadline, request.method, str(request.url))
    given = request.extensions.get("timeout") or {}
    capped = {}
    for phase in _HTTPX_TIMEOUTS:
        value = given.get(phase)
        capped[phase] = remaining if value is None or value > remaining else value
    request.extensions["timeout"] = capped


def _cap(timeout: Any, remaining: float) -> Any:
    # requests' and urllib's timeouts: None or a sentinel (no limit), a number, or requests'
    # (connect, read) pair.
    if isinstance(timeout, tuple):
        return tuple(_cap(part, remaining) for part in timeout)
    if isinstance(timeout, int | float) and not isinstance(timeout, bool):
        return min(timeout, remaining)
    if timeout is None or timeout is socket._GLOBAL_DEFAULT_TIMEOUT:  # type: ignore[attr-defined]
        return remaining
    return timeout  # a type we do not know (urllib3's Timeout): left as given


def _add_outgoing(headers: Any, outgoing: Any) -> None:
    # The context's outgoing metadata, under any header the request was not given (httpx's and
    # requests' header objects look names up in any case).
    for name, value in outgoing.items():
        if name not in headers:
            headers[name] = value


class _HeaderProxy:
    # Lets a propagator write into httpx's or requests' header objects through []=.
    __slots__ = ("_headers",)

    def __init__(self, headers: Any) -> None:
        self._headers = headers

    def __setitem__(self, name: str, value: str) -> None:
        self._headers[name] = value

    def __getitem__(self, name: str) -> str:
        value: str = self._headers[name]
        return value


class HTTPXTransport(httpx.BaseTransport):
    """HTTPXTransport instruments an httpx transport, e.g. ``HTTPXTransport(HTTPTransport(), p)``.

    Pass it as ``httpx.Client(transport=...)``.
    """

    __slots__ = ("_instruments", "_transport")

    def __init__(
        self, transport: httpx.BaseTransport, metrics: Provider, *, tracer: Tracer | None = None
    ) -> None:
        self._transport = transport
        self._instruments = ClientInstruments(metrics, tracer)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """handle_request sends *request* through the wrapped transport and records it.

        Raises:
            DeadlineExceeded: the request context's deadline has passed; nothing was sent.
        """
        ctx = _current()
        deadline = ctx.deadline
        if deadline is not None:
            _cap_httpx(request, deadline)
        outgoing = ctx.values.get(OUTGOING_METADATA)
        if outgoing:
            _add_outgoing(request.headers, outgoing)
        url = request.url
        call = self._instruments.start(
            request.method,
            url.host,
            url.port or _DEFAULT_PORTS.get(url.scheme, 0),
            _HeaderProxy(request.headers),  # type: ignore[arg-type]
            str(url),
        )
        try:
            response = self._transport.handle_request(request)
        except BaseException as exc:
            self._instruments.finish(call, 0, exc)
            raise
        self._instruments.finish(call, response.status_code, None)
        return response

    def close(self) -> None:
        """close closes the wrapped transport."""
        self._transport.close()

    def __enter__(self) -> HTTPXTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncHTTPXTransport(httpx.AsyncBaseTransport):
    """AsyncHTTPXTransport instruments an async httpx transport, for ``httpx.AsyncClient``.

    Example: ``AsyncClient(transport=AsyncHTTPXTransport(AsyncHTTPTransport(), p))``. A request
    cancelled while in flight is recorded with ``error_type`` ``asyncio.exceptions.CancelledError``.
    """

    __slots__ = ("_instruments", "_transport")

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        metrics: Provider,
        *,
        tracer: Tracer | None = None,
    ) -> None:
        self._transport = transport
        self._instruments = ClientInstruments(metrics, tracer)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """handle_async_request sends *request* through the wrapped transport and records it.

        Raises:
            DeadlineExceeded: the request context's deadline has passed; nothing was sent.
        """
        ctx = _current()
        deadline = ctx.deadline
        if deadline is not None:
            _cap_httpx(request, deadline)
        outgoing = ctx.values.get(OUTGOING_METADATA)
        if outgoing:
            _add_outgoing(request.headers, outgoing)
        url = request.url
        call = self._instruments.start(
            request.method,
            url.host,
            url.port or _DEFAULT_PORTS.get(url.scheme, 0),
            _HeaderProxy(request.headers),  # type: ignore[arg-type]
            str(url),
        )
        try:
            response = await self._transport.handle_async_request(request)
        except BaseException as exc:
            self._instruments.finish(call, 0, exc)
            raise
        self._instruments.finish(call, response.status_code, None)
        return response

    async def aclose(self) -> None:
        """aclose closes the wrapped transport."""
        await self._transport.aclose()

    async def __aenter__(self) -> AsyncHTTPXTransport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class RequestsAdapter(requests.adapters.HTTPAdapter):
    """RequestsAdapter is a requests ``HTTPAdapter`` that records each request, e.g.
    ``session.mount("http://", RequestsAdapter(kit.metrics, tracer=kit.tracer))``.

    Extra keyword arguments go to ``HTTPAdapter`` (``max_retries``, ``pool_maxsize``...); each
    retry is one recorded request.
    """

    def __init__(self, metrics: Provider, *, tracer: Tracer | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._kitobs = ClientInstruments(metrics, tracer)

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        """send sends *request* like ``HTTPAdapter.send`` and records it.

        Raises:
            DeadlineExceeded: the request context's deadline has passed; nothing was sent.
        """
        ctx = _current()
        outgoing = ctx.values.get(OUTGOING_METADATA)
        if outgoing:
            _add_outgoing(request.headers, outgoing)
        deadline = ctx.deadline
        if deadline is not None:
            remaining = _remaining(deadline, request.method or "", request.url or "")
            if len(args) >= 2:  # send(request, stream, timeout, ...)
                args = (args[0], _cap(args[1], remaining), *args[2:])
            else:
                kwargs["timeout"] = _cap(kwargs.get("timeout"), remaining)
        parsed = urllib.parse.urlsplit(request.url or "")
        call = self._kitobs.start(
            request.method or "",
            parsed.hostname or "",
            parsed.port or _DEFAULT_PORTS.get(parsed.scheme, 0),
            request.headers,
            request.url or "",
        )
        try:
            response = super().send(request, *args, **kwargs)
        except BaseException as exc:
            self._kitobs.finish(call, 0, exc)
            raise
        self._kitobs.finish(call, response.status_code, None)
        return response


def _open(handler: Any, opener: Any, req: urllib.request.Request, default_port: int) -> Any:
    instruments: ClientInstruments = handler._kitobs
    ctx = _current()
    outgoing = ctx.values.get(OUTGOING_METADATA)
    if outgoing:
        for name, value in outgoing.items():
            if not req.has_header(name.capitalize()):  # urllib keeps names capitalized
                req.add_unredirected_header(name.capitalize(), value)
    deadline = ctx.deadline
    if deadline is not None:
        req.timeout = _cap(  # set by OpenerDirector.open
            getattr(req, "timeout", None), _remaining(deadline, req.get_method(), req.full_url)
        )
    headers: dict[str, str] = {}
    call = instruments.start(
        req.get_method(),
        req.host.rsplit(":", 1)[0] if ":" in req.host else req.host,
        int(req.host.rsplit(":", 1)[1]) if ":" in req.host else default_port,
        headers,
        req.full_url,
    )
    for name, value in headers.items():
        req.add_unredirected_header(name.capitalize(), value)
    try:
        response = opener(req)
    except BaseException as exc:
        instruments.finish(call, 0, exc)
        raise
    instruments.finish(call, getattr(response, "status", 0) or 0, None)
    return response


class URLLibHandler(urllib.request.HTTPHandler):
    """URLLibHandler is urllib's ``HTTPHandler``, recording every ``http://`` request.

    Example: ``build_opener(URLLibHandler(kit.metrics, tracer=kit.tracer))``. An HTTP error
    status is recorded with its code before urllib raises ``HTTPError`` for it.
    """

    def __init__(self, metrics: Provider, *, tracer: Tracer | None = None) -> None:
        super().__init__()
        self._kitobs = ClientInstruments(metrics, tracer)

    def http_open(self, req: urllib.request.Request) -> Any:
        """http_open opens *req* like ``HTTPHandler.http_open`` and records it."""
        return _open(self, super().http_open, req, 80)


class URLLibHTTPSHandler(urllib.request.HTTPSHandler):
    """URLLibHTTPSHandler is urllib's ``HTTPSHandler``, recording every ``https://`` request.

    Example: ``build_opener(URLLibHTTPSHandler(kit.metrics, context=ssl_context))``.
    """

    def __init__(self, metrics: Provider, *, tracer: Tracer | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._kitobs = ClientInstruments(metrics, tracer)

    def https_open(self, req: urllib.request.Request) -> Any:
        """https_open opens *req* like ``HTTPSHandler.https_open`` and records it."""
        return _open(self, super().https_open, req, 443)


def urllib_handlers(
    metrics: Provider, *, tracer: Tracer | None = None
) -> tuple[URLLibHandler, URLLibHTTPSHandler]:
    """urllib_handlers gives handlers for ``urllib.request.build_opener``, e.g.
    ``build_opener(*urllib_handlers(kit.metrics))``; they replace the default HTTP(S) handlers.
    """
    return URLLibHandler(metrics, tracer=tracer), URLLibHTTPSHandler(metrics, tracer=tracer)


# -- client endpoints ----------------------------------------------------------------------------

EncodeRequest = Callable[[str, str, Any], httpx.Request]
"""EncodeRequest builds the HTTP request for an endpoint request, e.g. `encode_json`.

Called as ``encode(method, url, request)`` with the endpoint's method and URL; it returns an
``httpx.Request`` (``httpx.Request(method, url, json=..., params=...)``)."""

DecodeResponse = Callable[[httpx.Response], Any]
"""DecodeResponse turns the HTTP response into the endpoint's response, e.g. `decode_json`.

It sees every response, error statuses too: it may return a response carrying the error (a
`kitobs.endpoint.Failer`) or raise."""

RequestFunc = Callable[[RequestContext, httpx.Request], None]
"""RequestFunc changes the outgoing request from the request context, e.g. `forward_metadata`.

go-kit's ``ClientBefore``: called as ``func(context, request)`` after encoding, before sending,
with the request context of the caller (`kitobs.endpoint.context.current`); it sets headers on
``request.headers``."""

#: DEFAULT_TIMEOUT is a client endpoint's timeout in seconds when none is given (httpx's default).
DEFAULT_TIMEOUT = 5.0


def encode_json(method: str, url: str, request: Any) -> httpx.Request:
    """encode_json sends *request* as a JSON body, e.g. ``{"a": 1}``; dataclasses become objects.

    A None request sends no body.
    """
    if request is None:
        return httpx.Request(method, url)
    if is_dataclass(request) and not isinstance(request, type):
        request = {f.name: getattr(request, f.name) for f in fields(request)}
    return httpx.Request(method, url, json=request)


def decode_json(response: httpx.Response) -> Any:
    """decode_json gives a JSON response body as Python values, e.g. ``{"v": 3}``; empty: None.

    Raises:
        httpx.HTTPStatusError: the status is 4xx or 5xx (``.response`` holds the response).
    """
    response.raise_for_status()
    return response.json() if response.content else None


def forward_metadata(*names: str) -> RequestFunc:
    """forward_metadata copies headers of the request being served to the outgoing request.

    E.g. ``forward_metadata("authorization", "x-request-id")``: each named entry of the request
    context's metadata (the incoming HTTP headers or gRPC metadata, any case) is set on the
    outgoing request, when present.
    """
    wanted = tuple(names)

    def forward(context: RequestContext, request: httpx.Request) -> None:
        metadata = context.metadata
        for name in wanted:
            value = metadata.get(name)
            if value is not None:
                request.headers[name] = value

    return forward


class _Endpoint:
    """_Endpoint holds what the sync and async client endpoints share: the request's making."""

    __slots__ = ("_before", "_decode", "_encode", "_timeout", "method", "url")

    def __init__(
        self,
        method: str,
        url: str,
        encode: EncodeRequest,
        decode: DecodeResponse,
        before: Iterable[RequestFunc],
        timeout: float | None,
    ) -> None:
        self.method = method
        self.url = url
        self._encode = encode
        self._decode = decode
        self._before = tuple(before)
        self._timeout = httpx.Timeout(timeout).as_dict()

    def _request(self, request: Any) -> httpx.Request:
        outgoing = self._encode(self.method, self.url, request)
        if "timeout" not in outgoing.extensions:  # the encoder may set its own
            outgoing.extensions["timeout"] = self._timeout
        context = _current()
        deadline = context.deadline
        if deadline is not None:
            # The instrumented transport caps them too, but the client may be a plain one.
            _cap_httpx(outgoing, deadline)
        for before in self._before:
            before(context, outgoing)
        return outgoing


def _own_transport(kit: Kit | None) -> tuple[Provider, Any]:
    if kit is None:
        from kitobs.kit import default

        kit = default()
    return kit.metrics, kit.tracer


class ClientEndpoint(_Endpoint):
    """ClientEndpoint is an `Endpoint` calling an HTTP server, e.g. ``ClientEndpoint("GET", url)``.

    Each call encodes the request (*encode*, e.g. `encode_json`), applies the *before* functions
    (`RequestFunc`, e.g. `forward_metadata`), sends it and returns ``decode(response)`` (e.g.
    `decode_json`). It reads the request context: the timeout (*timeout* seconds, default
    `DEFAULT_TIMEOUT`, None for none; it replaces a given *client*'s) is cut to the time left
    before the deadline, and once the deadline has passed the call raises `DeadlineExceeded`
    without sending. Transport errors
    (``httpx.ConnectError``, ``httpx.ReadTimeout``...) propagate unchanged.

    Without *client*, it sends through its own ``httpx.Client`` over `HTTPXTransport` on *kit*'s
    metrics and tracer (default: `kitobs.kit.default`), so each call records
    ``http_client_request_duration_seconds`` and a CLIENT span whose context travels in the
    headers; `close` closes that client. A *client* given is used as it is (build it with
    `HTTPXTransport` to have it recorded) and left open.
    """

    __slots__ = ("_client", "_owned")

    def __init__(
        self,
        method: str,
        url: str,
        encode: EncodeRequest = encode_json,
        decode: DecodeResponse = decode_json,
        *,
        kit: Kit | None = None,
        client: httpx.Client | None = None,
        before: Iterable[RequestFunc] = (),
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__(method, url, encode, decode, before, timeout)
        self._owned = client is None
        if client is None:
            metrics, tracer = _own_transport(kit)
            client = httpx.Client(
                transport=HTTPXTransport(httpx.HTTPTransport(), metrics, tracer=tracer)
            )
        self._client = client

    def __call__(self, request: Any) -> Any:
        """__call__ sends *request* and returns the decoded response.

        Raises:
            DeadlineExceeded: the request context's deadline has passed; nothing was sent.
        """
        return self._decode(self._client.send(self._request(request)))

    def close(self) -> None:
        """close closes the endpoint's own httpx client (a given one stays open)."""
        if self._owned:
            self._client.close()

    def __enter__(self) -> ClientEndpoint:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClientEndpoint(_Endpoint):
    """AsyncClientEndpoint is `ClientEndpoint` for async code: ``await endpoint(request)``.

    It sends through an ``httpx.AsyncClient`` (its own over `AsyncHTTPXTransport` unless
    *client* is given); `aclose` closes it. Otherwise as `ClientEndpoint`.
    """

    __slots__ = ("_client", "_owned")

    def __init__(
        self,
        method: str,
        url: str,
        encode: EncodeRequest = encode_json,
        decode: DecodeResponse = decode_json,
        *,
        kit: Kit | None = None,
        client: httpx.AsyncClient | None = None,
        before: Iterable[RequestFunc] = (),
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__(method, url, encode, decode, before, timeout)
        self._owned = client is None
        if client is None:
            metrics, tracer = _own_transport(kit)
            client = httpx.AsyncClient(
                transport=AsyncHTTPXTransport(httpx.AsyncHTTPTransport(), metrics, tracer=tracer)
            )
        self._client = client

    async def __call__(self, request: Any) -> Any:
        """__call__ sends *request* and returns the decoded response.

        Raises:
            DeadlineExceeded: the request context's deadline has passed; nothing was sent.
        """
        return self._decode(await self._client.send(self._request(request)))

    async def aclose(self) -> None:
        """aclose closes the endpoint's own httpx client (a given one stays open)."""
        if self._owned:
            await self._client.aclose()

    async def __aenter__(self) -> AsyncClientEndpoint:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
