"""The demo's message hops: ``/relay`` sums over NATS (and AMQP), when given a broker's URL.

The HTTP endpoint ``/relay?a=1&b=2`` calls a `kitobs.transport.nats.Publisher` on the subject
``demo.relay``; a `kitobs.transport.nats.Subscriber` in the same process (the "worker") serves
it. Given an AMQP URL too, the worker passes the request on with a `kitobs.transport.amqp`
Publisher to the queue ``demo.sum``, served by an AMQP Subscriber with the demo's ``sum``
endpoint; without one, the worker sums itself. One request therefore shows one trace through
the HTTP server span, the endpoint's span, the NATS CLIENT and SERVER spans and the AMQP ones,
and the messaging row of the dashboards moves. NATS is asyncio only and the demo's HTTP server runs
threads: the NATS side runs on an event loop of its own thread, and each call is handed to it
with the caller's context (so the trace continues) and waited for with a timeout.

Without ``--nats`` (the embedded defaults) nothing here runs and ``/relay`` is not served.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import threading
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from kitobs.demo.service import IntRequest, Response, make_endpoints
from kitobs.endpoint.instrument import instrumenting

if TYPE_CHECKING:
    from kitobs.kit import Kit

__all__ = ["QUEUE", "Relay", "SUBJECT"]

#: The subject the worker serves.
SUBJECT = "demo.relay"
#: The AMQP queue the worker passes requests on to, when the demo has an AMQP URL.
QUEUE = "demo.sum"


class Relay:
    """Relay is the NATS side of the demo: the worker and the publisher ``/relay`` calls.

    `start` connects (raising `ConnectionError` when the server cannot be reached) and
    subscribes; `call` sends one request and waits for the worker's reply; `close` drains and
    stops the loop.
    """

    def __init__(
        self, kit: Kit, url: str, timeout: float = 2.0, amqp_url: str | None = None
    ) -> None:
        self._kit = kit
        self._url = url
        self._amqp_url = amqp_url
        self._amqp: Any = None
        self._amqp_parts: list[Any] = []
        self._timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="kitobs-demo-nats", daemon=True
        )
        self._nc: Any = None
        self._publisher: Any = None

    def start(self) -> None:
        """start connects to NATS and serves the worker."""
        self._thread.start()
        try:
            self._submit(self._start(), None).result(timeout=10)
        except Exception as err:
            self.close()
            raise ConnectionError(f"cannot reach NATS at {self._url}: {err}") from err

    async def _start(self) -> None:
        from kitobs.transport import nats as knats

        kit = self._kit
        self._nc = await knats.connect(kit, self._url)
        worker: Any = instrumenting(kit, name="relay_worker")(_sum_from_json)
        if self._amqp_url is not None:
            worker = instrumenting(kit, name="relay_worker")(await self._start_amqp())
        await knats.Subscriber(worker, kit=kit).serve(self._nc, SUBJECT, queue="demo-workers")
        self._publisher = knats.Publisher(self._nc, SUBJECT, kit=kit, timeout=self._timeout)

    async def _start_amqp(self) -> Any:
        # The second hop: an AMQP publisher the NATS worker calls, and the subscriber that sums.
        from kitobs.transport import amqp

        kit = self._kit
        self._amqp = await amqp.connect(kit, self._amqp_url, timeout=5.0)
        summing = instrumenting(kit, name="sum_worker")(_sum_from_json)
        subscriber = amqp.Subscriber(summing, queue=QUEUE, kit=kit, durable=False)
        await subscriber.start(self._amqp)
        publisher = amqp.Publisher(QUEUE, kit=kit, timeout=self._timeout)
        await publisher.start(self._amqp)
        self._amqp_parts = [publisher, subscriber]
        return publisher

    def call(self, request: IntRequest) -> Response:
        """call sums *request* through the worker; a failure is the response's business error."""
        future = self._submit(
            self._publisher({"a": request.a, "b": request.b}), contextvars.copy_context()
        )
        try:
            reply = future.result(timeout=self._timeout + 1.0)
        except Exception as err:  # the error is part of the demo's traffic: answered, recorded
            return Response(err=err if isinstance(err, Exception) else RuntimeError(str(err)))
        return Response(reply.get("value") if isinstance(reply, dict) else reply)

    def close(self) -> None:
        """close drains the connection and stops the loop's thread."""
        if self._thread.is_alive():
            if self._nc is not None:
                with contextlib.suppress(Exception):  # closing anyway
                    self._submit(self._nc.drain(), None).result(timeout=5)
            for part in (*self._amqp_parts, self._amqp):
                if part is not None:
                    with contextlib.suppress(Exception):
                        self._submit(part.close(), None).result(timeout=5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        self._loop.close()

    def _submit(
        self, coro: Coroutine[Any, Any, Any], context: contextvars.Context | None
    ) -> concurrent.futures.Future[Any]:
        # run_coroutine_threadsafe would run the task in the loop thread's context; a task made
        # in the caller's context keeps its current span, so the trace goes on over NATS.
        done: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def settle(task: asyncio.Task[Any]) -> None:
            if task.cancelled():
                done.cancel()
            elif task.exception() is not None:
                done.set_exception(task.exception())
            else:
                done.set_result(task.result())

        def begin() -> None:
            task = self._loop.create_task(coro, context=context)
            task.add_done_callback(settle)

        self._loop.call_soon_threadsafe(begin)
        return done


_sum = make_endpoints()["sum"]


def _sum_from_json(request: Any) -> dict[str, Any]:
    # The worker's endpoint: the demo's sum, on the JSON the publisher sent.
    response = _sum(IntRequest(int(request["a"]), int(request["b"])))
    if response.err is not None:
        raise response.err
    return {"value": response.value}
