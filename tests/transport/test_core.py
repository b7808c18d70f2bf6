"""kitobs.transport.core: one call's span from carried context, duration, line, and drops.

Driven directly with kitobs' own provider, tracer and logger, as a new transport would use it.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from kitobs import log
from kitobs.contract import (
    HTTP_SERVER_REQUEST_DURATION,
    RPC_CLIENT_CALL_DURATION,
    RPC_SERVER_CALL_DURATION,
    TELEMETRY_DROPPED,
)
from kitobs.errors import ConfigError
from kitobs.metrics import memory
from kitobs.tracing import Tracer, current_ids
from kitobs.tracing.memory import Recorder
from kitobs.transport import http
from kitobs.transport.core import Instruments, exception_type

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
SERVER = RPC_SERVER_CALL_DURATION.name


def _lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_server_call_continues_the_carried_trace_and_records_inside_its_span() -> None:
    metrics, spans, out = memory.Provider(), Recorder(), io.StringIO()
    inst = Instruments(
        metrics,
        RPC_SERVER_CALL_DURATION,
        "nats",
        tracer=Tracer(processor=spans),
        logger=log.new(out, format="json", trace_context=current_ids),
        log_keys=("subject", "status"),
    )
    call = inst.start(
        "orders.created",
        {"messaging.system": "nats"},
        carrier={"traceparent": f"00-{TRACE}-{PARENT}-01"},
    )
    inside = current_ids()  # the span is current while the handler runs
    inst.finish(call, ("nats", "orders.created", "OK", ""), ("orders.created", "OK"))
    assert current_ids() is None  # and no longer once recorded
    [span] = spans.spans
    assert span.kind is SpanKind.SERVER
    assert (f"{span.trace_id:032x}", f"{span.parent_id:016x}") == (TRACE, PARENT)
    assert inside is not None
    assert inside[1] == f"{span.span_id:016x}"
    assert span.attributes["messaging.system"] == "nats"
    [line] = _lines(out)
    assert {k: line[k] for k in ("level", "transport", "subject", "status", "trace_id")} == {
        "level": "info",
        "transport": "nats",
        "subject": "orders.created",
        "status": "OK",
        "trace_id": TRACE,
    }
    assert line["span_id"] == inside[1]
    metrics.assert_histogram(
        SERVER,
        count=1,
        rpc_system_name="nats",
        rpc_method="orders.created",
        rpc_status_code="OK",
        error_type="",
    )


def test_a_failed_call_is_an_error_line_and_an_error_span() -> None:
    metrics, spans, out = memory.Provider(), Recorder(), io.StringIO()
    inst = Instruments(
        metrics,
        RPC_SERVER_CALL_DURATION,
        "nats",
        tracer=Tracer(processor=spans),
        logger=log.new(out, format="json"),
        log_keys=("subject",),
    )
    call = inst.start("orders.created")
    exc = KeyError("sku")
    inst.finish(
        call,
        ("nats", "orders.created", "ERROR", exception_type(exc)),
        ("orders.created",),
        True,
        exception_type(exc),
        exc,
        {"error.type": "KeyError"},
        "process orders.created",
    )
    [line] = _lines(out)
    assert (line["level"], line["error"]) == ("error", "KeyError")
    [span] = spans.spans
    assert span.name == "process orders.created"
    assert span.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "KeyError"
    assert [event[0] for event in span.events or ()] == ["exception"]


def test_a_client_call_injects_its_own_span() -> None:
    spans = Recorder()
    inst = Instruments(
        memory.Provider(), RPC_CLIENT_CALL_DURATION, "nats", kind="client",
        tracer=Tracer(processor=spans),
    )  # fmt: skip
    headers: dict[str, str] = {}
    call = inst.start("orders.create", inject=headers, current=False)
    assert current_ids() is None  # current=False: the caller's context is untouched
    inst.finish(call, ("nats", "orders.create", "OK", ""))
    [span] = spans.spans
    assert span.kind is SpanKind.CLIENT
    assert headers["traceparent"].split("-")[1:3] == [
        f"{span.trace_id:032x}",
        f"{span.span_id:016x}",
    ]


class _Failing:
    """A logger, tracer and histogram child that fail on every use."""

    def log(self, *keyvals: object) -> None:
        raise OSError("disk full")

    def start_span(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("tracer broken")

    def extract(self, *args: Any) -> Any:
        raise RuntimeError("tracer broken")

    def inject(self, *args: Any) -> None:
        raise RuntimeError("tracer broken")


def test_recording_failures_are_counted_not_raised() -> None:
    metrics = memory.Provider()
    failing = _Failing()
    inst = Instruments(
        metrics, RPC_SERVER_CALL_DURATION, "nats", tracer=failing, logger=failing,
        log_keys=("subject",),
    )  # fmt: skip
    call = inst.start("orders.created", carrier={})
    assert call.span is None
    # Too few label values: the histogram refuses them, which is counted too.
    inst.finish(call, ("nats",), ("orders.created",))
    for signal in ("spans", "metrics", "logs"):
        metrics.assert_counter(TELEMETRY_DROPPED.name, 1.0, signal=signal, reason="nats_error")


def test_http_recording_failures_are_counted() -> None:
    metrics = memory.Provider()
    inst = http.ServerInstruments(metrics, None, _Failing())  # type: ignore[arg-type]
    call = inst.start("GET", "http", {})
    inst.finish(call, "/users/{id}", 200, None)
    metrics.assert_counter(TELEMETRY_DROPPED.name, 1.0, signal="logs", reason="http_error")
    metrics.assert_histogram(
        HTTP_SERVER_REQUEST_DURATION.name,
        count=1,
        http_request_method="GET",
        http_route="/users/{id}",
        http_response_status_code="200",
        url_scheme="http",
        error_type="",
    )


def test_an_unknown_span_kind_is_refused_at_construction() -> None:
    with pytest.raises(ConfigError, match="span kind"):
        Instruments(memory.Provider(), RPC_SERVER_CALL_DURATION, "nats", kind="sever")


def test_the_writing_a_transport_example_runs() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "transports.md").read_text()
    section = text[text.index("## Writing a transport") :]
    block = section.split("```python\n", 1)[1].split("```", 1)[0]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(block, "docs/transports.md", "exec"), {})  # its own asserts check the trace
    assert "transport=memq subject=orders.create status=OK" in printed.getvalue()
