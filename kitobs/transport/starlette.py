"""Starlette and FastAPI integration: the whole app wrapped, route templates read after routing.

`instrument` returns the app wrapped in `kitobs.transport.asgi.Middleware`, outside Starlette's
own middleware stack, so the 500s of ``ServerErrorMiddleware`` and the 429s of any rate limiter are
counted. The route template is the matched route's ``path`` (``/users/{user_id}``), which
Starlette's router and FastAPI's put in ``scope["route"]`` while routing::

    app = FastAPI()
    ...
    asgi_app = kitobs.transport.starlette.instrument(app, kit)   # serve this one
    # uvicorn.run(asgi_app, host="127.0.0.1", port=8000)

Views need no change. Without a *kit* the process-wide `kitobs.kit.default` is used. Inside a
``Mount`` the label is the inner route's path (see `kitobs.transport.asgi.route_from_scope`). The
Kit's ``[transport.http]`` settings apply: requests for ``exclude_paths`` (by default ``/metrics``
and ``/debug/vars``) are not recorded, and with ``access_log`` (the default) each request writes
one line through ``kit.logger``. The exposition pages mount with ``add_route``::

    for path, page in kit.metrics.asgi_routes().items():
        app.add_route(path, page)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kitobs.transport import asgi

if TYPE_CHECKING:
    from kitobs.kit import Kit

__all__ = ["instrument"]


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
    http = kit.settings.transport.http
    return asgi.Middleware(
        app,
        kit.metrics,
        tracer=kit.tracer,
        logger=kit.logger if http.access_log else None,
        exclude_paths=http.exclude_paths,
        timeout=timeout,
    )
