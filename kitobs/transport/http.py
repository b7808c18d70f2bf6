"""HTTP helpers shared by the server and client transports: labels, header carriers, instruments.

The contract (`kitobs.contract`) fixes what an HTTP label may hold, and this module is the one place
that enforces it, so that nothing a client sends can create a new series:

- `method` keeps the ten known methods and turns anything else into ``_OTHER``;
- `route` gives the route template, or ``unmatched`` when no route matched;
- `status` gives the status code as a string (``"200"``);
- `error_type` gives the exception's qualified class name, or the status code of a 5xx without
  an exception, or ``""`` (absent) on success;
- `scheme` keeps ``http`` and ``https``.

`ServerInstruments` and `ClientInstruments` hold the bound metrics and the tracer of one transport
and do the per-request work (`start` / `finish`), so the WSGI, ASGI, Django and client modules stay
thin. A server request's duration is observed while its span is current, so a histogram bucket's
exemplar names the request's trace; with a logger, `ServerInstruments` also writes the access log
line (`AccessLog`). `exclude_paths` checks the paths servers leave unrecorded. Example::

    >>> method("GET"), method("BREW"), route(None), status(404)
    ('GET', '_OTHER', 'unmatched', '404')
    >>> error_type(ValueError("x"), 500), error_type(None, 503), error_type(None, 200)
    ('ValueError', '503', '')
"""

from __future__ import annotations

import http
import json
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from kitobs import contract
from kitobs.config import DEFAULT_EXCLUDE_PATHS, HttpTransportSettings, key_name
from kitobs.errors import ConfigError
from kitobs.log import redact
from kitobs.transport.core import Call, CallLog, Instruments, Tracer, exception_type

if TYPE_CHECKING:
    from kitobs.log import Logger
    from kitobs.metrics import Gauge, Provider

__all__ = [
    # Request errors
    "BadRequest",
    "decode_json_body",
    "encode_error",
    # Labels
    "method",
    "route",
    "status",
    "scheme",
    "error_type",
    "redact_url",
    # Header carriers
    "EnvironHeaders",
    "ScopeHeaders",
    # Server options
    "DEFAULT_EXCLUDE_PATHS",
    "exclude_paths",
    "server_timeout",
    "AccessLog",
    # Instruments
    "Tracer",
    "ServerInstruments",
    "ServerCall",
    "ClientInstruments",
    "ClientCall",
]

_KNOWN = contract.KNOWN_METHODS
_OTHER = contract.OTHER_METHOD
_UNMATCHED = contract.UNMATCHED_ROUTE
# Status labels are made once: str(int) on every request is avoidable work.
_STATUS = {code: str(code) for code in range(100, 600)}
_perf_counter = time.perf_counter


class BadRequest(ValueError):
    """BadRequest is a request the client got wrong, e.g. a body that is not JSON; status 400.

    Its message is safe to send back: it says what is wrong with the request without quoting it
    or the server's internals. The decoding error, if any, is its ``__cause__``. The servers'
    default error encoders answer it with status 400 (its ``status_code``).
    """

    status_code = 400


def encode_error(error: BaseException) -> tuple[int, list[tuple[str, str]], bytes]:
    """encode_error gives the status, headers and JSON body a server answers *error* with.

    An error with an int ``status_code`` in 400-599 (a `kitobs.endpoint.RequestError` such as a
    rate limiter's 429, `BadRequest`, or any go-kit style ``StatusCoder``) is answered with that
    status, its ``headers`` (a mapping or ``(name, value)`` pairs: ``WWW-Authenticate``,
    ``Retry-After``) and ``{"error": "<its message>"}``: such errors are written to be shown to
    the caller. Anything else is a 500 with ``{"error": "internal server error"}``: an
    unexpected exception's text can quote internals (paths, queries, secrets), so it goes to the
    logs and the span, never to the client::

        >>> encode_error(BadRequest("request body is not valid JSON"))
        (400, [], b'{"error": "request body is not valid JSON"}')
        >>> encode_error(KeyError("db password=hunter2"))
        (500, [], b'{"error": "internal server error"}')
    """
    code = getattr(error, "status_code", None)
    if code.__class__ is not int or not 400 <= code <= 599:
        return 500, [], _INTERNAL_ERROR_BODY
    message = str(error) or _status_phrase(code)
    return code, _error_headers(error), json.dumps({"error": message}).encode()


