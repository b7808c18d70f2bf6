"""The AMQP transport (aio-pika) against the real RabbitMQ that scripts/services starts.

Each test uses queues of its own (a random suffix), non-durable and expiring, so tests never see
each other's messages and leave nothing behind.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import shlex
import subprocess
import threading
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from kitobs import config, log
from kitobs.endpoint import context
from kitobs.kit import Kit
from kitobs.metrics import memory
from kitobs.tracing import Tracer, current_ids
from kitobs.tracing.memory import Recorder
from kitobs.tracing.propagation import B3Multi
from tests.support import servers

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]

amqp = servers.require_module("kitobs.transport.amqp", "the amqp extra (aio-pika)")
aio_pika = servers.require_module("aio_pika", "the amqp extra (aio-pika)")


def _url() -> str:
    return servers.require_env("KITOBSTEST_AMQP_URL")


def make_kit(
    spans: Recorder | None = None,
    out: io.StringIO | None = None,
    tracer: Tracer | None = None,
    **env: str,
) -> Kit:
    settings = config.load(
        env={
            "KITOBS_TRANSPORT_AMQP_URL": _url(),
            "KITOBS_TRANSPORT_AMQP_RECONNECT_INTERVAL": "0.2",
            **env,
        },
        search=False,
    )
    return Kit(
        settings=settings,
        logger=log.new(out or io.StringIO(), trace_context=current_ids),
        metrics=memory.Provider(),
        tracer=tracer or Tracer(processor=spans or Recorder()),
    )


def name(prefix: str) -> str:
    return f"kitobs.test.{prefix}.{uuid.uuid4().hex[:8]}"


QUEUE_ARGS = {"x-expires": 30_000}


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30))


def value(metrics: memory.Provider, family: str, **labels: str) -> float:
    """The sum of *family*'s series whose labels include *labels*."""
    return sum(
        metrics.value(family, **series)
        for series in metrics.series(family)
        if all(series.get(k) == v for k, v in labels.items())
    )


async def add(request: dict[str, int]) -> dict[str, int]:
    return {"v": request["a"] + request["b"]}


def test_request_reply_records_both_sides_in_one_trace() -> None:
    spans, out = Recorder(), io.StringIO()
    kit = make_kit(spans, out)
    queue = name("add")
    seen: dict[str, Any] = {}

    async def endpoint(request: dict[str, int]) -> dict[str, int]:
        ctx = context.current()
        seen["deadline"] = ctx.time_remaining()
        seen["ids"] = current_ids()
        return await add(request)

    async def test() -> None:
        connection = await amqp.connect(kit)
        subscriber = amqp.Subscriber(
            endpoint, queue=queue, kit=kit, durable=False, arguments=QUEUE_ARGS
        )
        await subscriber.start(connection)
        publisher = amqp.Publisher(queue, kit=kit, timeout=5.0)
        await publisher.start(connection)
        results = [await publisher({"a": i, "b": 1}) for i in range(3)]
        assert results == [{"v": 1}, {"v": 2}, {"v": 3}]
        await publisher.close()
        await subscriber.close()
        await connection.close()

    run(test)
    client = [s for s in spans.spans if s.kind.name == "CLIENT"]
    server = [s for s in spans.spans if s.kind.name == "SERVER"]
    assert len(client) == len(server) == 3
    for c, s in zip(client, server, strict=True):
        assert s.trace_id == c.trace_id
        assert s.parent_id == c.span_id
        assert s.attributes["messaging.system"] == "rabbitmq"
        assert s.attributes["messaging.destination.name"] == queue
        assert c.attributes["messaging.operation.name"] == "send"
    # The SERVER span was current while the endpoint ran, and the deadline came along.
    assert seen["ids"][0] == f"{server[-1].trace_id:032x}"
    assert 0 < seen["deadline"] <= 5.0
    metrics = kit.metrics
    assert isinstance(metrics, memory.Provider)
    assert value(metrics, "messaging_client_sent_messages_total", error_type="") == 3
    assert (
        value(
            metrics,
            "messaging_client_consumed_messages_total",
            messaging_destination_name=queue,
            messaging_operation_name="process",
        )
        == 3
    )
    assert value(metrics, "kitobs_messaging_settlements_total", settlement="ack") == 3
    assert f"transport=amqp queue={queue} settlement=ack" in out.getvalue()


