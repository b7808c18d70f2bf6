"""The gRPC endpoint server answers toolkit refusals with their gRPC status and headers.

Real grpcio server and client on loopback: a rate limiter's `LimitedError`, an open circuit
breaker's `OpenError` and an auth failure end the call with RESOURCE_EXHAUSTED, UNAVAILABLE and
UNAUTHENTICATED, their ``Retry-After``/``WWW-Authenticate`` as trailing metadata, and are
recorded under their own outcome; a body the codec cannot read is INVALID_ARGUMENT without
quoting it.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from kitobs import config
from kitobs.auth import basic
from kitobs.circuitbreaker import Breaker
from kitobs.endpoint.instrument import instrumenting
from kitobs.kit import Kit
from kitobs.log import nop
from kitobs.metrics import memory
from kitobs.ratelimit import Limiter, erroring
from kitobs.tracing import Tracer
from kitobs.transport import grpc as kgrpc

ENDPOINT = "kitobs_endpoint_duration"


def _kit(provider: memory.Provider) -> Kit:
    return Kit(config.load(env={}, search=False), logger=nop(), metrics=provider, tracer=Tracer())


def _trailing(err: grpc.RpcError) -> dict[str, str]:
    return {key: value for key, value in err.trailing_metadata() or ()}


def test_refusals_end_the_call_with_their_status_and_metadata() -> None:
    provider = memory.Provider()
    kit = _kit(provider)
    limiter = Limiter("grpc-api", rate=0.001, burst=1, kit=kit)
    breaker = Breaker("grpc-down", consecutive_failures=1, open_timeout=30.0, kit=kit)

    def echo(request: Any) -> Any:
        return request

    def down(request: Any) -> Any:
        raise ConnectionError("the dependency is down")

    private = basic.middleware(basic.fixed("ada", "pw"), kit=kit)
    endpoints = {
        "limited": instrumenting(kit, name="limited")(erroring(limiter)(echo)),
        "down": instrumenting(kit, name="down")(breaker(down)),
        "private": instrumenting(kit, name="private")(private(echo)),
    }
    with (
        kgrpc.serve_endpoints(endpoints, kit) as server,
        kgrpc.Client(server.target, kit, timeout=5.0) as client,
    ):
        assert client.call("limited", {"n": 1}) == {"n": 1}  # the one token
        with pytest.raises(grpc.RpcError) as limited:
            client.call("limited", {"n": 2})
        assert limited.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert int(_trailing(limited.value)["retry-after"]) >= 1

        with pytest.raises(grpc.RpcError) as tripping:
            client.call("down", {})
        assert tripping.value.code() is grpc.StatusCode.UNKNOWN  # the call that trips it
        with pytest.raises(grpc.RpcError) as refused:
            client.call("down", {})
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "retry-after" in _trailing(refused.value)

        with pytest.raises(grpc.RpcError) as unauthenticated:
            client.call("private", {})
        assert unauthenticated.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert _trailing(unauthenticated.value)["www-authenticate"].startswith("Basic ")

    def count(endpoint: str, outcome: str) -> float:
        return len(provider.observations(ENDPOINT, endpoint=endpoint, outcome=outcome))

    assert count("limited", "success") == 1
    assert count("limited", "limited") == 1
    assert count("down", "exception") == 1
    assert count("down", "rejected") == 1
    assert count("private", "unauthenticated") == 1


def test_a_body_the_codec_cannot_read_is_invalid_argument() -> None:
    kit = _kit(memory.Provider())
    with kgrpc.serve_endpoints({"echo": lambda request: request}, kit) as server:
        channel = grpc.insecure_channel(server.target)
        try:
            call = channel.unary_unary("/kitobs.Endpoints/echo")
            with pytest.raises(grpc.RpcError) as bad:
                call(b'{"password": "hunter2"', timeout=5.0)
        finally:
            channel.close()
    assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "hunter2" not in (bad.value.details() or "")
