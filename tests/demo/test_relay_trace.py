"""One trace across every hop: HTTP -> endpoint -> NATS -> worker -> AMQP -> worker.

The demo's `/relay` runs behind kitobs's WSGI server under a real wsgiref server, reached by a
real httpx client; its worker is reached over the real nats-server and passes the request on
over the real RabbitMQ that scripts/services starts. Every span the call makes is exported to
one recorder, and they must form one trace: each hop's server span the child of the client
span that sent it, each endpoint's span the child of its server span.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import httpx
import pytest
from opentelemetry.trace import SpanKind

from kitobs import config
from kitobs.demo.http import build_app
from kitobs.demo.messaging import Relay
from kitobs.kit import Kit
from kitobs.log import nop
from kitobs.metrics import memory as memory_metrics
from kitobs.tracing import Span, Tracer
from kitobs.tracing.memory import Recorder
from tests.support.servers import require_env

pytestmark = pytest.mark.integration


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def relayed() -> Iterator[tuple[str, Recorder]]:
    spans = Recorder()
    kit = Kit(
        config.load(env={}, search=False),
        logger=nop(),
        metrics=memory_metrics.Provider(),
        tracer=Tracer(processor=spans),
    )
    relay = Relay(
        kit, require_env("KITOBSTEST_NATS_URL"), amqp_url=require_env("KITOBSTEST_AMQP_URL")
    )
    relay.start()
    server: WSGIServer = make_server(
        "127.0.0.1", 0, build_app(kit, relay=relay), handler_class=_Quiet
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", spans
    finally:
        server.shutdown()
        server.server_close()
        relay.close()
        kit.close()


def _wait_for(spans: Recorder, count: int) -> list[Span]:
    deadline = time.monotonic() + 10
    while len(spans.spans) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return list(spans.spans)


def test_one_relay_request_is_one_trace_through_nats_and_amqp(
    relayed: tuple[str, Recorder],
) -> None:
    base, spans = relayed
    response = httpx.get(f"{base}/relay", params={"a": 2, "b": 40}, timeout=10)
    assert response.json() == {"value": 42}
    # HTTP server, relay, NATS client + server, relay_worker, AMQP client + server, sum_worker.
    got = _wait_for(spans, 8)
    # The HTTP request's span is the root; a message another run left in the shared queue would
    # make spans of its own trace, so the chain is followed inside the root's trace.
    [root] = [s for s in got if s.parent_id == 0 and s.name.startswith("GET")]
    traced = [s for s in got if s.trace_id == root.trace_id]
    by_id = {span.span_id: span for span in traced}

    def parent(span: Span) -> Span:
        return by_id[span.parent_id]

    assert root.kind is SpanKind.SERVER
    [sum_worker] = [s for s in traced if s.name == "sum_worker"]
    chain = [sum_worker]
    while chain[-1] is not root:
        chain.append(parent(chain[-1]))
    kinds = [span.kind for span in reversed(chain)]
    assert kinds == [
        SpanKind.SERVER,  # HTTP
        SpanKind.INTERNAL,  # the relay endpoint
        SpanKind.CLIENT,  # NATS request
        SpanKind.SERVER,  # NATS subscriber
        SpanKind.INTERNAL,  # relay_worker
        SpanKind.CLIENT,  # AMQP request
        SpanKind.SERVER,  # AMQP subscriber
        SpanKind.INTERNAL,  # sum_worker
    ], [(s.name, s.kind) for s in reversed(chain)]
    systems = [s.attributes.get("messaging.system") for s in reversed(chain) if s.attributes]
    assert "nats" in systems
    assert "rabbitmq" in systems
