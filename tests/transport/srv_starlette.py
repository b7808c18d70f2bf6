"""A Starlette app instrumented with kitobs.transport.starlette, served by uvicorn in the tests."""

from __future__ import annotations

import asyncio

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from kitobs.transport import starlette as kitobs_starlette
from tests.transport import srv_common


async def user(request: Request) -> JSONResponse:
    return JSONResponse({"id": int(request.path_params["user_id"])})


async def boom(request: Request) -> PlainTextResponse:
    raise LookupError("kaput")


async def slow(request: Request) -> PlainTextResponse:
    await asyncio.sleep(float(request.query_params.get("s", "0.5")))
    return PlainTextResponse("done")


async def wait_disconnect(request: Request) -> PlainTextResponse:
    # Waits until the client goes away (bounded), then answers into the void.
    for _ in range(1000):
        if await request.is_disconnected():
            break
        await asyncio.sleep(0.01)
    return PlainTextResponse("too late")


starlette_app = Starlette(
    routes=[
        Route("/users/{user_id:int}", user),
        Route("/boom", boom),
        Route("/slow", slow),
        Route("/wait", wait_disconnect),
        Route("/refused", srv_common.refuse),
    ]
)
app = srv_common.with_metrics_asgi(kitobs_starlette.instrument(starlette_app, srv_common.KIT))