_INTERNAL_ERROR_BODY = b'{"error": "internal server error"}'


def _status_phrase(code: int) -> str:
    try:
        return http.HTTPStatus(code).phrase
    except ValueError:
        return "error"


def _error_headers(error: BaseException) -> list[tuple[str, str]]:
    # go-kit's Headerer: headers the error asks to be sent. A malformed value is left out
    # rather than failing the error response itself.
    raw = getattr(error, "headers", None)
    if not raw:
        return []
    items = raw.items() if isinstance(raw, Mapping) else raw
    headers: list[tuple[str, str]] = []
    try:
        for name, value in items:
            if isinstance(name, str) and isinstance(value, str | int | float):
                headers.append((name, str(value)))
    except (TypeError, ValueError):
        return headers
    return headers


def decode_json_body(body: bytes) -> Any:
    """decode_json_body parses a JSON request body, e.g. ``b'{"a": 1}'``; empty gives None.

    Raises:
        BadRequest: the body is not UTF-8 JSON, or nests too deeply to parse.
    """
    if not body:
        return None
    try:
        return json.loads(body)
    except json.JSONDecodeError as err:
        # The parser's message is fixed text ("Expecting value"), never the body itself.
        raise BadRequest(
            f"request body is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}"
        ) from err
    except UnicodeDecodeError as err:
        raise BadRequest("request body is not valid JSON: not UTF-8 text") from err
    except RecursionError as err:
        raise BadRequest("request body is not valid JSON: nested too deeply") from err


def method(raw: str) -> str:
    """method normalises an HTTP method for labels, e.g. ``"GET"``; unknown ones give ``_OTHER``.

    Methods are case-sensitive (RFC 9110), so ``"get"`` is ``_OTHER`` too.
    """
    return raw if raw in _KNOWN else _OTHER


def route(template: str | None) -> str:
    """route gives the ``http_route`` label, e.g. ``"/users/{id}"``; None gives ``unmatched``."""
    return template or _UNMATCHED


def status(code: int) -> str:
    """status gives the status code label, e.g. ``"200"``; codes outside 100-599 give ``_OTHER``."""
    return _STATUS.get(code, _OTHER)


def scheme(raw: str) -> str:
    """scheme gives the ``url_scheme`` label, e.g. ``"https"``; anything else gives ``_OTHER``."""
    return raw if raw in ("http", "https") else _OTHER


def error_type(exc: BaseException | None, code: int = 0) -> str:
    """error_type gives the ``error_type`` label, e.g. ``"ValueError"`` or ``"503"``.

    The exception's qualified class name (module-qualified outside builtins, e.g.
    ``"httpx.ReadTimeout"``) when there is one; else the status code of a 5xx; else ``""``, which
    backends treat as absent.
    """
    if exc is not None:
        return exception_type(exc)
    if code >= 500:
        return _STATUS.get(code, _OTHER)
    return ""


def server_timeout(timeout: float | None) -> float | None:
    """server_timeout checks a server's per-request deadline in seconds, e.g. ``5.0``; None: none.

    Raises:
        ConfigError: *timeout* is not a positive number.
    """
    if timeout is not None and not timeout > 0:
        raise ConfigError(
            "a server timeout must be a positive number of seconds",
            value=timeout,
            allowed="a number > 0, or None for no deadline",
        )
    return timeout


