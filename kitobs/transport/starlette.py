"""Starlette and FastAPI integration: the whole app wrapped, route templates read after routing.

`instrument` returns the app wrapped in `kitobs.transport.asgi.Middleware`, outside Starlette's
own middleware stack, so the 500s of ``ServerErrorMiddleware`` and the 429s of any rate limiter are
counted. The route template is the matched route's ``path`` (``/users/{user_id}``), which
Starlette's router and FastAPI's put in ``scope["route"]`` while routing::

    app = FastAPI()
    ...
    asgi_app = kitobs.transport.starlette.instrument(app, kit)   # serve this one
    # uvicorn.run(asgi_app, host="127.0.0.1", port=8000)

Views need no change. A `kitobs.endpoint.RequestError` a view raises (an auth failure, a rate
limiter's refusal, an open circuit breaker) is answered with its status, headers and message
(`kitobs.transport.http.encode_error`: ``401`` with ``WWW-Authenticate``, ``429`` with
``Retry-After``, ``503``) unless the app has its own exception handler for it.

Without a *kit* the process-wide `kitobs.kit.default` is used. Inside a
``Mount`` the label is the inner route's path (see `kitobs.transport.asgi.route_from_scope`). The
Kit's ``[transport.http]`` settings apply: requests for ``exclude_paths`` (by default ``/metrics``
and ``/debug/vars``) are not recorded, and with ``access_log`` (the default) each request writes
one line through ``kit.logger``. The exposition pages mount with ``add_route``::

    for path, page in kit.metrics.asgi_routes().items():
        app.add_route(path, page)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kitobs.endpoint import RequestError
from kitobs.transport import asgi
from kitobs.transport.http import encode_error

if TYPE_CHECKING:
    from kitobs.kit import Kit

__all__ = ["instrument"]


async def _request_error_response(request: Any, error: Exception) -> Any:
    from starlette.responses import Response

    code, headers, body = encode_error(error)
    return Response(body, status_code=code, headers=dict(headers), media_type="application/json")


def _add_request_error_handler(app: asgi.ASGIApp) -> None:
    # Starlette and FastAPI apps take exception handlers until their first request; a handler
    # the app registered itself, for RequestError or a base of it, wins over ours.
    handlers = getattr(app, "exception_handlers", None)
    add = getattr(app, "add_exception_handler", None)
    if not isinstance(handlers, dict) or add is None:
        return
    if any(isinstance(cls, type) and issubclass(RequestError, cls) for cls in handlers):
        return
    add(RequestError, _request_error_response)


def instrument(
    app: asgi.ASGIApp, kit: Kit | None = None, *, timeout: float | None = None
) -> asgi.Middleware:
    """instrument wraps a Starlette or FastAPI app, e.g. ``asgi_app = instrument(app, kit)``.

    Serve the returned app; the original is left unchanged. Views, and the sync views Starlette
    runs in its thread pool, run with the request context (`kitobs.endpoint.context`) current,
    the request headers as its metadata; *timeout* (seconds) gives each request a deadline.
    """
    if kit is None:
        from kitobs.kit import default

        kit = default()
    _add_request_error_handler(app)
    http = kit.settings.transport.http
    return asgi.Middleware(
        app,
        kit.metrics,
        tracer=kit.tracer,
        logger=kit.logger if http.access_log else None,
        exclude_paths=http.exclude_paths,
        timeout=timeout,
    )
