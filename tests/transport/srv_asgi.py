"""A plain ASGI app: go-kit style `kitobs.transport.asgi.Server`s behind asgi.Middleware (uvicorn).

Routes exercise every hook of the Server: before hooks (scope), sync and async decode, sync and
async endpoints and encoders, after hooks (scope, response), a custom error encoder for business
errors and exceptions, and finalizers that see the status and the body size the client received.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from kitobs.transport import asgi
from tests.transport import srv_common

finalized: list[tuple[str, int, int]] = []


def _tag_request(scope: asgi.Scope) -> None:
    # A before hook: what the client sent in x-tag reaches the after hook through the scope.
    headers = dict(scope.get("headers") or [])
    scope["test.tag"] = headers.get(b"x-tag", b"none").decode()


def _echo_tag(scope: asgi.Scope, response: asgi.Response) -> None:
    response.headers.append(("x-tag-seen", scope["test.tag"]))


def _finalizer(scope: asgi.Scope, code: int, size: int) -> None:
    finalized.append((scope["path"], code, size))


async def _sum(request: dict[str, int]) -> dict[str, int]:
    await asyncio.sleep(0)
    return {"v": request["a"] + request["b"]}


async def _encode_async(response: Any) -> asgi.Response:
    return asgi.Response(201, json.dumps(response).encode(), [("x-encoder", "async")])


async def _decode_async(scope: asgi.Scope, body: bytes) -> Any:
    await asyncio.sleep(0)
    return json.loads(body)


class _Overdrawn(Exception):
    pass


class _Result:
    def __init__(self, err: BaseException | None, value: int = 0) -> None:
        self.err = err
        self.value = value

    def failed(self) -> BaseException | None:
        return self.err


def _withdraw(request: dict[str, int]) -> _Result:
    if request["amount"] > 100:
        return _Result(_Overdrawn(f"balance 100 < {request['amount']}"))
    if request["amount"] < 0:
        raise ValueError("negative amount")
    return _Result(None, 100 - request["amount"])


def _encode_balance(response: _Result) -> asgi.Response:
    return asgi.Response(200, json.dumps({"balance": response.value}).encode())


def _bank_errors(error: BaseException) -> asgi.Response:
    # A custom error encoder: business errors are 409 with their own shape, the rest 400.
    status = 409 if isinstance(error, _Overdrawn) else 400
    body = json.dumps({"kind": type(error).__name__, "detail": str(error)}).encode()
    return asgi.Response(status, body, [("content-type", "application/problem+json")])


_servers: dict[str, asgi.Server] = {
    "/sum": asgi.Server(
        _sum,
        asgi.decode_json,
        _encode_async,
        before=[_tag_request],
        after=[_echo_tag],
        finalizers=[_finalizer],
        route="/sum",
    ),
    "/withdraw": asgi.Server(
        _withdraw,
        _decode_async,
        _encode_balance,
        error_encoder=_bank_errors,
        finalizers=[_finalizer],
        route="/withdraw",
    ),
    **{
        path: asgi.Server(endpoint, asgi.decode_json, asgi.encode_json, route=path)
        for path, endpoint in (("/refused", srv_common.refuse), ("/leaky", srv_common.leak))
    },
}


async def _router(scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
    server = _servers.get(scope.get("path", ""))
    if server is not None:
        await server(scope, receive, send)
        return
    if scope.get("path") == "/finalized":
        body = json.dumps(finalized).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
        return
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b"no such route"})


app = srv_common.with_metrics_asgi(
    asgi.Middleware(_router, srv_common.KIT.metrics, tracer=srv_common.KIT.tracer)
)
