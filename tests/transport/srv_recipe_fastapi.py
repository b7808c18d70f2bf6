"""The FastAPI recipe: /metrics added with add_route, the app served instrumented (uvicorn)."""

from __future__ import annotations

from fastapi import FastAPI

from kitobs.transport import starlette as kitobs_starlette
from tests.transport.srv_recipe_common import KIT as kit

fastapi_app = FastAPI()


@fastapi_app.get("/users/{user_id}")
async def user(user_id: int) -> dict[str, int]:
    return {"id": user_id}


@fastapi_app.get("/boom")
async def boom() -> dict[str, int]:
    raise KeyError("kaput")


for path, page in kit.metrics.asgi_routes().items():
    fastapi_app.add_route(path, page)
app = kitobs_starlette.instrument(fastapi_app, kit)