def test_errors_reply_with_an_error_and_time_out() -> None:
    kit = make_kit()
    queue, slow = name("err"), name("slow")

    async def failing(request: Any) -> Any:
        raise KeyError("no such user")

    async def sleepy(request: Any) -> Any:
        await asyncio.sleep(0.5)
        return {}

    async def test() -> None:
        connection = await amqp.connect(kit)
        subs = [
            amqp.Subscriber(failing, queue=queue, kit=kit, durable=False, arguments=QUEUE_ARGS),
            amqp.Subscriber(sleepy, queue=slow, kit=kit, durable=False, arguments=QUEUE_ARGS),
        ]
        for sub in subs:
            await sub.start(connection)
        publisher = amqp.Publisher(queue, kit=kit)
        await publisher.start(connection)
        with pytest.raises(amqp.RemoteError) as caught:
            await publisher({})
        assert caught.value.error_type == "KeyError"
        assert "no such user" in str(caught.value)
        slow_pub = amqp.Publisher(slow, kit=kit, timeout=5.0)
        await slow_pub.start(connection)
        # The request context's deadline shortens the publisher's timeout.
        with context.scoped(timeout=0.2), pytest.raises(amqp.ReplyTimeout):
            await slow_pub({})
        with context.scoped(deadline=0.0), pytest.raises(context.DeadlineExceeded):
            await slow_pub({})
        for closing in (publisher, slow_pub, *subs):
            await closing.close()
        await connection.close()

    run(test)
    metrics = kit.metrics
    assert isinstance(metrics, memory.Provider)
    assert (
        value(
            metrics,
            "messaging_client_sent_messages_total",
            error_type="kitobs.transport.amqp.RemoteError",
        )
        == 1
    )
    assert (
        value(
            metrics,
            "messaging_client_sent_messages_total",
            error_type="kitobs.transport.amqp.ReplyTimeout",
        )
        == 1
    )
    assert value(metrics, "messaging_client_consumed_messages_total", error_type="KeyError") == 1


def test_unroutable_request_and_send_raise_and_are_counted() -> None:
    kit = make_kit()
    nobody = name("nobody")

    async def test() -> None:
        connection = await amqp.connect(kit)
        publisher = amqp.Publisher(nobody, kit=kit, timeout=2.0)
        await publisher.start(connection)
        with pytest.raises(amqp.Unroutable) as caught:
            await publisher({"a": 1})
        assert caught.value.destination == nobody
        with pytest.raises(amqp.Unroutable):
            await publisher.send({"a": 1})
        await publisher.close()
        await connection.close()

    run(test)
    metrics = kit.metrics
    assert isinstance(metrics, memory.Provider)
    assert value(metrics, "kitobs_messaging_returned_total", messaging_destination_name=nobody) == 2


def test_pubsub_with_b3_headers_and_a_consumer_span() -> None:
    spans = Recorder()
    kit = make_kit(tracer=Tracer(processor=spans, propagators=[B3Multi()]))
    queue = name("events")
    got: list[Any] = []
    done = asyncio.Event

    async def test() -> None:
        received = done()

        def on_event(request: Any) -> None:  # a sync endpoint
            got.append((request, context.current().metadata.get("x-b3-traceid")))
            received.set()

        connection = await amqp.connect(kit)
        subscriber = amqp.Subscriber(
            on_event, queue=queue, kit=kit, durable=False, arguments=QUEUE_ARGS
        )
        await subscriber.start(connection)
        publisher = amqp.Publisher(queue, kit=kit)
        await publisher.start(connection)
        await publisher.send({"order": 7})
        await asyncio.wait_for(received.wait(), 5)
        await publisher.close()
        await subscriber.close()
        await connection.close()

    run(test)
    producer = next(s for s in spans.spans if s.kind.name == "PRODUCER")
    consumer = next(s for s in spans.spans if s.kind.name == "CONSUMER")
    assert consumer.parent_id == producer.span_id
    assert got == [({"order": 7}, f"{producer.trace_id:032x}")]


