"""A plain WSGI app: go-kit style Servers behind kitobs.transport.wsgi.Middleware (gunicorn)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Any

from kitobs.transport import wsgi
from tests.transport import srv_common


def _sum(request: dict[str, int]) -> dict[str, int]:
    return {"v": request["a"] + request["b"]}


class _Overflow(Exception):
    status_code = 422


class _Result:
    def __init__(self, err: BaseException | None) -> None:
        self.err = err

    def failed(self) -> BaseException | None:
        return self.err


def _checked_sum(request: dict[str, int]) -> Any:
    if request["a"] > 1000:
        return _Result(_Overflow("too big"))
    return {"v": request["a"] + request["b"]}


finalized: list[tuple[int, int]] = []


def _finalizer(environ: dict[str, Any], code: int, size: int) -> None:
    environ["test.finalized"] = (code, size)
    finalized.append((code, size))


_sum_server = wsgi.Server(
    _sum, wsgi.decode_json, wsgi.encode_json, route="/sum", finalizers=[_finalizer]
)
_checked_server = wsgi.Server(_checked_sum, wsgi.decode_json, wsgi.encode_json, route="/checked")


def _tag_request(environ: dict[str, Any]) -> None:
    # A before hook: what the client sent in X-Tag reaches the after hook through the environ.
    environ["test.tag"] = environ.get("HTTP_X_TAG", "none")


def _echo_tag(environ: dict[str, Any], response: wsgi.Response) -> None:
    response.headers.append(("X-Tag-Seen", environ["test.tag"]))


def _strict_errors(error: BaseException) -> wsgi.Response:
    # A custom error encoder: its own status, body shape and content type.
    body = json.dumps({"kind": type(error).__name__, "detail": str(error)}).encode()
    return wsgi.Response(418, body, [("Content-Type", "application/problem+json")])


_tagged_server = wsgi.Server(
    _checked_sum,
    wsgi.decode_json,
    wsgi.encode_json,
    before=[_tag_request],
    after=[_echo_tag],
    error_encoder=_strict_errors,
    route="/tagged",
)
_ITEM = re.compile(r"^/items/([^/]+)$")

_failing_servers = {
    path: wsgi.Server(endpoint, lambda environ: None, wsgi.encode_json, route=path)
    for path, endpoint in (("/refused", srv_common.refuse), ("/leaky", srv_common.leak))
}


def _router(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    if path == "/sum":
        return _sum_server(environ, start_response)
    if path == "/checked":
        return _checked_server(environ, start_response)
    if path == "/tagged":
        return _tagged_server(environ, start_response)
    if _ITEM.match(path):
        environ[wsgi.ROUTE_KEY] = "/items/{id}"
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"item ", path.encode()]
    if path in _failing_servers:
        return _failing_servers[path](environ, start_response)
    if path == "/boom":
        raise RuntimeError("plain wsgi failure")
    if path == "/finalized":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [repr(finalized[-1] if finalized else None).encode()]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"no such route"]


app = srv_common.with_metrics_wsgi(
    wsgi.Middleware(_router, srv_common.KIT.metrics, tracer=srv_common.KIT.tracer)
)
