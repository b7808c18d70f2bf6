"""Auth through real servers and clients on loopback: the credential travels as the HTTP
``Authorization`` header or the gRPC ``authorization`` metadata, reaches the middleware through
the request context, and the claims reach the endpoint."""

from __future__ import annotations

import base64
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import grpc
import httpx
import pytest
import requests

from kitobs.auth import CLAIMS, USER, basic
from kitobs.auth import jwt as kjwt
from kitobs.endpoint import chain, context
from kitobs.endpoint.instrument import instrumenting
from kitobs.transport import grpc as kgrpc
from kitobs.transport import wsgi
from kitobs.transport.httpclient import HTTPXTransport, RequestsAdapter, urllib_handlers
from tests.auth.conftest import DURATION, Parts
from tests.auth.keys import EC_PRIVATE, EC_PUBLIC

SIGN = kjwt.signer(EC_PRIVATE, "ES256", {"sub": "billing", "aud": "orders"}, lifetime=60)


def me(request: Any) -> dict[str, Any]:
    claims = context.current().values[CLAIMS]
    return {"sub": claims["sub"], "aud": claims["aud"]}


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server_parts() -> Parts:
    return Parts()


def _serve(app: Any) -> Iterator[str]:
    server: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()


@pytest.fixture
def http_url(server_parts: Parts) -> Iterator[str]:
    kit = server_parts.kit
    endpoint = chain(
        instrumenting(kit, name="me"),
        kjwt.parser(EC_PUBLIC, algorithms=["ES256"], audience="orders", kit=kit),
    )(me)
    app = wsgi.Middleware(
        wsgi.Server(endpoint, wsgi.decode_json, wsgi.encode_json, route="/me"), kit.metrics
    )
    yield from _serve(app)


def _outcomes(parts: Parts, name: str) -> dict[str, int]:
    return {
        outcome: len(parts.provider.observations(DURATION, endpoint=name, outcome=outcome))
        for outcome in ("success", "unauthenticated", "exception")
    }


def test_httpx_client_signer_to_wsgi_server_parser(server_parts: Parts, http_url: str) -> None:
    client_parts = Parts()
    transport = HTTPXTransport(httpx.HTTPTransport(), client_parts.provider)
    with httpx.Client(transport=transport) as client:

        def call_me(request: Any) -> httpx.Response:
            return client.post(f"{http_url}/me", json={})

        response = SIGN(call_me)(None)
        assert response.status_code == 200
        assert response.json() == {"sub": "billing", "aud": "orders"}
        # Unsigned: the request reaches the server without Authorization and is refused.
        refused = client.post(f"{http_url}/me", json={})
        assert refused.status_code == 401
        # A caller's own Authorization header wins over the context's.
        own = {"Authorization": "Bearer x"}
        overridden = SIGN(lambda _: client.post(f"{http_url}/me", json={}, headers=own))(None)
        assert overridden.status_code == 401
    assert _outcomes(server_parts, "me") == {"success": 1, "unauthenticated": 2, "exception": 0}
    assert server_parts.failures("bearer")["missing"] == 1
    assert server_parts.failures("bearer")["malformed"] == 1


def test_requests_and_urllib_clients_send_the_token(server_parts: Parts, http_url: str) -> None:
    client_parts = Parts()
    session = requests.Session()
    session.mount("http://", RequestsAdapter(client_parts.provider))
    opener = urllib.request.build_opener(*urllib_handlers(client_parts.provider))

    def with_requests(request: Any) -> Any:
        return session.post(f"{http_url}/me", json={}, timeout=5).json()

    def with_urllib(request: Any) -> Any:
        req = urllib.request.Request(
            f"{http_url}/me", data=b"{}", headers={"Content-Type": "application/json"}
        )
        with opener.open(req, timeout=5) as response:
            return response.read()

    try:
        assert SIGN(with_requests)(None) == {"sub": "billing", "aud": "orders"}
        assert SIGN(with_urllib)(None) == b'{"sub": "billing", "aud": "orders"}'
    finally:
        session.close()
    assert _outcomes(server_parts, "me")["success"] == 2