def test_public_edge_links_instead_of_parenting() -> None:
    spans = Recorder()
    kit = make_kit(spans)
    edge = make_kit(tracer=Tracer(processor=spans, public_edge=True))
    queue = name("edge")

    async def test() -> None:
        connection = await amqp.connect(kit)
        subscriber = amqp.Subscriber(
            add, queue=queue, kit=edge, durable=False, arguments=QUEUE_ARGS
        )
        await subscriber.start(connection)
        publisher = amqp.Publisher(queue, kit=kit)
        await publisher.start(connection)
        assert await publisher({"a": 1, "b": 1}) == {"v": 2}
        await publisher.close()
        await subscriber.close()
        await connection.close()

    run(test)
    client = next(s for s in spans.spans if s.kind.name == "CLIENT")
    server = next(s for s in spans.spans if s.kind.name == "SERVER")
    assert server.trace_id != client.trace_id
    assert [link.context.span_id for link in server.links] == [client.span_id]


def test_poison_message_is_retried_a_bounded_number_of_times_then_dead_lettered() -> None:
    kit = make_kit()
    queue, dead = name("poison"), name("dlq")
    attempts: list[int] = []
    finals: list[tuple[str, str]] = []

    def poison(request: Any) -> None:
        attempts.append(request["n"])
        raise ValueError("cannot process")

    async def test() -> None:
        connection = await amqp.connect(kit)
        channel = await connection.channel()
        dlq = await channel.declare_queue(dead, durable=False, arguments=QUEUE_ARGS)
        subscriber = amqp.Subscriber(
            poison,
            queue=queue,
            kit=kit,
            durable=False,
            # Rejected messages go to the default exchange, routed to the dead-letter queue.
            arguments={
                **QUEUE_ARGS,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": dead,
            },
            max_redeliveries=2,
            finalizers=[lambda d: finals.append((d.settlement, type(d.error).__name__))],
        )
        await subscriber.start(connection)
        publisher = amqp.Publisher(queue, kit=kit)
        await publisher.start(connection)
        await publisher.send({"n": 1})
        message = None
        for _ in range(100):
            message = await dlq.get(no_ack=True, fail=False)
            if message is not None:
                break
            await asyncio.sleep(0.05)
        assert message is not None, "the poison message never reached the dead-letter queue"
        assert message.headers[amqp.REDELIVERIES_HEADER] == 2
        await publisher.close()
        await subscriber.close()
        await channel.close()
        await connection.close()

    run(test)
    assert attempts == [1, 1, 1]  # the first delivery and two redeliveries
    assert finals == [
        ("requeue", "ValueError"),
        ("requeue", "ValueError"),
        ("reject", "ValueError"),
    ]
    metrics = kit.metrics
    assert isinstance(metrics, memory.Provider)
    assert (
        value(metrics, "kitobs_messaging_dead_lettered_total", messaging_destination_name=queue)
        == 1
    )
    assert value(metrics, "kitobs_messaging_settlements_total", settlement="requeue") == 2
    assert value(metrics, "kitobs_messaging_settlements_total", settlement="reject") == 1


def _close_all_connections() -> None:
    ctl = servers.require_env("KITOBSTEST_RABBITMQCTL")
    subprocess.run(
        [*shlex.split(ctl), "close_all_connections", "kitobs test"],
        check=True,
        capture_output=True,
        timeout=30,
        env={**os.environ},
    )


