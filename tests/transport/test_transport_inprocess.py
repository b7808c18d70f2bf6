"""The WSGI and ASGI middleware driven in-process: exemplars, excluded paths, the access line.

The real-server tests (test_transport_recipes.py) cover the same behaviour end to end; these pin
each part down on its own, with kitobs' own provider, tracer and logger.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import Iterable
from typing import Any

import pytest
from starlette.applications import Starlette

from kitobs import log
from kitobs.errors import ConfigError
from kitobs.metrics import memory, prometheus
from kitobs.tracing import current_ids, current_sampled_ids
from kitobs.tracing._batch import BatchProcessor
from kitobs.tracing._tracer import Tracer
from kitobs.transport import asgi, wsgi

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


class _Spans:
    def __init__(self) -> None:
        self.spans: list[Any] = []

    def export(self, spans: Any, timeout: float) -> None:
        self.spans.extend(spans)


def _tracer() -> tuple[Tracer, _Spans, BatchProcessor]:
    exporter = _Spans()
    processor = BatchProcessor(exporter, flush_interval=60)
    return Tracer(processor=processor), exporter, processor


def _ended(exporter: _Spans, processor: BatchProcessor) -> list[Any]:
    processor.flush(5)
    return exporter.spans


def _wsgi_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    environ[wsgi.ROUTE_KEY] = "/users/{id}"
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def _exemplar_ids(provider: prometheus.Provider) -> set[tuple[str, str]]:
    text = provider.exposition(openmetrics=True).decode()
    found = set()
    for line in text.splitlines():
        if line.startswith("http_server_request_duration_seconds_bucket"):
            m = re.search(r'# \{span_id="([0-9a-f]+)",trace_id="([0-9a-f]+)"\}', line)
            m = m or re.search(r'# \{trace_id="([0-9a-f]+)",span_id="([0-9a-f]+)"\}', line)
            if m:
                found.add(m.groups())
    return found


def test_wsgi_bucket_exemplar_is_the_request_span() -> None:
    provider = prometheus.Provider(exemplar_context=current_sampled_ids)
    tracer, exporter, processor = _tracer()
    app = wsgi.Middleware(_wsgi_app, provider, tracer=tracer)
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/users/7", "HTTP_TRACEPARENT": TRACEPARENT}
    body = app(environ, lambda status, headers, exc_info=None: None)
    assert list(body) == [b"ok"]
    body.close()  # type: ignore[attr-defined]
    [span] = _ended(exporter, processor)
    ids = _exemplar_ids(provider)
    span_id = f"{span.span_id:016x}"
    assert ids in ({(span_id, TRACE)}, {(TRACE, span_id)})


def test_asgi_bucket_exemplar_is_the_request_span() -> None:
    provider = prometheus.Provider(exemplar_context=current_sampled_ids)
    tracer, exporter, processor = _tracer()

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        scope[asgi.ROUTE_KEY] = "/users/{id}"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    app = asgi.Middleware(inner, provider, tracer=tracer)
    scope = {"type": "http", "method": "GET", "path": "/users/7", "headers": [
        (b"traceparent", TRACEPARENT.encode())]}  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    async def send(message: Any) -> None:
        pass

    asyncio.run(app(scope, receive, send))
    [span] = _ended(exporter, processor)
    span_id = f"{span.span_id:016x}"
    assert _exemplar_ids(provider) in ({(span_id, TRACE)}, {(TRACE, span_id)})


def test_excluded_path_is_not_recorded_and_others_are() -> None:
    provider = memory.Provider()

    def pages(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        environ[wsgi.ROUTE_KEY] = environ["PATH_INFO"]
        start_response("200 OK", [])
        return [b"page"]

    app = wsgi.Middleware(pages, provider)
    for path in ("/metrics", "/debug/vars", "/users/7"):
        body = app({"REQUEST_METHOD": "GET", "PATH_INFO": path}, lambda *a: None)
        assert list(body) == [b"page"]
        getattr(body, "close", lambda: None)()  # an excluded path gets the app's own list
    routes = [s["http_route"] for s in provider.series("http_server_request_duration_seconds")]
    assert routes == ["/users/7"]


def test_bad_excluded_path_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"transport\.http\.exclude_paths"):
        wsgi.Middleware(_wsgi_app, memory.Provider(), exclude_paths=("metrics",))


def test_access_line_goes_through_the_logger_with_its_span() -> None:
    out = io.StringIO()
    logger = log.new(out, format="json", trace_context=current_ids, redact_keys=("route",))
    tracer, _, _ = _tracer()
    app = wsgi.Middleware(_wsgi_app, memory.Provider(), tracer=tracer, logger=logger)
    body = app(
        {"REQUEST_METHOD": "GET", "PATH_INFO": "/users/7", "HTTP_TRACEPARENT": TRACEPARENT},
        lambda *a: None,
    )
    list(body)
    body.close()  # type: ignore[attr-defined]
    [line] = [json.loads(x) for x in out.getvalue().splitlines()]
    assert line["transport"] == "http"
    assert line["trace_id"] == TRACE
    assert line["route"] != "/users/{id}"  # redacted: the logger's redaction applies
    quiet = io.StringIO()
    app = wsgi.Middleware(_wsgi_app, memory.Provider(), logger=log.new(quiet, level="error"))
    list(app({"REQUEST_METHOD": "GET", "PATH_INFO": "/users/7"}, lambda *a: None))
    assert quiet.getvalue() == ""  # an info line below the logger's level


def test_exposition_page_mounts_with_add_route() -> None:
    provider = prometheus.Provider()
    provider.counter("kitobs_added", help="x").add()
    app = Starlette()
    for path, page in provider.asgi_routes().items():
        app.add_route(path, page)
    app.add_route("/direct", provider.asgi_app)
    for path in ("/metrics", "/direct"):
        status, body = asyncio.run(_get(app, path))
        assert status == 200
        assert "kitobs_added_total 1.0" in body


async def _get(app: Any, path: str) -> tuple[int, str]:
    sent: list[dict[str, Any]] = []
    scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(),
             "query_string": b"", "headers": [], "scheme": "http", "root_path": "",
             "server": ("127.0.0.1", 80), "http_version": "1.1"}  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body.decode()