def exclude_paths(paths: Iterable[str]) -> frozenset[str]:
    """exclude_paths checks the paths a server leaves unrecorded, e.g. ``("/metrics",)``.

    A request whose path (WSGI ``PATH_INFO``, ASGI ``scope["path"]``, Django ``path_info``) is
    one of them gets no metrics, span or access log line: scrapes of the exposition pages are not
    requests of the service. Matching is exact.

    Raises:
        ConfigError: a path is not a string starting with ``/``.
    """
    if isinstance(paths, str):
        paths = (paths,)
    checked = []
    for path in paths:
        if not isinstance(path, str) or not path.startswith("/"):
            raise ConfigError(
                "is not a request path",
                key=key_name(HttpTransportSettings, "exclude_paths"),
                value=path,
                allowed="paths starting with /, e.g. /metrics",
            )
        checked.append(path)
    return frozenset(checked)


class AccessLog(CallLog):
    """AccessLog writes one line per request served through a `kitobs.log.Logger`.

    The line is ``transport=http method=GET route=/users/{id} status=200 duration=0.0012``
    (duration in seconds), with ``trace_id``/``span_id`` when the logger adds them (a Kit's logger
    does: the request span is current). Successes and 4xx are written at info; a 5xx or an
    exception at error, with ``error=<error_type>``. Going through the logger, the line honours
    its level, redaction and output. It is the HTTP form of `kitobs.transport.core.CallLog`.
    Example: ``AccessLog(kit.logger)``.
    """

    __slots__ = ()

    def __init__(self, logger: Logger) -> None:
        super().__init__(logger, "http", ("method", "route", "status", "duration"))


class EnvironHeaders(Mapping[str, str]):
    """EnvironHeaders shows a WSGI environ as lowercase headers, e.g. ``h["traceparent"]``.

    It is the carrier trace propagators read on WSGI and Django servers; nothing is copied.
    """

    __slots__ = ("_environ",)

    def __init__(self, environ: Mapping[str, Any]) -> None:
        self._environ = environ

    def __getitem__(self, name: str) -> str:
        value = self._environ["HTTP_" + name.upper().replace("-", "_")]
        if not isinstance(value, str):
            raise KeyError(name)
        return value

    def get(self, name: str, default: Any = None) -> Any:
        """get returns header *name* or *default*, e.g. ``get("traceparent")``."""
        return self._environ.get("HTTP_" + name.upper().replace("-", "_"), default)

    def __iter__(self) -> Iterator[str]:
        for key in self._environ:
            if key.startswith("HTTP_"):
                yield key[5:].lower().replace("_", "-")

    def __len__(self) -> int:
        return sum(1 for key in self._environ if key.startswith("HTTP_"))


class ScopeHeaders(Mapping[str, str]):
    """ScopeHeaders shows an ASGI scope's headers as a lowercase mapping, e.g. ``h["b3"]``.

    ASGI already lowercases names; repeated headers keep their first value.
    """

    __slots__ = ("_headers",)

    def __init__(self, scope: Mapping[str, Any]) -> None:
        headers: dict[str, str] = {}
        for name, value in scope.get("headers", ()):
            key = name.decode("latin-1")
            if key not in headers:
                headers[key] = value.decode("latin-1")
        self._headers = headers

    def __getitem__(self, name: str) -> str:
        return self._headers[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._headers)

    def __len__(self) -> int:
        return len(self._headers)


class ServerCall(Call):
    """ServerCall is one request in flight on a server, from `ServerInstruments.start`."""

    __slots__ = ("active", "method", "scheme")

    def __init__(self, method: str, scheme: str, active: Gauge, begin: float) -> None:
        # Call.__init__ inlined: one Python frame less per request.
        self.begin = begin
        self.span: Any = None
        self.context: Any = None
        self.token: Any = None
        self.method = method
        self.scheme = scheme
        self.active = active


