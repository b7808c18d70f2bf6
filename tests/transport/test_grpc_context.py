"""The request context over gRPC: a real grpcio server on a free 127.0.0.1 port, real clients.

The server side fills the context from the call (metadata, the client's deadline, cancellation);
the client side turns the current deadline into the call's timeout, which the server reads back
from grpcio's own ``time_remaining()``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import grpc.aio
import pytest

from kitobs.endpoint import context
from kitobs.metrics import memory
from kitobs.transport import grpc as kgrpc

PATH = "/kitobs.test.Ctx/See"
STREAM = "/kitobs.test.Ctx/Stream"


class _Seen:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.cancelled = threading.Event()


def _handlers(seen: _Seen) -> grpc.GenericRpcHandler:
    def see(request: bytes, grpc_context: grpc.ServicerContext) -> bytes:
        ctx = context.current()
        seen.calls.append(
            {
                "auth": ctx.metadata.get("Authorization"),
                "remaining": context.time_remaining(),
                "grpc_remaining": grpc_context.time_remaining(),
            }
        )
        # b"wait" blocks until the client gives up: the context's cancellation must wake it.
        if request == b"wait" and ctx.cancelled.wait(20):
            seen.cancelled.set()
        return request

    def stream(request: bytes, grpc_context: grpc.ServicerContext) -> Iterator[bytes]:
        for _ in range(3):
            yield (context.current().metadata.get("x-who") or "none").encode()

    return grpc.method_handlers_generic_handler(
        "kitobs.test.Ctx",
        {
            "See": grpc.unary_unary_rpc_method_handler(see),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
        },
    )


@pytest.fixture
def server() -> Iterator[tuple[str, _Seen]]:
    seen = _Seen()
    pool = futures.ThreadPoolExecutor(4)
    srv = grpc.server(pool, interceptors=[kgrpc.ServerInterceptor(memory.Provider())])
    srv.add_generic_rpc_handlers((_handlers(seen),))
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    try:
        yield f"127.0.0.1:{port}", seen
    finally:
        srv.stop(None)
        pool.shutdown(wait=False)


def _channel(target: str) -> grpc.Channel:
    return grpc.intercept_channel(
        grpc.insecure_channel(target), kgrpc.ClientInterceptor(memory.Provider())
    )


def test_server_handlers_see_metadata_and_the_clients_deadline(
    server: tuple[str, _Seen],
) -> None:
    target, seen = server
    with grpc.insecure_channel(target) as channel:
        channel.unary_unary(PATH)(b"x", timeout=5, metadata=[("authorization", "Bearer ada")])
        channel.unary_unary(PATH)(b"x")
    with_deadline, without = seen.calls
    assert with_deadline["auth"] == "Bearer ada"
    assert 0 < with_deadline["remaining"] < 5.5  # grpc-timeout rounds up a little
    assert without["auth"] is None
    assert without["remaining"] is None


def test_streaming_handlers_see_the_context_while_they_make_responses(
    server: tuple[str, _Seen],
) -> None:
    target, _ = server
    with grpc.insecure_channel(target) as channel:
        answers = list(channel.unary_stream(STREAM)(b"x", metadata=[("x-who", "bob")]))
    assert answers == [b"bob", b"bob", b"bob"]


def test_server_cancellation_is_set_when_the_client_gives_up(server: tuple[str, _Seen]) -> None:
    target, seen = server
    with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as caught:
        channel.unary_unary(PATH)(b"wait", timeout=0.3)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert seen.cancelled.wait(10)


def test_client_calls_take_the_current_deadline_as_their_timeout(
    server: tuple[str, _Seen],
) -> None:
    target, seen = server
    with _channel(target) as channel, context.scoped(timeout=2.0):
        channel.unary_unary(PATH)(b"x")  # no timeout of its own
        channel.unary_unary(PATH)(b"x", timeout=60)  # a longer one is cut
    for call in seen.calls:
        # grpcio's own view on the server: the deadline came over the wire as grpc-timeout. The
        # header's units round it up a little (2.009 s seen), far from the call's own 60 s.
        assert 0 < call["grpc_remaining"] < 2.5


def test_a_shorter_call_timeout_is_kept(server: tuple[str, _Seen]) -> None:
    target, seen = server
    with _channel(target) as channel, context.scoped(timeout=60):
        channel.unary_unary(PATH)(b"x", timeout=1.0)
    # grpc-timeout is written rounded up to its unit, so allow that much above the 1 s.
    assert 0 < seen.calls[0]["grpc_remaining"] <= 1.1


def test_a_passed_deadline_fails_the_call_before_it_reaches_the_server(
    server: tuple[str, _Seen],
) -> None:
    target, seen = server
    with (
        _channel(target) as channel,
        context.scoped(deadline=time.monotonic() - 1.0),
        pytest.raises(grpc.RpcError) as caught,
    ):
        channel.unary_unary(PATH)(b"x")
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert seen.calls == []


def test_aio_server_and_client_carry_the_context() -> None:
    seen: list[dict[str, Any]] = []

    async def see(request: bytes, grpc_context: Any) -> bytes:
        seen.append(
            {
                "who": context.current().metadata.get("X-Who"),
                "remaining": context.time_remaining(),
                "grpc_remaining": grpc_context.time_remaining(),
            }
        )
        await asyncio.sleep(0.05)  # overlap the calls: each task keeps its own context
        return request

    async def run() -> None:
        srv = grpc.aio.server(interceptors=[kgrpc.AioServerInterceptor(memory.Provider())])
        srv.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "kitobs.test.Ctx", {"See": grpc.unary_unary_rpc_method_handler(see)}
                ),
            )
        )
        port = srv.add_insecure_port("127.0.0.1:0")
        await srv.start()
        try:
            async with grpc.aio.insecure_channel(
                f"127.0.0.1:{port}", interceptors=kgrpc.aio_client_interceptors(memory.Provider())
            ) as channel:
                stub = channel.unary_unary(PATH)

                async def one(who: str) -> bytes:
                    with context.scoped(timeout=3.0):
                        answer: bytes = await stub(who.encode(), metadata=(("x-who", who),))
                        return answer

                answers = await asyncio.gather(*(one(f"c{i}") for i in range(8)))
            assert answers == [f"c{i}".encode() for i in range(8)]
        finally:
            await srv.stop(None)

    asyncio.run(run())
    assert sorted(call["who"] for call in seen) == [f"c{i}" for i in range(8)]
    for call in seen:
        assert 0 < call["remaining"] <= 3.0
        assert 0 < call["grpc_remaining"] <= 3.0