def test_basic_auth_over_http(server_parts: Parts) -> None:
    kit = server_parts.kit
    users = {"ada": basic.hash_password("lovelace", n=2**10)}

    def hello(request: Any) -> dict[str, str]:
        return {"user": context.current().values[USER]}

    endpoint = chain(instrumenting(kit, name="hello"), basic.middleware(users, kit=kit))(hello)
    app = wsgi.Middleware(
        wsgi.Server(endpoint, wsgi.decode_json, wsgi.encode_json, route="/hello"), kit.metrics
    )
    for url in _serve(app):
        good = base64.b64encode(b"ada:lovelace").decode()
        req = urllib.request.Request(
            f"{url}/hello", data=b"{}", headers={"Authorization": f"Basic {good}"}
        )
        with urllib.request.urlopen(req, timeout=5) as response:
            assert response.read() == b'{"user": "ada"}'
        bad = base64.b64encode(b"ada:babbage").decode()
        req = urllib.request.Request(
            f"{url}/hello", data=b"{}", headers={"Authorization": f"Basic {bad}"}
        )
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(req, timeout=5)
        raised.value.close()
        assert raised.value.code == 401
    assert _outcomes(server_parts, "hello") == {"success": 1, "unauthenticated": 1, "exception": 0}
    assert server_parts.failures("basic") == {"missing": 0, "malformed": 0, "invalid": 1}


def test_grpc_metadata_carries_the_token(server_parts: Parts) -> None:
    kit = server_parts.kit
    endpoint = chain(
        instrumenting(kit, name="me"),
        kjwt.parser(EC_PUBLIC, algorithms=["ES256"], audience="orders", kit=kit),
    )(me)
    client_parts = Parts()
    with kgrpc.serve_endpoints({"me": endpoint}, kit) as server:
        client = kgrpc.Client(server.target, client_parts.kit, timeout=10)
        try:
            assert SIGN(lambda _: client.call("me", {}))(None) == {
                "sub": "billing",
                "aud": "orders",
            }
            with pytest.raises(grpc.RpcError):
                client.call("me", {})  # no token: refused (the status is the server's mapping)
        finally:
            client.close()
    assert _outcomes(server_parts, "me") == {"success": 1, "unauthenticated": 1, "exception": 0}
    assert server_parts.failures("bearer")["missing"] == 1


def test_grpc_aio_metadata_carries_the_token(server_parts: Parts) -> None:
    import asyncio
    import json

    kit = server_parts.kit

    async def me_async(request: Any) -> dict[str, Any]:
        await asyncio.sleep(0)
        return me(request)

    guarded = chain(
        instrumenting(kit, name="me"),
        kjwt.parser(EC_PUBLIC, algorithms=["ES256"], audience="orders", kit=kit),
    )(me_async)

    async def handler(request: Any, context: Any) -> Any:
        return await guarded(request)

    def enc(value: Any) -> bytes:
        return json.dumps(value).encode()

    handlers = {"Me": grpc.unary_unary_rpc_method_handler(handler, json.loads, enc)}

    async def main() -> tuple[Any, grpc.StatusCode | None]:
        server = grpc.aio.server(interceptors=[kgrpc.AioServerInterceptor(kit.metrics)])
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.S", handlers),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        interceptors = kgrpc.aio_client_interceptors(Parts().provider)
        try:
            async with grpc.aio.insecure_channel(
                f"127.0.0.1:{port}", interceptors=interceptors
            ) as channel:
                stub = channel.unary_unary("/t.S/Me", enc, json.loads)

                async def call(request: Any) -> Any:
                    return await stub({}, timeout=10)

                answer = await SIGN(call)(None)
                try:
                    await stub({}, timeout=10)
                except grpc.RpcError as err:
                    return answer, err.code()
                return answer, None
        finally:
            await server.stop(None)

    answer, refused_code = asyncio.run(main())
    assert answer == {"sub": "billing", "aud": "orders"}
    assert refused_code is not None  # which code is the server's mapping
    assert _outcomes(server_parts, "me") == {"success": 1, "unauthenticated": 1, "exception": 0}
    assert server_parts.failures("bearer")["missing"] == 1
