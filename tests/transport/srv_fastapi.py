"""A FastAPI app instrumented with kitobs.transport.starlette, served by uvicorn in the tests."""

from __future__ import annotations

from fastapi import FastAPI

from kitobs.transport import starlette as kitobs_starlette
from tests.transport import srv_common

fastapi_app = FastAPI()


@fastapi_app.get("/items/{item_id}")
async def item(item_id: int) -> dict[str, int]:
    return {"id": item_id}


@fastapi_app.get("/boom")
async def boom() -> dict[str, int]:
    raise ZeroDivisionError("kaput")


@fastapi_app.get("/refused")
async def refused() -> dict[str, int]:
    srv_common.refuse()


app = srv_common.with_metrics_asgi(kitobs_starlette.instrument(fastapi_app, srv_common.KIT))
