"""Servers whose endpoints report the request context they see (gunicorn and uvicorn).

``/ctx`` answers ``{"who": <X-Who header>, "user": <value an auth middleware set>, "remaining":
<seconds to the deadline>, "inside": <current after the request>}`` after a short pause, so
concurrent requests overlap in the server's threads or tasks.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import flask
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from kitobs.endpoint import Endpoint, context
from kitobs.transport import asgi, wsgi
from kitobs.transport import flask as kflask
from kitobs.transport import starlette as kstarlette
from tests.transport import srv_common

TIMEOUT = 30.0


def _seen() -> dict[str, Any]:
    ctx = context.current()
    return {
        "who": ctx.metadata.get("x-who"),
        "auth": ctx.metadata.get("Authorization"),
        "user": ctx.values.get("user"),
        "remaining": context.time_remaining(),
    }


def _authenticate(next_endpoint: Endpoint) -> Endpoint:
    # An auth middleware: what it adds is seen by the endpoint inside it only.
    def endpoint(request: Any) -> Any:
        who = context.current().metadata.get("X-Who")
        with context.scoped(values={"user": f"user-{who}"}):
            return next_endpoint(request)

    return endpoint


def _sync_ctx(request: Any) -> dict[str, Any]:
    time.sleep(0.05)
    return _seen()


async def _async_ctx(request: Any) -> dict[str, Any]:
    await asyncio.sleep(0.05)
    return _seen()


def _async_authenticate(next_endpoint: Endpoint) -> Endpoint:
    async def endpoint(request: Any) -> Any:
        who = context.current().metadata.get("X-Who")
        with context.scoped(values={"user": f"user-{who}"}):
            return await next_endpoint(request)

    return endpoint


_wsgi_server = wsgi.Server(_authenticate(_sync_ctx), lambda environ: None, wsgi.encode_json)

wsgi_app = srv_common.with_metrics_wsgi(
    wsgi.Middleware(_wsgi_server, srv_common.KIT.metrics, timeout=TIMEOUT)
)

_asgi_server = asgi.Server(
    _async_authenticate(_async_ctx), lambda scope, body: None, asgi.encode_json
)

asgi_app = srv_common.with_metrics_asgi(
    asgi.Middleware(_asgi_server, srv_common.KIT.metrics, timeout=TIMEOUT)
)

_flask = flask.Flask(__name__)


@_flask.get("/ctx")
def _flask_ctx() -> dict[str, Any]:
    time.sleep(0.05)
    return _seen()


flask_app = srv_common.with_metrics_wsgi(
    kflask.instrument(_flask, srv_common.KIT, timeout=TIMEOUT).wsgi_app
)


def _starlette_sync(request: Request) -> JSONResponse:
    # A sync view: Starlette runs it in its thread pool.
    time.sleep(0.05)
    return JSONResponse(_seen())


async def _starlette_async(request: Request) -> JSONResponse:
    await asyncio.sleep(0.05)
    return JSONResponse(_seen())


starlette_app = srv_common.with_metrics_asgi(
    kstarlette.instrument(
        Starlette(routes=[Route("/ctx", _starlette_async), Route("/sync", _starlette_sync)]),
        srv_common.KIT,
        timeout=TIMEOUT,
    )
)
