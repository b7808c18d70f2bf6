"""Zipkin export: bodies validate against ListOfSpans; batching, failures, shutdown, fork."""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.trace import SpanKind, StatusCode

from kitobs.tracing import Span, Tracer, zipkin
from kitobs.tracing._batch import BatchProcessor
from tests.support.zipkin import Receiver, receiver, validate

__all__ = ["receiver"]  # the fixture, re-exported for pytest


class Counts:
    """A drop counter per reason, standing in for ``provider.dropped("spans", reason)``."""

    def __init__(self) -> None:
        self.by_reason: dict[str, float] = {}
        self._lock = threading.Lock()

    def __call__(self, reason: str) -> Counts.Child:
        return Counts.Child(self, reason)

    class Child:
        def __init__(self, parent: Counts, reason: str) -> None:
            self.parent, self.reason = parent, reason

        def add(self, delta: float) -> None:
            with self.parent._lock:
                by = self.parent.by_reason
                by[self.reason] = by.get(self.reason, 0.0) + delta


class Lines:
    """A logger capturing records as dicts."""

    def __init__(self) -> None:
        self.records: list[dict[str, object]] = []

    def log(self, *keyvals: object) -> None:
        self.records.append(dict(zip(keyvals[::2], keyvals[1::2], strict=True)))


def _processor(url: str, **kw: Any) -> BatchProcessor:
    options: dict[str, Any] = {"flush_interval": 0.05, "shutdown_timeout": 5.0}
    options.update(kw)
    timeout = options.pop("timeout", 5.0)
    return BatchProcessor(
        zipkin.Exporter(url, service_name="Shop", timeout=timeout),
        export_timeout=timeout,
        **options,
    )


@pytest.fixture
def app_server() -> Iterator[tuple[str, Tracer, BatchProcessor, Receiver]]:
    """A loopback HTTP app traced by kitobs, exporting to a capture receiver."""
    rec = Receiver()
    processor = _processor(rec.url)
    tracer = Tracer(processor=processor)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ctx = tracer.extract(self.headers)  # type: ignore[arg-type]
            with tracer.span("GET /items/{id}", kind=SpanKind.SERVER, context=ctx) as span:
                span.set_attribute("http.route", "/items/{id}")
                with tracer.span("load") as load:
                    load.add_event("cache miss", {"key": "items:7"})
                status = 200
                if self.path.endswith("/boom"):
                    span.set_status(StatusCode.ERROR, "boom")
                    status = 500
                span.set_attribute("http.response.status_code", status)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", tracer, processor, rec
    finally:
        server.shutdown()
        server.server_close()
        processor.shutdown()
        rec.close()


def test_loopback_exchange_reaches_receiver_and_validates(
    app_server: tuple[str, Tracer, BatchProcessor, Receiver],
) -> None:
    base, tracer, processor, rec = app_server
    port = int(base.rsplit(":", 1)[1])
    for path in ("/items/7", "/items/boom"):
        attrs = {"server.address": "127.0.0.1", "server.port": port, "http.request.method": "GET"}
        with tracer.span("GET", kind=SpanKind.CLIENT, attributes=attrs) as client:
            headers: dict[str, str] = {}
            tracer.inject(headers)
            try:
                with urllib.request.urlopen(
                    urllib.request.Request(base + path, headers=headers), timeout=10
                ) as response:
                    response.read()
            except urllib.error.HTTPError as err:
                err.close()
    assert processor.flush(10)
    spans = rec.wait_for(6)  # validates every body against the spec
    assert len(spans) == 6
    assert all(ct == "application/json" for ct in rec.content_types)
    by_id = {s["id"]: s for s in spans}
    clients = [s for s in spans if s.get("kind") == "CLIENT"]
    servers = [s for s in spans if s.get("kind") == "SERVER"]
    internal = [s for s in spans if "kind" not in s]
    assert len(clients) == len(servers) == len(internal) == 2
    for server in servers:
        client = by_id[server["parentId"]]
        assert client["kind"] == "CLIENT"
        assert client["traceId"] == server["traceId"]
        assert client["remoteEndpoint"] == {"ipv4": "127.0.0.1", "port": port}
        assert server["localEndpoint"] == {"serviceName": "shop"}
        assert server["tags"]["http.route"] == "/items/{id}"
    for load in internal:
        assert by_id[load["parentId"]]["kind"] == "SERVER"
        (annotation,) = load["annotations"]
        assert json.loads(annotation["value"]) == {"cache miss": {"key": "items:7"}}
    failed = [s for s in servers if "error" in s.get("tags", {})]
    assert len(failed) == 1
    assert failed[0]["tags"]["error"] == "boom"
    assert failed[0]["tags"]["http.response.status_code"] == "500"
    # The client span's own trace id is what the server continued.
    assert {s["traceId"] for s in clients} == {s["traceId"] for s in servers}


def _ended(name: str = "s", **kw: Any) -> Span:
    span = Tracer().start_span(name, **kw)
    span.end()
    return span


attribute_values = st.one_of(
    st.text(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.text(max_size=5), max_size=3),
    st.lists(st.integers(), max_size=3),
)


