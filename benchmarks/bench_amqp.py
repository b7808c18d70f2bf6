"""AMQP request/reply: kitobs's instrumented Subscriber + Publisher against bare aio-pika.

Run: ``python benchmarks/bench_amqp.py [--quick] [--url amqp://...]`` with a RabbitMQ on
loopback (default: ``$KITOBSTEST_AMQP_URL``, as ``scripts/services up`` exports it). Both sides
do the same work in one process over one connection: a consumer on a queue of its own that
decodes JSON, calls an async endpoint and publishes the reply to ``reply_to``, and a publisher
(publisher confirms on, ``mandatory``) using direct reply-to and a correlation-id map with one
reply consumer. kitobs adds, per round trip, a CLIENT and a SERVER span (sampled, propagated in
the headers), the two duration histograms, the sent/consumed/settlement counters and the
subscriber's access line (to a buffered file), on a Kit with Prometheus metrics.

Sequential round trips are timed in interleaved rounds (bare, kitobs, bare, ...), on the wall
clock (what a caller waits for) and on the process's CPU time. The broker's part of a round
trip is the same on both sides, so what kitobs adds is CPU in this process: the median of the
per-round CPU differences is the added cost, printed with its share of a bare round trip (wall).
Goal: at most 10 %. On a busy machine both carry the other processes' noise (cold caches, a
broker competing for the same cores), so the records of one round trip are also timed alone, in
a warm loop without the broker: the floor of what kitobs adds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from typing import Any

import aio_pika

from kitobs import config
from kitobs.kit import Kit
from kitobs.transport import amqp

GOAL = 0.10


async def add(request: dict[str, int]) -> dict[str, int]:
    return {"v": request["a"] + request["b"]}


class BareRPC:
    """Request/reply the way one writes it with aio-pika alone (same confirms, same codec)."""

    def __init__(self, connection: Any, queue: str) -> None:
        self.connection = connection
        self.queue = queue
        self.pending: dict[str, asyncio.Future[Any]] = {}

    async def start(self) -> None:
        self.server_channel = await self.connection.channel(publisher_confirms=True)
        await self.server_channel.set_qos(prefetch_count=32)
        queue = await self.server_channel.declare_queue(
            self.queue, durable=False, arguments={"x-expires": 60_000}
        )
        await queue.consume(self.serve)
        self.channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        replies = await self.channel.get_queue(amqp.DIRECT_REPLY_TO, ensure=False)
        await replies.consume(self.on_reply, no_ack=True)

    async def serve(self, message: Any) -> None:
        response = await add(json.loads(message.body))
        await self.server_channel.default_exchange.publish(
            aio_pika.Message(
                json.dumps(response, separators=(",", ":")).encode(),
                correlation_id=message.correlation_id,
                content_type="application/json",
            ),
            message.reply_to,
            mandatory=False,
        )
        await message.ack()

    async def on_reply(self, message: Any) -> None:
        future = self.pending.pop(message.correlation_id or "", None)
        if future is not None and not future.done():
            future.set_result(message)

    async def __call__(self, request: Any) -> Any:
        correlation_id = uuid.uuid4().hex
        future = asyncio.get_running_loop().create_future()
        self.pending[correlation_id] = future
        await self.channel.default_exchange.publish(
            aio_pika.Message(
                json.dumps(request, separators=(",", ":")).encode(),
                content_type="application/json",
                correlation_id=correlation_id,
                reply_to=amqp.DIRECT_REPLY_TO,
                message_id=uuid.uuid4().hex,
                expiration=10.0,
            ),
            self.queue,
            mandatory=True,
        )
        reply = await asyncio.wait_for(future, 10.0)
        return json.loads(reply.body)

    async def close(self) -> None:
        await self.channel.close()
        await self.server_channel.close()


async def rounds(
    calls: dict[str, Any], number: int, repeats: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    times: dict[str, list[float]] = {name: [] for name in calls}
    cpu: dict[str, list[float]] = {name: [] for name in calls}
    request = {"a": 1, "b": 2}
    for call in calls.values():  # warm up
        for _ in range(max(20, number // 10)):
            assert await call(request) == {"v": 3}
    for _ in range(repeats):
        for name, call in calls.items():
            began, began_cpu = time.perf_counter(), time.process_time()
            for _ in range(number):
                await call(request)
            cpu[name].append((time.process_time() - began_cpu) / number)
            times[name].append((time.perf_counter() - began) / number)
    return times, cpu


def instrumentation_alone(kit: Kit, number: int) -> float:
    """The records of one round trip, both sides, without a broker: CPU microseconds.

    What `Publisher` and `Subscriber` add per request: the CLIENT span (context injected into
    the headers), the SERVER span (parent extracted, attributes), the request context, the
    settlement, consumed and sent counters, both duration histograms and the access line.
    """
    from kitobs.endpoint import context

    server, client = amqp.Recorder(kit, "server"), amqp.Recorder(kit, "client")
    process, send = server.kinds["server"], client.kinds["client"]
    system = amqp.SYSTEM
    attributes = {
        "messaging.system": system,
        "messaging.operation.name": "process",
        "messaging.destination.name": "q",
        "messaging.message.id": "m",
        "messaging.message.conversation_id": "c",
    }

    def one() -> None:
        headers: dict[str, str] = {}
        call = send.start("send q", None, inject=headers, current=False)
        carried = amqp.text_headers(headers)
        served = process.start("process q", attributes, carrier=carried)
        token = context.attach(
            context.from_fields(
                (None, context.Cancellation(), context.Metadata(carried), context.NO_VALUES)
            )
        )
        context.detach(token)
        server.count("settlements", system, "q", "ack")
        process.finish(served, (system, "process", "q", ""), ("q", "ack"))
        server.count("consumed", system, "process", "q", "")
        send.finish(call, (system, "send", "q", ""), None, False, "", None, attributes)
        client.count("sent", system, "send", "q", "")

    for _ in range(max(100, number // 10)):
        one()
    began = time.process_time()
    for _ in range(number):
        one()
    return (time.process_time() - began) / number * 1e6


async def main(url: str, number: int, repeats: int) -> None:
    log_file = tempfile.NamedTemporaryFile(suffix=".log", delete=False)  # noqa: SIM115
    log_file.close()
    settings = config.load(
        env={
            "KITOBS_TRANSPORT_AMQP_URL": url,
            "KITOBS_LOG_OUTPUT": log_file.name,
            "KITOBS_METRICS_PROMETHEUS_LISTEN": "",
        },
        search=False,
    )
    kit = Kit.from_settings(settings)
    connection = await amqp.connect(kit)
    suffix = uuid.uuid4().hex[:8]
    bare = BareRPC(connection, f"kitobs.bench.bare.{suffix}")
    await bare.start()
    subscriber = amqp.Subscriber(
        add,
        queue=f"kitobs.bench.kitobs.{suffix}",
        kit=kit,
        durable=False,
        arguments={"x-expires": 60_000},
    )
    await subscriber.start(connection)
    publisher = amqp.Publisher(subscriber.queue, kit=kit)
    await publisher.start(connection)
    try:
        times, cpu = await rounds({"bare aio-pika": bare, "kitobs": publisher}, number, repeats)
    finally:
        await publisher.close()
        await subscriber.close()
        await bare.close()
        await connection.close()
    bare_us = statistics.median(times["bare aio-pika"]) * 1e6
    kitobs_us = statistics.median(times["kitobs"]) * 1e6
    bare_cpu = statistics.median(cpu["bare aio-pika"]) * 1e6
    kitobs_cpu = statistics.median(cpu["kitobs"]) * 1e6
    print(f"request/reply round trips: {number} x {repeats} rounds, sequential, loopback")
    print(f"bare aio-pika   {bare_us:9.1f} us/round trip wall  {bare_cpu:9.1f} us process CPU")
    print(f"kitobs          {kitobs_us:9.1f} us/round trip wall  {kitobs_cpu:9.1f} us process CPU")
    # The broker's share of a round trip is the same on both sides; what kitobs adds is work in
    # this process, so the CPU difference is its cost. The wall difference is printed too, but
    # on a shared machine it also carries the broker's and other processes' noise.
    # Paired by round (each kitobs round right after its bare one), so load drifting across the
    # run cancels out of the difference.
    added = statistics.median(
        (k - b) * 1e6 for k, b in zip(cpu["kitobs"], cpu["bare aio-pika"], strict=True)
    )
    ratio = added / bare_us
    print(f"wall: kitobs added {kitobs_us - bare_us:.1f} us per round trip")
    alone = instrumentation_alone(kit, number * 10)
    print(
        f"instrumentation alone (both sides' records, no broker, warm loop): {alone:.1f} us "
        f"= {alone / bare_us * 100:.1f}% of a bare round trip"
    )
    print(
        f"ratio: kitobs added {added:.1f} us of CPU = {ratio * 100:.1f}% of a bare round trip "
        f"(goal <= {GOAL * 100:.0f}%: {'met' if ratio <= GOAL else 'NOT met'})"
    )
    kit.close()
    os.unlink(log_file.name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=os.environ.get("KITOBSTEST_AMQP_URL", ""))
    parser.add_argument("--quick", action="store_true", help="a short run, for the smoke test")
    parser.add_argument("--number", type=int, default=200, help="round trips per round")
    parser.add_argument("--repeats", type=int, default=21, help="rounds per side")
    args = parser.parse_args()
    if not args.url:
        sys.exit("no broker: pass --url or set KITOBSTEST_AMQP_URL (scripts/services up)")
    if args.quick:
        args.number, args.repeats = 50, 2
    asyncio.run(main(args.url, args.number, args.repeats))