@pytest.mark.slow
def test_connection_dropped_mid_load_errors_clearly_and_resumes() -> None:
    out = io.StringIO()
    kit = make_kit(out=out)
    queue = name("drop")
    outcomes: dict[str, int] = {}

    async def test() -> None:
        connection = await amqp.connect(kit)
        subscriber = amqp.Subscriber(add, queue=queue, kit=kit, durable=False, arguments=QUEUE_ARGS)
        await subscriber.start(connection)
        publisher = amqp.Publisher(queue, kit=kit, timeout=2.0)
        await publisher.start(connection)
        tasks_before = len(asyncio.all_tasks())
        stop = asyncio.Event()

        async def load() -> None:
            while not stop.is_set():
                try:
                    assert await publisher({"a": 1, "b": 2}) == {"v": 3}
                    outcomes["ok"] = outcomes.get("ok", 0) + 1
                except amqp.BrokerUnavailable:
                    outcomes["down"] = outcomes.get("down", 0) + 1
                    await asyncio.sleep(0.01)
                except amqp.ReplyTimeout:
                    outcomes["timeout"] = outcomes.get("timeout", 0) + 1

        workers = [asyncio.create_task(load()) for _ in range(4)]
        await asyncio.sleep(0.3)
        ok_before = outcomes.get("ok", 0)
        await asyncio.to_thread(_close_all_connections)
        # Wait until traffic flows again after the reconnect.
        for _ in range(200):
            await asyncio.sleep(0.05)
            if outcomes.get("down", 0) and outcomes.get("ok", 0) > ok_before + 20:
                break
        stop.set()
        await asyncio.gather(*workers)
        assert ok_before > 0
        # Consuming again after the reconnect, once: no consumer lost, none doubled. The robust
        # connection may still be swapping its underlying one: a channel is opened once it has.
        for _ in range(50):
            try:
                channel = await connection.channel()
                break
            except RuntimeError:  # aiormq: the old underlying connection is closed
                await asyncio.sleep(0.1)
        else:
            raise AssertionError("no channel on the reconnected connection within 5 s")
        declared = await channel.declare_queue(queue, passive=True)
        assert declared.declaration_result.consumer_count == 1
        await channel.close()
        await publisher.close()
        await subscriber.close()
        await connection.close()
        await asyncio.sleep(0)
        assert len(asyncio.all_tasks()) <= tasks_before

    run(test)
    assert outcomes.get("down", 0) > 0, outcomes
    metrics = kit.metrics
    assert isinstance(metrics, memory.Provider)
    assert value(metrics, "kitobs_messaging_reconnects_total") >= 1
    assert (
        value(
            metrics,
            "messaging_client_sent_messages_total",
            error_type="kitobs.transport.amqp.BrokerUnavailable",
        )
        == outcomes["down"]
    )
    assert value(metrics, "messaging_client_sent_messages_total", error_type="") == outcomes["ok"]
    assert "amqp connection re-established" in out.getvalue()
    assert "level=warn" in out.getvalue()


amqp_sync = servers.require_module("kitobs.transport.amqp_sync", "the amqp-sync extra (pika)")


def test_sync_request_reply_pubsub_and_errors_from_threads() -> None:
    spans = Recorder()
    kit = make_kit(spans)
    queue, events, nobody = name("sync.add"), name("sync.events"), name("sync.nobody")
    got: list[Any] = []
    received = threading.Event()

    def sync_add(request: dict[str, int]) -> dict[str, int]:
        if request["a"] < 0:
            raise ValueError("negative")
        return {"v": request["a"] + request["b"]}

    def on_event(request: Any) -> None:
        got.append(request)
        received.set()

    subscriber = amqp_sync.Subscriber(
        sync_add, queue=queue, kit=kit, durable=False, arguments=QUEUE_ARGS
    )
    listener = amqp_sync.Subscriber(
        on_event, queue=events, kit=kit, durable=False, arguments=QUEUE_ARGS
    )
    threads = [subscriber.start(), listener.start()]
    publisher = amqp_sync.Publisher(queue, kit=kit, timeout=5.0)
    results: dict[int, Any] = {}

    def worker(i: int) -> None:  # each thread gets a connection of its own
        results[i] = [publisher({"a": i, "b": j}) for j in range(3)]

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(10)
    assert results == {i: [{"v": i + j} for j in range(3)] for i in range(3)}
    with pytest.raises(amqp.RemoteError) as caught:
        publisher({"a": -1, "b": 0})
    assert caught.value.error_type == "ValueError"
    with context.scoped(deadline=0.0), pytest.raises(context.DeadlineExceeded):
        publisher({"a": 1, "b": 1})
    sender = amqp_sync.Publisher(events, kit=kit)
    sender.send({"order": 1})
    assert received.wait(5)
    lost = amqp_sync.Publisher(nobody, kit=kit)
    with pytest.raises(amqp.Unroutable):
        lost.send({})
    lost.close()
    for sub in (subscriber, listener):
        sub.stop()
    for t in threads:
        t.join(5)
        assert not t.is_alive()
    publisher.close()
    sender.close()
    assert got == [{"order": 1}]
    client = [s for s in spans.spans if s.kind.name == "CLIENT"]
    server = {s.parent_id: s for s in spans.spans if s.kind.name == "SERVER"}
    answered = [c for c in client if c.span_id in server]
    assert len(client) == 11  # 9 answered, 1 error reply, 1 past its deadline (not sent)
    assert len(answered) == 10
    assert all(server[c.span_id].trace_id == c.trace_id for c in answered)
    metrics = kit.metrics
    assert isinstance(metrics, memory.Provider)
    assert value(metrics, "kitobs_messaging_returned_total", messaging_destination_name=nobody) == 1
    assert value(metrics, "messaging_client_consumed_messages_total", error_type="ValueError") == 1


