"""The request context the WSGI and ASGI transports give, driven in-process through the protocol.

The context is built when first asked for: these tests check that whoever asks, and whenever,
sees one object per request, kept under ``CONTEXT_KEY``, and that an ASGI disconnect cancels it
whether it came before or after the context was built.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Iterable
from typing import Any

from kitobs.endpoint import context
from kitobs.metrics import memory
from kitobs.transport import asgi, wsgi


def _environ() -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/x",
        "wsgi.url_scheme": "http",
        "HTTP_X_WHO": "ada",
    }


def _start_response(status: str, headers: Any, exc_info: Any = None) -> None:
    pass


def _serve_wsgi(app: wsgi.WSGIApp, environ: dict[str, Any]) -> bytes:
    body = app(environ, _start_response)
    try:
        return b"".join(body)
    finally:
        getattr(body, "close", lambda: None)()


def test_wsgi_context_is_one_object_kept_in_the_environ() -> None:
    seen: list[context.RequestContext] = []

    def endpoint(request: Any) -> Any:
        seen.append(context.current())
        seen.append(context.current())
        return context.current().metadata["X-Who"]

    environ = _environ()
    app = wsgi.Middleware(
        wsgi.Server(endpoint, lambda e: None, wsgi.encode_json), memory.Provider()
    )
    assert _serve_wsgi(app, environ) == b'"ada"'
    assert seen[0] is seen[1]
    assert environ[wsgi.CONTEXT_KEY] is seen[0]
    assert context.current() is context.BACKGROUND


def test_wsgi_context_nobody_reads_is_not_built() -> None:
    environ = _environ()
    app = wsgi.Middleware(
        wsgi.Server(lambda r: 1, lambda e: None, wsgi.encode_json), memory.Provider()
    )
    assert _serve_wsgi(app, environ) == b"1"
    assert wsgi.CONTEXT_KEY not in environ


def test_wsgi_threads_asking_at_once_get_the_same_context() -> None:
    got: list[context.RequestContext] = []
    barrier = threading.Barrier(4)

    def ask() -> None:
        barrier.wait()
        got.append(context.current())

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        threads = [
            threading.Thread(target=contextvars.copy_context().run, args=(ask,)) for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        start_response("200 OK", [])
        return [b""]

    environ = _environ()
    _serve_wsgi(wsgi.Middleware(app, memory.Provider()), environ)
    assert len(got) == 4
    assert all(ctx is environ[wsgi.CONTEXT_KEY] for ctx in got)
    assert got[0].metadata["x-who"] == "ada"


def _scope() -> dict[str, Any]:
    return {"type": "http", "method": "GET", "path": "/x", "scheme": "http", "headers": []}


def _run_asgi(app: asgi.ASGIApp, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    asyncio.run(app(_scope(), receive, send))
    return sent


async def _respond(send: asgi.Send, body: bytes) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def test_asgi_disconnect_before_the_context_is_read_cancels_it() -> None:
    async def app(scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
        assert (await receive())["type"] == "http.disconnect"
        await _respond(send, b"yes" if context.current().cancelled.is_set() else b"no")

    sent = _run_asgi(asgi.Middleware(app, memory.Provider()), [{"type": "http.disconnect"}])
    assert sent[-1]["body"] == b"yes"


def test_asgi_disconnect_after_the_context_is_read_cancels_it() -> None:
    async def app(scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
        ctx = context.current()
        before = ctx.cancelled.is_set()
        await receive()
        after = context.current()
        answer = (not before) and after is ctx and ctx.cancelled.is_set()
        await _respond(send, b"yes" if answer else b"no")

    sent = _run_asgi(asgi.Middleware(app, memory.Provider()), [{"type": "http.disconnect"}])
    assert sent[-1]["body"] == b"yes"


def test_asgi_server_timeout_keeps_the_middleware_cancellation() -> None:
    seen: list[context.RequestContext] = []

    async def endpoint(request: Any) -> Any:
        seen.append(context.current())
        return 1

    app = asgi.Middleware(
        asgi.Server(endpoint, asgi.decode_json, asgi.encode_json, timeout=30.0),
        memory.Provider(),
    )
    # The server reads the body, sees the disconnect, and only then runs the endpoint.
    _run_asgi(app, [{"type": "http.disconnect"}])
    (ctx,) = seen
    assert ctx.deadline is not None
    assert ctx.cancelled.is_set()
