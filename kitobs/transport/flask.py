"""Flask integration: every view instrumented, with Flask's route templates as ``http_route``.

`instrument` wraps ``app.wsgi_app`` in `kitobs.transport.wsgi.Middleware` (outermost, so Flask's
own error pages are counted) and registers two hooks: the first ``before_request`` records the
matched rule (``/users/<int:id>``; no rule is ``unmatched``), and a ``teardown_request`` records an
unhandled exception, so a 500 page is labelled with the exception's ``error_type``::

    app = flask.Flask(__name__)
    kitobs.transport.flask.instrument(app, kit)

Views need no change. A `kitobs.endpoint.RequestError` a view raises (an auth failure, a rate
limiter's refusal, an open circuit breaker) is answered with its status, headers and message
(`kitobs.transport.http.encode_error`: ``401`` with ``WWW-Authenticate``, ``429`` with
``Retry-After``, ``503``) unless the app registered its own handler for it.

Without a *kit* the process-wide `kitobs.kit.default` is used. The Kit's
``[transport.http]`` settings apply: requests for ``exclude_paths`` (by default ``/metrics`` and
``/debug/vars``) are not recorded, and with ``access_log`` (the default) each request writes one
line through ``kit.logger``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import flask

from kitobs.endpoint import RequestError
from kitobs.transport import wsgi
from kitobs.transport.http import encode_error

if TYPE_CHECKING:
    from kitobs.kit import Kit

__all__ = ["instrument"]


def _remember_route() -> None:
    # Runs before any other before_request hook, so a hook answering early is still labelled.
    rule = flask.request.url_rule
    if rule is not None:
        flask.request.environ[wsgi.ROUTE_KEY] = rule.rule


def _remember_exception(exc: BaseException | None) -> None:
    if exc is not None:
        flask.request.environ[wsgi.EXCEPTION_KEY] = exc


def _request_error_response(error: RequestError) -> flask.Response:
    code, headers, body = encode_error(error)
    return flask.Response(body, status=code, headers=headers, mimetype="application/json")


def _handles_request_errors(app: flask.Flask) -> bool:
    # A handler the app registered itself, for RequestError or a base of it, wins over ours.
    handlers = app.error_handler_spec.get(None, {}).get(None, {})
    return any(issubclass(RequestError, cls) for cls in handlers)


def instrument(
    app: flask.Flask, kit: Kit | None = None, *, timeout: float | None = None
) -> flask.Flask:
    """instrument records HTTP server metrics and spans for every view, e.g. ``instrument(app)``.

    Returns *app*, whose ``wsgi_app`` is now wrapped. Call it once per app. Views run with the
    request context (`kitobs.endpoint.context`) current, the request headers as its metadata;
    *timeout* (seconds) gives each request a deadline.
    """
    if kit is None:
        from kitobs.kit import default

        kit = default()
    app.before_request_funcs.setdefault(None, []).insert(0, _remember_route)
    app.teardown_request(_remember_exception)
    if not _handles_request_errors(app):
        app.register_error_handler(RequestError, _request_error_response)
    http = kit.settings.transport.http
    app.wsgi_app = wsgi.Middleware(  # type: ignore[method-assign]
        app.wsgi_app,
        kit.metrics,
        tracer=kit.tracer,
        logger=kit.logger if http.access_log else None,
        exclude_paths=http.exclude_paths,
        timeout=timeout,
    )
    return app