@pytest.mark.slow
def test_sync_forms_reconnect_after_the_connection_drops() -> None:
    kit = make_kit()
    queue = name("sync.drop")
    subscriber = amqp_sync.Subscriber(
        lambda request: {"v": request["a"] + request["b"]},
        queue=queue,
        kit=kit,
        durable=False,
        arguments=QUEUE_ARGS,
    )
    thread = subscriber.start()
    publisher = amqp_sync.Publisher(queue, kit=kit, timeout=2.0)
    assert publisher({"a": 1, "b": 1}) == {"v": 2}
    _close_all_connections()
    # The publisher finds its connection gone: a clear error, and the next call reconnects.
    with pytest.raises(amqp.BrokerUnavailable):
        publisher({"a": 1, "b": 2})
    answers: list[Any] = []
    for _ in range(100):  # until the subscriber consumes again
        try:
            answers.append(publisher({"a": 2, "b": 2}))
            break
        except amqp.ReplyTimeout:  # the request waits in the queue until it consumes again
            continue
    assert answers == [{"v": 4}]
    subscriber.stop()
    thread.join(5)
    assert not thread.is_alive()
    publisher.close()
    metrics = kit.metrics
    assert isinstance(metrics, memory.Provider)
    assert value(metrics, "kitobs_messaging_reconnects_total") == 2  # publisher and subscriber
    assert (
        value(
            metrics,
            "messaging_client_sent_messages_total",
            error_type="kitobs.transport.amqp.BrokerUnavailable",
        )
        == 1
    )