@settings(max_examples=60, deadline=None)
@given(
    name=st.text(),
    kind=st.sampled_from(list(SpanKind)),
    attributes=st.dictionaries(st.text(min_size=1), attribute_values, max_size=5),
    events=st.lists(
        st.tuples(st.text(), st.dictionaries(st.text(min_size=1), attribute_values, max_size=2)),
        max_size=3,
    ),
    error=st.one_of(st.none(), st.text()),
    host=st.sampled_from(["10.1.2.3", "::1", "db.internal", ""]),
)
def test_any_span_encodes_to_a_valid_body(
    name: str,
    kind: SpanKind,
    attributes: dict[str, Any],
    events: list[tuple[str, dict[str, Any]]],
    error: str | None,
    host: str,
) -> None:
    span = Tracer().start_span(name, kind=kind, attributes=attributes)
    if host:
        span.set_attributes({"server.address": host, "server.port": 5432})
    for event_name, event_attrs in events:
        span.add_event(event_name, event_attrs)
    if error is not None:
        span.set_status(StatusCode.ERROR, error)
    span.end(span.start_ns)  # zero length: duration must still be at least 1
    (out,) = validate(zipkin.encode([span], "Svc"))
    assert out["duration"] == 1
    assert out["name"] == name
    assert ("kind" in out) == (kind is not SpanKind.INTERNAL)
    assert all(isinstance(v, str) for v in out.get("tags", {}).values())
    distinct = {(n, json.dumps(a, sort_keys=True, default=str)) for n, a in events}
    assert len(distinct) <= len(out.get("annotations", [])) <= len(events)
    assert ("error" in out.get("tags", {})) == (error is not None)
    if kind in (SpanKind.CLIENT, SpanKind.PRODUCER) and host:
        assert out["remoteEndpoint"]["port"] == 5432
    else:
        assert "remoteEndpoint" not in out


def test_tag_formats() -> None:
    span = _ended(attributes={"b": True, "i": 3, "f": 0.5, "l": ["1", "2"], "s": "x"})
    (out,) = validate(zipkin.encode([span], "svc"))
    assert out["tags"] == {"b": "true", "i": "3", "f": "0.5", "l": '["1","2"]', "s": "x"}


def test_links_become_one_tag() -> None:
    tracer = Tracer(public_edge=True)
    incoming = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    span = tracer.start_span("edge", context=tracer.extract(incoming))
    span.end()
    (out,) = validate(zipkin.encode([span], "svc"))
    assert out["tags"]["otel.links"] == "0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331"
    assert "parentId" not in out


def test_schema_validator_rejects_what_zipkin_rejects() -> None:
    good = json.loads(zipkin.encode([_ended()], "svc"))
    validate(json.dumps(good))
    for change in (
        {"id": "ABCDEF0123456789"},
        {"traceId": "Z" + "a" * 16},
        {"kind": "INTERNAL"},
        {"duration": 0},
        {"tags": {"n": 1}},
        {"kind": None},
    ):
        with pytest.raises(AssertionError, match="ListOfSpans"):
            validate(json.dumps([{**good[0], **change}]))


def test_receiver_answers_400_to_malformed_body_and_drop_is_counted(receiver: Receiver) -> None:
    request = urllib.request.Request(receiver.url, data=b"{not json", method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=5)
    assert info.value.code == 400
    info.value.close()
    counts, lines = Counts(), Lines()
    bad_url = receiver.url.replace("/api/v2/spans", "/wrong")
    processor = _processor(bad_url, dropped=counts, logger=lines)
    tracer = Tracer(processor=processor)
    for _ in range(3):
        tracer.start_span("s").end()
    processor.flush(10)
    processor.shutdown()
    assert counts.by_reason == {"export_failed": 3.0}
    assert [r["msg"] for r in lines.records] == ["span export failed"]
    assert "404" in str(lines.records[0]["err"])


def test_hanging_collector_costs_nothing_and_shutdown_is_bounded() -> None:
    hanging = Receiver(hang=True)
    counts, lines = Counts(), Lines()
    processor = _processor(
        hanging.url,
        queue_size=100,
        batch_size=10,
        timeout=30.0,
        shutdown_timeout=0.5,
        dropped=counts,
        logger=lines,
    )
    tracer = Tracer(processor=processor)
    try:
        for _ in range(10_000):
            with tracer.span("request"):
                pass
        begin = time.monotonic()
        processor.shutdown()
        took = time.monotonic() - begin
    finally:
        hanging.close()
    assert took < 0.5 + 2.0  # the feature: shutdown waits no longer than its timeout
    dropped = sum(counts.by_reason.values())
    assert counts.by_reason.get("queue_full", 0) > 0
    # Every span is either in the stuck export or counted as dropped.
    assert 10_000 - 10 <= dropped <= 10_000
    overflow = [r for r in lines.records if r["msg"] == "span queue full: dropping spans"]
    assert len(overflow) == 1
    # After shutdown a span end is still harmless, and counted.
    tracer.start_span("late").end()
    assert counts.by_reason.get("shutdown", 0) >= 1


def test_clean_shutdown_sends_everything_queued(receiver: Receiver) -> None:
    processor = _processor(receiver.url, flush_interval=60.0, batch_size=7, queue_size=1000)
    tracer = Tracer(processor=processor)
    names = {f"span-{i}" for i in range(50)}
    for name in sorted(names):
        tracer.start_span(name).end()
    processor.shutdown()
    spans = receiver.spans()
    assert {s["name"] for s in spans} == names
    assert max(len(json.loads(b)) for b in receiver.bodies) <= 7


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:.*multi-threaded.*:DeprecationWarning")  # 3.12+: we mean it
def test_forked_child_exports_its_own_spans(receiver: Receiver) -> None:
    processor = _processor(receiver.url, flush_interval=60.0)
    tracer = Tracer(processor=processor)
    tracer.start_span("parent-before-fork").end()  # queued, not yet sent
    pid = os.fork()
    if pid == 0:  # the child: exit without running pytest's teardown
        code = 1
        try:
            tracer.start_span("child-span").end()
            code = 0 if processor.flush(10) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    processor.shutdown()
    names = sorted(s["name"] for s in receiver.spans())
    assert names == ["child-span", "parent-before-fork"]  # the parent's span sent once
