"""A Flask app instrumented with kitobs.transport.flask, served by gunicorn in the tests."""

from __future__ import annotations

import time

import flask
import httpx

from kitobs.transport import flask as kitobs_flask
from kitobs.transport.httpclient import HTTPXTransport
from tests.transport import srv_common

flask_app = flask.Flask(__name__)


@flask_app.get("/users/<int:user_id>")
def user(user_id: int) -> dict[str, int]:
    return {"id": user_id}


@flask_app.post("/users/<int:user_id>")
def update_user(user_id: int) -> dict[str, int]:
    return {"updated": user_id}


@flask_app.get("/boom")
def boom() -> str:
    raise KeyError("kaput")


flask_app.add_url_rule("/refused", "refused", srv_common.refuse)


@flask_app.get("/unavailable")
def unavailable() -> tuple[str, int]:
    return "down", 503


@flask_app.get("/slow")
def slow() -> str:
    time.sleep(float(flask.request.args.get("s", "0.5")))
    return "done"


_client = httpx.Client(
    transport=HTTPXTransport(
        httpx.HTTPTransport(), srv_common.KIT.metrics, tracer=srv_common.KIT.tracer
    ),
    timeout=10,
)


@flask_app.get("/chain")
def chain() -> dict[str, object]:
    response = _client.get(f"{srv_common.DOWNSTREAM}/users/42")
    return {"downstream": response.status_code}


kitobs_flask.instrument(flask_app, srv_common.KIT)
app = srv_common.with_metrics_wsgi(flask_app.wsgi_app)
