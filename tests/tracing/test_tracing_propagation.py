"""Propagation: each format against OpenTelemetry's own propagators, and across two processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import baggage
from opentelemetry import trace as otel_trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context.context import Context
from opentelemetry.propagators.b3 import B3MultiFormat, B3SingleFormat
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from kitobs.errors import ConfigError
from kitobs.tracing import Tracer, propagation, sampler

REPO = Path(__file__).resolve().parents[2]

FORMATS = {
    "tracecontext": (propagation.TraceContext(), TraceContextTextMapPropagator()),
    "b3": (propagation.B3Single(), B3SingleFormat()),
    "b3multi": (propagation.B3Multi(), B3MultiFormat()),
}


@pytest.mark.parametrize("sampled", [True, False])
@pytest.mark.parametrize("fmt", FORMATS)
def test_ours_to_opentelemetry_and_back(fmt: str, sampled: bool) -> None:
    ours, theirs = FORMATS[fmt]
    tracer = Tracer(
        sampler=sampler.AlwaysOn() if sampled else sampler.AlwaysOff(), propagators=[ours]
    )
    with tracer.span("client") as span:
        headers: dict[str, str] = {}
        tracer.inject(headers)
    ctx = theirs.extract(headers)
    remote = otel_trace.get_current_span(ctx).get_span_context()
    assert (remote.trace_id, remote.span_id) == (span.trace_id, span.span_id)
    assert remote.trace_flags.sampled is sampled

    written: dict[str, str] = {}
    theirs.inject(written, context=ctx)
    back = ours.extract(written, Context())
    again = otel_trace.get_current_span(back).get_span_context()
    assert (again.trace_id, again.span_id, again.trace_flags.sampled) == (
        span.trace_id,
        span.span_id,
        sampled,
    )
    assert again.is_remote


def test_tracestate_and_baggage_round_trip() -> None:
    headers = {
        "TraceParent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "TraceState": "vendor=abc,other=1",
        "Baggage": "user=alice%20b,tenant=t1;prop=1",
    }
    tracer = Tracer()
    ctx = tracer.extract(headers)
    assert baggage.get_all(ctx) == {"user": "alice b", "tenant": "t1"}
    with tracer.span("server", context=ctx) as span:
        assert baggage.get_baggage("tenant") == "t1"  # baggage is current with the span
        out: dict[str, str] = {}
        tracer.inject(out)
    assert span.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert out["tracestate"] == "vendor=abc,other=1"
    # OpenTelemetry's baggage propagator reads what we wrote.
    assert baggage.get_all(W3CBaggagePropagator().extract(out)) == {
        "user": "alice b",
        "tenant": "t1",
    }


@pytest.mark.parametrize(
    "headers",
    [
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331"},
        {"traceparent": "00-00000000000000000000000000000000-b7ad6b7169203331-01"},
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01"},
        {"traceparent": "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        {"traceparent": "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01"},
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra"},
        {"b3": "garbage"},
        {"b3": "0"},
        {"b3": "0af7651916cd43dd8448eb211c80319c-xyz-1"},
        {"X-B3-TraceId": "0af76519", "X-B3-SpanId": "b7ad6b7169203331"},
    ],
)
def test_malformed_headers_are_ignored(headers: dict[str, str]) -> None:
    tracer = Tracer(propagators=propagation.from_names(["tracecontext", "b3"]))
    ctx = tracer.extract(headers)
    assert not otel_trace.get_current_span(ctx).get_span_context().is_valid
    with tracer.span("fresh", context=ctx) as span:
        assert span.parent_id == 0


def test_future_traceparent_version_is_read() -> None:
    ctx = propagation.TraceContext().extract(
        {"traceparent": "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-later"},
        Context(),
    )
    assert otel_trace.get_current_span(ctx).get_span_context().span_id == 0xB7AD6B7169203331


def test_b3_short_trace_id_and_debug_flag() -> None:
    ctx = propagation.B3Multi().extract(
        {"x-b3-traceid": "a3ce929d0e0e4736", "x-b3-spanid": "00f067aa0ba902b7", "x-b3-flags": "1"},
        Context(),
    )
    remote = otel_trace.get_current_span(ctx).get_span_context()
    assert remote.trace_id == 0xA3CE929D0E0E4736
    assert remote.trace_flags.sampled


def test_from_names_errors() -> None:
    assert propagation.from_names(["none"]) == ()
    with pytest.raises(ConfigError, match="propagators"):
        propagation.from_names(["jaeger"])
    with pytest.raises(ConfigError, match="none"):
        propagation.from_names(["none", "b3"])


_SERVER = textwrap.dedent(
    """
    import json, sys
    from http.server import BaseHTTPRequestHandler, HTTPServer
    from kitobs.tracing import Tracer, SpanKind, propagation, current_ids

    tracer = Tracer(propagators=propagation.from_names(sys.argv[1].split(",")))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            ctx = tracer.extract(self.headers)
            with tracer.span("GET /", kind=SpanKind.SERVER, context=ctx) as span:
                body = json.dumps({
                    "trace_id": f"{span.trace_id:032x}",
                    "parent_id": f"{span.parent_id:016x}",
                    "sampled": span.sampled,
                    "log_ids": list(current_ids()),
                }).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.handle_request()
    server.handle_request()
    server.server_close()
    """
)


@pytest.fixture(params=["tracecontext", "b3", "b3multi"])
def remote_server(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    fmt = request.param
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER, fmt],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield fmt, f"http://127.0.0.1:{port}/"
    finally:
        proc.wait(10) if proc.poll() is None else None
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_propagation_across_two_processes(remote_server: tuple[str, str]) -> None:
    fmt, url = remote_server
    for sampled in (True, False):
        tracer = Tracer(
            sampler=sampler.AlwaysOn() if sampled else sampler.AlwaysOff(),
            propagators=propagation.from_names([fmt]),
        )
        with tracer.span("call", kind=otel_trace.SpanKind.CLIENT) as client:
            headers: dict[str, str] = {}
            tracer.inject(headers)
            request = urllib.request.Request(url, headers=headers)
            with urllib.request.urlopen(request, timeout=10) as response:
                seen = json.loads(response.read())
        assert seen["trace_id"] == f"{client.trace_id:032x}"
        assert seen["parent_id"] == f"{client.span_id:016x}"
        assert seen["sampled"] is sampled
        assert seen["log_ids"][0] == seen["trace_id"]