class ServerInstruments:
    """ServerInstruments records the HTTP server metrics and span of each request.

    ``http_server_request_duration_seconds`` and ``http_server_active_requests`` are declared on
    *metrics* at construction, bound children are cached per label set, and with a *tracer* each
    request gets a SERVER span whose parent is extracted from the request headers; the duration is
    observed while that span is current, so exemplars name its trace. With a *logger* each request
    also writes an `AccessLog` line, inside the span. Recording never raises: a failure is counted
    in ``kitobs_telemetry_dropped_total{reason="http_error"}``. It is built on
    `kitobs.transport.core.Instruments`. Example::

        inst = ServerInstruments(kit.metrics, kit.tracer, kit.logger)
        call = inst.start("GET", "http", EnvironHeaders(environ), "/users/7")
        ...
        inst.finish(call, "/users/{id}", 200, None)
    """

    __slots__ = ("_active", "_active_children", "_core", "_tracer")

    def __init__(
        self, metrics: Provider, tracer: Tracer | None = None, logger: Logger | None = None
    ) -> None:
        self._core = Instruments(
            metrics,
            contract.HTTP_SERVER_REQUEST_DURATION,
            "http",
            kind="server",
            tracer=tracer,
            logger=logger,
            log_keys=("method", "route", "status"),
        )
        self._active: Gauge = metrics.declare(contract.HTTP_SERVER_ACTIVE_REQUESTS)
        self._active_children: dict[tuple[str, str], Gauge] = {}
        self._tracer = tracer

    def start(
        self, raw_method: str, raw_scheme: str, headers: Mapping[str, str] | None, path: str = ""
    ) -> ServerCall:
        """start counts a request in flight and starts its span, e.g. ``start("GET", "http", h)``.

        With a tracer, the span is made current until `finish` (call both in one context).
        """
        meth = raw_method if raw_method in _KNOWN else _OTHER
        sch = raw_scheme if raw_scheme in ("http", "https") else _OTHER
        key = (meth, sch)
        active = self._active_children.get(key)
        if active is None:
            active = self._active.labels(meth, sch)
            self._active_children[key] = active
        active.add(1.0)
        call = ServerCall(meth, sch, active, _perf_counter())
        if self._tracer is not None:
            attributes = {"http.request.method": meth, "url.scheme": sch}
            if path:
                attributes["url.path"] = path
            self._core.start_span(call, "HTTP" if meth == _OTHER else meth, attributes, headers)
        return call

    def release(self, call: ServerCall) -> None:
        """release stops *call*'s span being current, e.g. once a WSGI app has returned.

        The span itself stays open until `finish`; without a tracer this does nothing.
        """
        if call.token is not None:
            self._core.release(call)

    def finish(
        self, call: ServerCall, template: str | None, code: int, exc: BaseException | None
    ) -> None:
        """finish records the request: duration, in-flight count, access log, span; never raises.

        *template* is the matched route template or None, *code* the status sent (500 if none
        was sent because of *exc*). The span is current while the duration is observed and the
        access line written (made current again if `release` was called), then it ends.
        """
        core = self._core
        try:
            call.active.add(-1.0)
            rt = template or _UNMATCHED
            st = _STATUS.get(code, _OTHER)
            err = error_type(exc, code) if exc is not None or code >= 500 else ""
        except Exception:  # the recording path never raises into the application
            core.drop(core.dropped_metrics)
            return
        meth = call.method
        if call.span is None:
            core.finish(call, (meth, rt, st, call.scheme, err), (meth, rt, st), err != "", err)
            return
        attributes: dict[str, Any] = {}
        name = None
        if rt != _UNMATCHED:
            attributes["http.route"] = rt
            name = f"{'HTTP' if meth == _OTHER else meth} {rt}"
        if code:
            attributes["http.response.status_code"] = code
        if err:
            attributes["error.type"] = err
        core.finish(
            call, (meth, rt, st, call.scheme, err), (meth, rt, st), err != "", err, exc,
            attributes, name,
        )  # fmt: skip


