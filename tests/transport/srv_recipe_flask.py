"""README's Flask recipe: /metrics on the app's own port, every view instrumented (gunicorn)."""

from __future__ import annotations

from flask import Flask
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from kitobs.transport import flask as kitobs_flask
from tests.transport.srv_recipe_common import KIT as kit

app = Flask(__name__)


@app.get("/users/<int:user_id>")
def user(user_id: int) -> dict[str, int]:
    return {"id": user_id}


@app.get("/boom")
def boom() -> str:
    raise KeyError("kaput")


app.wsgi_app = DispatcherMiddleware(app.wsgi_app, kit.metrics.wsgi_routes())  # type: ignore[method-assign]
kitobs_flask.instrument(app, kit)
