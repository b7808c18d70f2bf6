"""Django integration: a middleware class, configured through Django settings.

Add it FIRST in ``MIDDLEWARE`` (outermost, so responses of the other middleware are counted)::

    MIDDLEWARE = ["kitobs.transport.django.Middleware", ...]
    KITOBS = {"kit": "myproject.observability.kit"}   # optional

``KITOBS`` keys (all optional): ``kit``, the dotted path of a `kitobs.kit.Kit` or of a function
returning one; ``config``, a configuration file for `kitobs.kit.Kit.from_config`; ``timeout``,
seconds each request may take (the request context's deadline). Without either
the process-wide `kitobs.kit.default` is used. Each request records
``http_server_request_duration_seconds`` and ``http_server_active_requests`` and a SERVER span whose
parent comes from the request headers. ``http_route`` is the resolver's route (``/users/<int:pk>/``,
include prefixes joined by Django; a regex pattern for ``re_path``), or ``unmatched``; a view's
exception becomes ``error_type`` even though Django answers it with a 500 page, and a
`kitobs.endpoint.RequestError` (an auth failure, a rate limiter's refusal, an open circuit breaker)
is answered with its status, headers and message (`kitobs.transport.http.encode_error`). A streamed
response is timed until its headers are ready.

Views run with the request context (`kitobs.endpoint.context`) current: the request headers as
its metadata and, with ``KITOBS["timeout"]``, a deadline.

The middleware is sync and async capable: under ASGI (``get_asgi_application``) it runs in the
event loop, so async views cost no thread hop, and its span is current in the view either way.

The Kit's ``[transport.http]`` settings apply: requests whose ``path_info`` is one of
``exclude_paths`` (by default ``/metrics`` and ``/debug/vars``) are not recorded, and with
``access_log`` (the default) each request writes one line through ``kit.logger``. `exposition_urls`
serves the Kit's exposition pages as Django views::

    urlpatterns = [*kitobs.transport.django.exposition_urls(), path("articles/<int:pk>/", ...)]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django import conf as _conf
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path
from django.utils.module_loading import import_string

from kitobs.endpoint import RequestError
from kitobs.endpoint.context import (
    NO_VALUES,
    Cancellation,
    RequestContext,
    attach,
    detach,
    from_fields,
)
from kitobs.errors import ConfigError
from kitobs.transport.http import (
    EnvironHeaders,
    ServerCall,
    ServerInstruments,
    encode_error,
    exclude_paths,
)

if TYPE_CHECKING:
    from kitobs.kit import Kit

__all__ = ["Middleware", "exposition_urls", "kit_from_settings"]

_EXCEPTION_ATTR = "_kitobs_exception"


def kit_from_settings() -> Kit:
    """kit_from_settings resolves the Kit named by ``settings.KITOBS``, e.g. ``{"kit": "a.kit"}``.

    Raises:
        ConfigError: ``KITOBS`` is not a dict, has unknown keys, or ``kit`` names no Kit.
    """
    from kitobs.kit import Kit, default

    # Read at call time: Django settings are lazy and may be configured after import.
    options = getattr(_conf.settings, "KITOBS", None) or {}
    if not isinstance(options, dict):
        raise ConfigError("settings.KITOBS must be a dict", value=type(options).__name__)
    unknown = set(options) - {"kit", "config", "timeout"}
    if unknown:
        raise ConfigError(
            "unknown keys in settings.KITOBS",
            value=sorted(unknown),
            allowed=("kit", "config", "timeout"),
        )
    if "kit" in options:
        try:
            found: Any = import_string(options["kit"])
        except ImportError as err:
            raise ConfigError(
                f"settings.KITOBS['kit'] cannot be imported: {err}", value=options["kit"]
            ) from err
        if not isinstance(found, Kit) and callable(found):
            found = found()
        if not isinstance(found, Kit):
            raise ConfigError(
                "settings.KITOBS['kit'] must name a Kit or a function returning one",
                value=options["kit"],
            )
        return found
    if "config" in options:
        return Kit.from_config(options["config"])
    return default()


def _timeout_from_settings() -> float | None:
    timeout = (getattr(_conf.settings, "KITOBS", None) or {}).get("timeout")
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ConfigError(
            "settings.KITOBS['timeout'] must be a positive number of seconds",
            value=timeout,
            allowed="a number > 0, or no key for no deadline",
        )
    return float(timeout)


def _route(request: Any) -> str | None:
    match = getattr(request, "resolver_match", None)
    if match is None:
        return None
    route = match.route
    if not isinstance(route, str) or not route:
        return None
    return route if route.startswith("/") else "/" + route


class Middleware:
    """Middleware records HTTP server metrics and spans for every Django view.

    Django builds it once per process with ``get_response``; the Kit comes from
    `kit_from_settings`. Example: ``MIDDLEWARE = ["kitobs.transport.django.Middleware", ...]``.
    With an async ``get_response`` (Django under ASGI) it is itself async.
    """

    sync_capable = True
    async_capable = True

    # Where asgiref's markcoroutinefunction marks an async instance: _is_coroutine on Python 3.11,
    # _is_coroutine_marker (inspect.markcoroutinefunction's) on 3.12 and newer.
    __slots__ = (
        "_async",
        "_excluded",
        "_get_response",
        "_instruments",
        "_is_coroutine",
        "_is_coroutine_marker",
        "_timeout",
        "_traced",
    )

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        kit = kit_from_settings()
        http = kit.settings.transport.http
        self._get_response = get_response
        self._excluded = exclude_paths(http.exclude_paths)
        self._instruments = ServerInstruments(
            kit.metrics, kit.tracer, kit.logger if http.access_log else None
        )
        self._traced = kit.tracer is not None
        self._timeout = _timeout_from_settings()
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if request.path_info in self._excluded:
            return self._get_response(request)  # a coroutine under ASGI: Django awaits it
        if self._async:  # decided by Django's get_response, once per process
            return self._acall(request)
        headers = EnvironHeaders(request.META)
        call = self._start(request, headers)
        token = attach(self._context(headers))
        try:
            response = self._get_response(request)
        except BaseException as exc:
            self._instruments.finish(call, _route(request), 500, exc)
            raise
        finally:
            detach(token)
        self._finish(call, request, response)
        return response

    async def _acall(self, request: Any) -> Any:
        headers = EnvironHeaders(request.META)
        call = self._start(request, headers)
        token = attach(self._context(headers))
        try:
            response = await self._get_response(request)
        except BaseException as exc:  # CancelledError too: the client went away
            self._instruments.finish(call, _route(request), 500, exc)
            raise
        finally:
            detach(token)
        self._finish(call, request, response)
        return response

    def _context(self, headers: EnvironHeaders) -> RequestContext:
        timeout = self._timeout
        return from_fields(
            (
                None if timeout is None else time.monotonic() + timeout,
                Cancellation(),
                headers,
                NO_VALUES,
            )
        )

    def _start(self, request: Any, headers: EnvironHeaders) -> ServerCall:
        return self._instruments.start(
            request.method or "",
            request.scheme or "http",  # honours SECURE_PROXY_SSL_HEADER behind a proxy
            headers if self._traced else None,
            request.path,
        )

    def _finish(self, call: ServerCall, request: Any, response: Any) -> None:
        self._instruments.finish(
            call, _route(request), response.status_code, getattr(request, _EXCEPTION_ATTR, None)
        )

    def process_exception(self, request: Any, exception: Exception) -> HttpResponse | None:
        """process_exception answers a `kitobs.endpoint.RequestError` with its status and headers.

        Any other exception is remembered for ``error_type`` and Django goes on (its 500 page).
        """
        if isinstance(exception, RequestError):
            code, headers, body = encode_error(exception)
            response = HttpResponse(body, status=code, content_type="application/json")
            for name, value in headers:
                response[name] = value
            return response
        setattr(request, _EXCEPTION_ATTR, exception)
        return None


def _page_view(app: Callable[..., Iterable[bytes]]) -> Callable[[HttpRequest], HttpResponse]:
    # The page is a WSGI app; a Django request's META is a WSGI environ (ASGI builds one too).
    def view(request: HttpRequest) -> HttpResponse:
        started: list[Any] = []

        def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
            started[:] = [status, headers]

        body = b"".join(app(request.META, start_response))
        response = HttpResponse(body, status=int(started[0][:3]))
        for name, value in started[1]:
            response[name] = value
        return response

    return view


def exposition_urls(kit: Kit | None = None) -> list[URLPattern]:
    """exposition_urls gives URL patterns for the Kit's pages, e.g. ``/metrics``, as Django views.

    One pattern per path of ``kit.metrics.wsgi_routes()`` (none for backends that serve no page);
    without a *kit*, `kit_from_settings`. Put them in ``urlpatterns``; the middleware leaves them
    unrecorded while their paths are in ``transport.http.exclude_paths``.
    """
    if kit is None:
        kit = kit_from_settings()
    return [
        path(route.lstrip("/"), _page_view(app)) for route, app in kit.metrics.wsgi_routes().items()
    ]