def test_the_docs_example_prints_what_the_page_says(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    _url()
    monkeypatch.chdir(tmp_path)  # no kitobs.toml
    for variable in [n for n in os.environ if n.startswith("KITOBS_")]:
        monkeypatch.delenv(variable)
    doc = (REPO / "docs" / "amqp.md").read_text()
    [(code, printed)] = re.findall(
        r"```python\n(.*?)```\n\nprints\n\n```\n(.*?)```", doc, flags=re.S
    )
    exec(compile(code, "docs/amqp.md", "exec"), {"__name__": "docs_amqp"})
    assert capsys.readouterr().out == printed


def test_hooks_reply_headers_and_finalizers_run_in_order() -> None:
    kit = make_kit()
    queue = name("hooks")
    calls: list[str] = []

    def encode(response: Any) -> tuple[bytes, dict[str, str]]:
        calls.append("encode")
        return amqp.encode_json(response), {"x-served-by": "hooks"}

    async def test() -> None:
        connection = await amqp.connect(kit)
        subscriber = amqp.Subscriber(
            add,
            amqp.decode_json,
            encode,
            queue=queue,
            kit=kit,
            durable=False,
            arguments=QUEUE_ARGS,
            before=[lambda message: calls.append(f"before {message.headers['x-tenant']}")],
            after=[lambda message, response: calls.append(f"after {response['v']}")],
            finalizers=[lambda delivery: calls.append(f"finalizer {delivery.settlement}")],
        )
        await subscriber.start(connection)

        def tenant(message: Any) -> None:
            message.headers["x-tenant"] = "acme"

        replies: list[Any] = []
        publisher = amqp.Publisher(
            queue, kit=kit, before=[tenant], after=[lambda reply: replies.append(reply.headers)]
        )
        await publisher.start(connection)
        assert await publisher({"a": 2, "b": 3}) == {"v": 5}
        assert replies[0]["x-served-by"] == "hooks"
        not_started = amqp.Publisher(queue, kit=kit)
        with pytest.raises(amqp.BrokerUnavailable, match="not started"):
            await not_started({"a": 1, "b": 1})
        await publisher.close()
        await subscriber.close()
        await connection.close()

    run(test)
    assert calls == ["before acme", "after 5", "encode", "finalizer ack"]


def test_sync_poison_message_is_dead_lettered_after_its_redeliveries() -> None:
    import pika

    kit = make_kit()
    queue, dead = name("sync.poison"), name("sync.dlq")
    attempts: list[int] = []
    gave_up = threading.Event()

    def poison(request: Any) -> None:
        attempts.append(request["n"])
        raise ValueError("cannot process")

    def finalizer(delivery: Any) -> None:
        if delivery.settlement == "reject":
            gave_up.set()

    connection = pika.BlockingConnection(pika.URLParameters(_url()))
    channel = connection.channel()
    channel.queue_declare(dead, durable=False, arguments=QUEUE_ARGS)
    subscriber = amqp_sync.Subscriber(
        poison,
        queue=queue,
        kit=kit,
        durable=False,
        arguments={**QUEUE_ARGS, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead},
        max_redeliveries=1,
        finalizers=[finalizer],
    )
    thread = subscriber.start()
    sender = amqp_sync.Publisher(queue, kit=kit)
    sender.send({"n": 5})
    assert gave_up.wait(5)
    subscriber.stop()
    thread.join(5)
    sender.close()
    for _ in range(100):  # dead-lettering is asynchronous in the broker
        method, properties, body = channel.basic_get(dead, auto_ack=True)
        if method is not None:
            break
        connection.sleep(0.05)
    connection.close()
    assert method is not None, "the poison message never reached the dead-letter queue"
    assert body == b'{"n":5}'
    assert properties.headers[amqp.REDELIVERIES_HEADER] == 1
    assert attempts == [5, 5]
    metrics = kit.metrics
    assert isinstance(metrics, memory.Provider)
    assert value(metrics, "kitobs_messaging_dead_lettered_total") == 1
    assert value(metrics, "kitobs_messaging_settlements_total", settlement="requeue") == 1


class BrokenPropagator:
    """A propagator that always fails, to prove a tracing failure never reaches the message."""

    def inject(self, carrier: Any, context: Any) -> None:
        raise RuntimeError("inject failed")

    def extract(self, carrier: Any, context: Any) -> Any:
        raise RuntimeError("extract failed")


def test_a_failing_tracer_never_reaches_the_message() -> None:
    from kitobs.contract import TELEMETRY_DROPPED

    kit = make_kit(tracer=Tracer(processor=Recorder(), propagators=[BrokenPropagator()]))
    queue = name("broken")

    async def test() -> None:
        connection = await amqp.connect(kit)
        subscriber = amqp.Subscriber(add, queue=queue, kit=kit, durable=False, arguments=QUEUE_ARGS)
        await subscriber.start(connection)
        publisher = amqp.Publisher(queue, kit=kit)
        await publisher.start(connection)
        assert await publisher({"a": 1, "b": 1}) == {"v": 2}
        await publisher.close()
        await subscriber.close()
        await connection.close()

    run(test)
    metrics = kit.metrics
    assert isinstance(metrics, memory.Provider)
    metrics.assert_counter(TELEMETRY_DROPPED.name, 2.0, signal="spans", reason="amqp_error")
    metrics.assert_counter(TELEMETRY_DROPPED.name, 0.0, signal="metrics", reason="amqp_error")
    assert value(metrics, "messaging_client_consumed_messages_total", error_type="") == 1