class ClientCall(Call):
    """ClientCall is one outgoing request in flight, from `ClientInstruments.start`."""

    __slots__ = ("address", "method", "port")

    def __init__(self, method: str, address: str, port: str, begin: float) -> None:
        self.begin = begin
        self.span: Any = None
        self.context: Any = None
        self.token: Any = None
        self.method = method
        self.address = address
        self.port = port


_URL_REDACTED = "REDACTED"
_is_secret_param = redact.matcher((*redact.DEFAULT_KEYS, "sig", "signature", "awsaccesskeyid"))


def redact_url(url: str) -> str:
    """redact_url hides credentials in a URL before it is recorded, e.g. on a CLIENT span.

    User info is removed and the values of credential-like query parameters (``token``,
    ``api_key``, ``signature``...) are replaced, as OpenTelemetry's ``url.full`` convention asks:
    ``http://u:p@h/x?token=t&q=1`` becomes ``http://h/x?token=REDACTED&q=1``.
    """
    if "@" not in url and "?" not in url:
        return url
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url.split("?", 1)[0]
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = parts.query
    if query:
        pairs = []
        for item in query.split("&"):
            name, sep, value = item.partition("=")
            if sep and _is_secret_param(urllib.parse.unquote_plus(name)):
                value = _URL_REDACTED
            pairs.append(f"{name}{sep}{value}")
        query = "&".join(pairs)
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class ClientInstruments:
    """ClientInstruments records ``http_client_request_duration_seconds`` and a CLIENT span.

    `start` starts the span and injects its context into the outgoing headers; `finish` records
    the duration labelled by method, server address and port, status and error type. Recording
    never raises: a failure is counted in ``kitobs_telemetry_dropped_total{reason="http_error"}``.
    It is built on `kitobs.transport.core.Instruments`. Example::

        inst = ClientInstruments(kit.metrics, kit.tracer)
        call = inst.start("GET", "127.0.0.1", 8080, headers, "http://127.0.0.1:8080/x")
        ...
        inst.finish(call, 200, None)
    """

    __slots__ = ("_core", "_tracer")

    def __init__(self, metrics: Provider, tracer: Tracer | None = None) -> None:
        self._core = Instruments(
            metrics, contract.HTTP_CLIENT_REQUEST_DURATION, "http", kind="client", tracer=tracer
        )
        self._tracer = tracer

    def start(
        self,
        raw_method: str,
        address: str,
        port: int,
        headers: MutableMapping[str, str] | None,
        url: str = "",
    ) -> ClientCall:
        """start starts the CLIENT span and writes its context into *headers*."""
        meth = raw_method if raw_method in _KNOWN else _OTHER
        call = ClientCall(meth, address, str(port), _perf_counter())
        if self._tracer is not None:
            attributes: dict[str, Any] = {
                "http.request.method": meth,
                "server.address": address,
                "server.port": port,
            }
            if url:
                attributes["url.full"] = redact_url(url)
            self._core.start_span(
                call, "HTTP" if meth == _OTHER else meth, attributes, None, headers, False
            )
        return call

    def finish(self, call: ClientCall, code: int, exc: BaseException | None) -> None:
        """finish records the call: *code* is the status received, 0 if none (with *exc*)."""
        core = self._core
        try:
            st = _STATUS.get(code, _OTHER) if code else ""
            err = error_type(exc, code) if exc is not None or code >= 500 else ""
        except Exception:  # the recording path never raises into the caller
            core.drop(core.dropped_metrics)
            return
        labels = (call.method, call.address, call.port, st, err)
        if call.span is None:
            core.finish(call, labels)
            return
        attributes: dict[str, Any] = {}
        if code:
            attributes["http.response.status_code"] = code
        if err:
            attributes["error.type"] = err
        core.finish(call, labels, None, err != "", err, exc, attributes)
