"""kitobs.transport.amqp: go-kit's AMQP transport on aio-pika (RabbitMQ), instrumented.

A `Subscriber` (go-kit's server) consumes a queue: for each message it runs the *before* hooks,
decodes the message, calls the endpoint (sync or async), runs the *after* hooks and, when the
message asks for a reply (``reply_to`` and ``correlation_id``), encodes the response and
publishes it to the reply queue; then it acknowledges the message and runs the *finalizers*. A
`Publisher` (go-kit's client) is an async endpoint sending a request and waiting for its reply,
with ONE long-lived reply consumer (RabbitMQ's direct reply-to, ``amq.rabbitmq.reply-to``) and a
correlation-id map for all its requests; `Publisher.send` publishes fire-and-forget.
`kitobs.transport.amqp_sync` is the same pair on pika, for threads (WSGI services).

Each message is recorded through `kitobs.transport.core.Instruments`, after OpenTelemetry's
messaging conventions (``messaging.system="rabbitmq"``):

- the subscriber: ``messaging_process_duration_seconds`` and
  ``messaging_client_consumed_messages_total`` (``messaging_operation_name="process"``, the
  queue as ``messaging_destination_name``, ``error_type`` on failure); a SERVER span for a
  request (a message with ``reply_to``), a CONSUMER span otherwise, whose parent is read from the
  message headers (the Kit tracer's propagators: W3C, B3 when configured; with
  ``tracing.public_edge`` the incoming context becomes a link), current while the endpoint runs;
  ``kitobs_messaging_settlements_total{settlement}`` (ack, nack, requeue, reject);
- the publisher: ``messaging_client_operation_duration_seconds`` and
  ``messaging_client_sent_messages_total`` (``messaging_operation_name`` ``"send"``, the exchange
  or, on the default exchange, the routing key as destination); a CLIENT span for a request, a
  PRODUCER span for `Publisher.send`, its context written into the message headers;
- ``kitobs_messaging_reconnects_total`` (each reconnect also logged at warn),
  ``kitobs_messaging_returned_total`` (unroutable messages) and
  ``kitobs_messaging_dead_lettered_total`` (poison messages given up on).

Nothing is lost without a count: publisher confirms are on and every publish is ``mandatory``,
so an unroutable message raises `Unroutable` in the caller (and is counted); a publish while the
broker is unreachable raises `BrokerUnavailable` at once; a reply not received in time raises
`ReplyTimeout`; requests waiting when the connection drops fail with `BrokerUnavailable`. A
message whose processing fails is requeued at most *max_redeliveries* times (its count travels
in the ``x-kitobs-redeliveries`` header, or RabbitMQ's own ``x-delivery-count`` on quorum
queues), then rejected without requeue, which sends it to the queue's dead-letter exchange when
it has one, and counted. After a reconnect, subscribers and publishers do not rely on aio-pika
restoring their consumers (it sometimes does not): each opens a fresh channel, re-declares its
queue and consumes again.

Example (see docs/amqp.md)::

    connection = await amqp.connect(kit)
    subscriber = amqp.Subscriber(add, amqp.decode_json, amqp.encode_json, queue="add", kit=kit)
    await subscriber.start(connection)
    publisher = amqp.Publisher("add", amqp.encode_json, amqp.decode_json, kit=kit)
    await publisher.start(connection)
    assert await publisher({"a": 1, "b": 2}) == {"v": 3}
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from kitobs.contract import (
    MESSAGING_CLIENT_CONSUMED_MESSAGES,
    MESSAGING_CLIENT_OPERATION_DURATION,
    MESSAGING_CLIENT_SENT_MESSAGES,
    MESSAGING_DEAD_LETTERED,
    MESSAGING_PROCESS_DURATION,
    MESSAGING_RECONNECTS,
    MESSAGING_RETURNED,
    MESSAGING_SETTLEMENT_VALUES,
    MESSAGING_SETTLEMENTS,
)
from kitobs.endpoint import Endpoint, is_async, outcome
from kitobs.endpoint import context as request_context
from kitobs.transport.core import Call, Instruments, exception_type

if TYPE_CHECKING:
    from aio_pika.abc import (
        AbstractChannel,
        AbstractIncomingMessage,
        AbstractQueue,
        AbstractRobustConnection,
    )

    from kitobs.kit import Kit
    from kitobs.metrics import Counter

__all__ = [
    "SYSTEM",
    "DIRECT_REPLY_TO",
    "REDELIVERIES_HEADER",
    "ERROR_TYPE_HEADER",
    "AMQPTransportError",
    "BrokerUnavailable",
    "Unroutable",
    "ReplyTimeout",
    "RemoteError",
    "Delivery",
    "ErrorEncoder",
    "Subscriber",
    "Publisher",
    "connect",
    "watch",
    "decode_json",
    "encode_json",
    "error_body",
    "redeliveries",
    "text_headers",
    "reply_error",
    "nack_requeue",
    "reject",
    "default_error_encoder",
    "Recorder",
]

SYSTEM = "rabbitmq"
"""SYSTEM is the ``messaging_system`` label value of every AMQP series."""
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
"""DIRECT_REPLY_TO is RabbitMQ's pseudo-queue for replies without a reply queue of one's own."""
REDELIVERIES_HEADER = "x-kitobs-redeliveries"
"""REDELIVERIES_HEADER counts the times a failed message was requeued, e.g. ``2``."""
ERROR_TYPE_HEADER = "x-kitobs-error-type"
"""ERROR_TYPE_HEADER marks an error reply; its value is the error's type, e.g. ``"KeyError"``."""
_CONTENT_TYPE = "application/json"
_PLAIN = frozenset((dict, list, str, int, float, bool, type(None)))


class AMQPTransportError(Exception):
    """AMQPTransportError is the base of the AMQP transport's errors, e.g. `Unroutable`."""


class BrokerUnavailable(AMQPTransportError, ConnectionError):
    """BrokerUnavailable: the broker cannot be reached now, e.g. while reconnecting.

    Nothing was published (or, for a request, its reply is lost); the message says why.
    """


class Unroutable(AMQPTransportError):
    """Unroutable: the broker returned a mandatory message no queue is bound to take.

    Example: a request to a queue nobody declared. ``destination`` names where it was sent.
    """

    def __init__(self, message: str, destination: str = "") -> None:
        super().__init__(message)
        self.destination = destination


class ReplyTimeout(AMQPTransportError, TimeoutError):
    """ReplyTimeout: no reply came in time (the publisher's timeout, or the context deadline)."""


class RemoteError(AMQPTransportError):
    """RemoteError is an error reply from a subscriber, e.g. ``RemoteError("boom", "KeyError")``.

    ``error_type`` is the subscriber's error type (its ``x-kitobs-error-type`` header).
    """

    def __init__(self, message: str, error_type: str = "") -> None:
        super().__init__(message)
        self.error_type = error_type


# --------------------------------------------------------------------------------------------
# What both forms (aio-pika here, pika in amqp_sync) share.


class Recorder:
    """Recorder holds one side's instruments and counters, e.g. ``Recorder(kit, "consumer")``.

    Shared by the aio-pika and pika forms; its methods never raise.
    """

    __slots__ = (
        "_children",
        "_consumed",
        "_dead",
        "_reconnects",
        "_returned",
        "_sent",
        "_settlements",
        "kinds",
    )

    def __init__(self, kit: Kit, side: str, *, access_log: bool | None = None) -> None:
        metrics, tracer = kit.metrics, kit.tracer
        settings = kit.settings.transport.amqp
        log = settings.access_log if access_log is None else access_log
        logger = kit.logger if log and side == "server" else None
        spec = (
            MESSAGING_PROCESS_DURATION if side == "server" else MESSAGING_CLIENT_OPERATION_DURATION
        )
        kinds = ("server", "consumer") if side == "server" else ("client", "producer")
        keys = ("queue", "settlement")
        self.kinds: dict[str, Instruments] = {
            kind: Instruments(
                metrics,
                spec,
                "amqp",
                kind=kind,
                tracer=tracer,
                logger=logger,
                log_keys=keys,
            )
            for kind in kinds
        }
        self._sent: Counter = metrics.declare(MESSAGING_CLIENT_SENT_MESSAGES)
        self._consumed: Counter = metrics.declare(MESSAGING_CLIENT_CONSUMED_MESSAGES)
        self._settlements: Counter = metrics.declare(MESSAGING_SETTLEMENTS)
        self._reconnects: Counter = metrics.declare(MESSAGING_RECONNECTS)
        self._returned: Counter = metrics.declare(MESSAGING_RETURNED)
        self._dead: Counter = metrics.declare(MESSAGING_DEAD_LETTERED)
        self._children: dict[tuple[Any, ...], Counter] = {}

    def prime(self, destination: str) -> None:
        """prime shows *destination*'s settlement, dead-letter or returned series at zero.

        A subscriber primes its queue's settlements (ack, nack, requeue, reject) and dead
        letters, a publisher its destination's returned messages, both the reconnections, so
        dashboards show them from the start. It never raises.
        """
        try:
            self._reconnects.labels(SYSTEM).add(0.0)
            if "server" in self.kinds:
                for settlement in MESSAGING_SETTLEMENT_VALUES:
                    self._settlements.labels(SYSTEM, destination, settlement).add(0.0)
                self._dead.labels(SYSTEM, destination).add(0.0)
            else:
                self._returned.labels(SYSTEM, destination).add(0.0)
        except Exception:
            Instruments.drop(self.kinds[next(iter(self.kinds))].dropped_metrics)

    def count(self, counter: str, *labels: str) -> None:
        """count adds one to a counter (``sent``, ``consumed``, ``settlements``, ...)."""
        key = (counter, *labels)
        try:
            child = self._children.get(key)
            if child is None:
                child = getattr(self, "_" + counter).labels(*labels)
                if len(self._children) < 1024:
                    self._children[key] = child
            child.add(1.0)
        except Exception:
            Instruments.drop(self.kinds[next(iter(self.kinds))].dropped_metrics)


def _attributes(
    operation: str, destination: str, message_id: str | None, **extra: Any
) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.operation.name": operation,
        "messaging.operation.type": "send" if operation == "send" else "process",
        "messaging.destination.name": destination,
    }
    if message_id:
        attributes["messaging.message.id"] = message_id
    attributes.update({k: v for k, v in extra.items() if v is not None})
    return attributes


def text_headers(headers: Mapping[str, Any] | None) -> dict[str, str]:
    """text_headers gives the string-valued entries of an AMQP header table, for propagation."""
    if not headers:
        return {}
    out: dict[str, str] = {}
    for name, value in headers.items():
        if isinstance(value, str):
            out[name] = value
        elif isinstance(value, bytes):
            try:
                out[name] = value.decode()
            except UnicodeDecodeError:
                continue
    return out


def redeliveries(headers: Mapping[str, Any] | None) -> int:
    """redeliveries gives how many times a message was requeued after failing, e.g. ``1``.

    RabbitMQ's ``x-delivery-count`` (quorum queues) or kitobs's ``x-kitobs-redeliveries``.
    """
    if not headers:
        return 0
    for name in ("x-delivery-count", REDELIVERIES_HEADER):
        value = headers.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return 0


def decode_json(body: bytes) -> Any:
    """decode_json decodes a JSON message body, e.g. ``b'{"a": 1}'`` to ``{"a": 1}``."""
    return json.loads(body)


def encode_json(response: Any) -> bytes:
    """encode_json encodes a response as a JSON body; dataclasses become objects."""
    if type(response) not in _PLAIN and dataclasses.is_dataclass(response):
        response = dataclasses.asdict(response)  # type: ignore[arg-type]
    return json.dumps(response, separators=(",", ":")).encode()


def error_body(exc: BaseException) -> bytes:
    """error_body is the body of an error reply, e.g. ``{"error": "no such user"}``."""
    return json.dumps({"error": str(exc) or type(exc).__name__}).encode()


def _remote_error(body: bytes, error_type: str) -> RemoteError:
    try:
        message = str(json.loads(body).get("error", ""))
    except (ValueError, AttributeError):
        message = ""
    return RemoteError(message or error_type, error_type)


def _timeout(timeout: float | None) -> float | None:
    """The seconds a request may wait: *timeout*, cut to the request context's deadline."""
    left = request_context.time_remaining()
    if left is None:
        return timeout
    if timeout is None or left < timeout:
        return left
    return timeout


# --------------------------------------------------------------------------------------------
# The aio-pika form.


class Delivery:
    """Delivery is one message being served, handed to error encoders and finalizers.

    ``message`` is the aio-pika message, ``queue`` the queue name. `reply`, `ack`, `requeue` and
    `reject` settle it (once; later calls do nothing); ``settlement`` says how it was settled.
    """

    __slots__ = ("_subscriber", "error", "message", "queue", "replied", "settlement")

    def __init__(self, subscriber: Subscriber, message: AbstractIncomingMessage) -> None:
        self._subscriber = subscriber
        self.message = message
        self.queue = subscriber.queue
        self.settlement = ""
        self.replied = False
        self.error: BaseException | None = None

    async def reply(self, body: bytes, headers: Mapping[str, Any] | None = None) -> None:
        """reply publishes *body* to the message's ``reply_to``, if it has one."""
        message = self.message
        if not message.reply_to or self.replied:
            return
        self.replied = True
        channel = self._subscriber._channel
        if channel is None:
            raise BrokerUnavailable(f"cannot reply on queue {self.queue!r}: not connected")
        reply = _aio_pika().Message(
            body,
            headers=dict(headers) if headers else None,
            correlation_id=message.correlation_id,
            content_type=self._subscriber.content_type,
        )
        # Direct reply-to must be answered on the default exchange; a reply nobody waits for
        # any more (the client timed out) is dropped by the broker, not returned.
        await channel.default_exchange.publish(reply, message.reply_to, mandatory=False)

    async def ack(self) -> None:
        """ack acknowledges the message: it is done."""
        await self._settle("ack")

    async def nack(self) -> None:
        """nack negatively acknowledges the message without requeue (dead-lettered where
        configured)."""
        await self._settle("nack")

    async def requeue(self) -> None:
        """requeue puts the message back, at most ``max_redeliveries`` times, then rejects it.

        The copy goes to the queue's tail with ``x-kitobs-redeliveries`` one higher (classic
        queues keep no count); past the limit it is rejected and counted as dead-lettered.
        """
        if self.settlement:
            return
        subscriber = self._subscriber
        count = redeliveries(self.message.headers)
        if count >= subscriber.max_redeliveries:
            await self._settle("reject")
            subscriber._rec.count("dead", SYSTEM, self.queue)
            return
        if "x-delivery-count" in (self.message.headers or {}):
            await self._settle("requeue")  # a quorum queue counts for us
            return
        aio_pika = _aio_pika()
        message = self.message
        headers = dict(message.headers or {})
        headers[REDELIVERIES_HEADER] = count + 1
        copy = aio_pika.Message(
            message.body,
            headers=headers,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            correlation_id=message.correlation_id,
            reply_to=message.reply_to,
            message_id=message.message_id,
            delivery_mode=message.delivery_mode,
            type=message.type,
            expiration=message.expiration,
        )
        channel = subscriber._channel
        if channel is None:
            raise BrokerUnavailable(f"cannot requeue on queue {self.queue!r}: not connected")
        # Confirmed before the original is acknowledged: a crash in between duplicates the
        # message, never loses it.
        await channel.default_exchange.publish(copy, self.queue, mandatory=True)
        await self._settle("requeue", ack=True)

    async def reject(self) -> None:
        """reject rejects the message without requeue (to the dead-letter exchange, if any)."""
        await self._settle("reject")

    async def _settle(self, settlement: str, *, ack: bool = False) -> None:
        if self.settlement:
            return
        self.settlement = settlement
        message = self.message
        if settlement == "ack" or ack:
            await message.ack()
        elif settlement == "requeue":
            await message.nack(requeue=True)
        elif settlement == "nack":
            await message.nack(requeue=False)
        else:
            await message.reject(requeue=False)
        self._subscriber._rec.count("settlements", SYSTEM, self.queue, settlement)


ErrorEncoder = Callable[[BaseException, Delivery], Awaitable[None]]
"""ErrorEncoder answers a failed message, e.g. `reply_error`: ``await encoder(exc, delivery)``.

It settles the delivery (`Delivery.reply`, `Delivery.ack`, `Delivery.requeue`, ...); one that
does not leaves it to the subscriber, which acknowledges it."""


async def reply_error(exc: BaseException, delivery: Delivery) -> None:
    """reply_error answers a request with an error body and acknowledges it (go-kit's
    ReplyAndAckErrorEncoder); the publisher raises `RemoteError`."""
    await delivery.reply(error_body(exc), {ERROR_TYPE_HEADER: exception_type(exc)})
    await delivery.ack()


async def nack_requeue(exc: BaseException, delivery: Delivery) -> None:
    """nack_requeue requeues the message, at most ``max_redeliveries`` times."""
    await delivery.requeue()


async def reject(exc: BaseException, delivery: Delivery) -> None:
    """reject rejects the message without requeue: to the dead-letter exchange, if any."""
    await delivery.reject()


async def default_error_encoder(exc: BaseException, delivery: Delivery) -> None:
    """default_error_encoder replies with the error to a request (`reply_error`), and requeues
    any other message a bounded number of times (`nack_requeue`)."""
    if delivery.message.reply_to:
        await reply_error(exc, delivery)
    else:
        await nack_requeue(exc, delivery)


class _Connection:
    """What `connect` keeps per connection: who to tell when it drops and comes back."""

    __slots__ = ("listeners", "logger", "rec", "up")

    def __init__(self, rec: Recorder, logger: Any) -> None:
        self.listeners: list[Any] = []
        self.rec = rec
        self.logger = logger
        self.up = True


# Weak: a closed connection's state goes with it (an id could be reused by a new one).
_WATCHED: weakref.WeakKeyDictionary[Any, _Connection] = weakref.WeakKeyDictionary()


async def connect(
    kit: Kit | None = None,
    url: str | None = None,
    *,
    reconnect_interval: float | None = None,
    timeout: float = 10.0,
) -> AbstractRobustConnection:
    """connect opens a robust aio-pika connection and watches it (`watch`), e.g. ``connect(kit)``.

    *url* and *reconnect_interval* default to ``transport.amqp.url`` and
    ``transport.amqp.reconnect_interval``.

    Raises:
        BrokerUnavailable: the broker cannot be reached.
    """
    import aio_pika

    kit = _kit(kit)
    settings = kit.settings.transport.amqp
    interval = settings.reconnect_interval if reconnect_interval is None else reconnect_interval
    target = url or settings.url
    try:
        connection = await aio_pika.connect_robust(
            target, reconnect_interval=interval, timeout=timeout
        )
    except (TimeoutError, OSError, aio_pika.exceptions.AMQPError) as exc:
        raise BrokerUnavailable(f"cannot connect to the AMQP broker: {exc}") from exc
    watch(connection, kit)
    return connection


def watch(connection: AbstractRobustConnection, kit: Kit | None = None) -> None:
    """watch counts and logs a robust connection's losses and reconnects, e.g. one made elsewhere.

    A loss is logged at warn; each reconnect is logged at warn and counted in
    ``kitobs_messaging_reconnects_total``. `connect` calls it; calling it twice does nothing.
    """
    if connection in _WATCHED:
        return
    kit = _kit(kit)
    state = _Connection(Recorder(kit, "client"), kit.logger)
    _WATCHED[connection] = state

    def closed(_sender: Any, exc: BaseException | None = None) -> None:
        was_up, state.up = state.up, False
        for listener in list(state.listeners):
            listener.connection_lost(exc)
        if exc is not None and was_up and not isinstance(exc, asyncio.CancelledError):
            _warn(state.logger, "amqp connection lost", "error", exception_type(exc))

    async def reconnected(_sender: Any) -> None:
        state.up = True
        state.rec.count("reconnects", SYSTEM)
        _warn(state.logger, "amqp connection re-established", "error", "")
        for listener in list(state.listeners):
            try:
                await listener.connection_restored()
            except Exception as exc:  # one listener failing must not stop the others
                _warn(state.logger, "amqp consumer not restored", "error", exception_type(exc))

    connection.close_callbacks.add(closed)
    connection.reconnect_callbacks.add(reconnected)


def _warn(logger: Any, msg: str, key: str, value: str) -> None:
    try:
        warn = getattr(logger, "warn", None) or logger.log
        warn("msg", msg, "transport", "amqp", key, value)
    except Exception:  # the log failing must not break reconnection
        pass


def _state(connection: AbstractRobustConnection, kit: Kit) -> _Connection:
    state = _WATCHED.get(connection)
    if state is None:
        watch(connection, kit)
        state = _WATCHED[connection]
    return state


_AIO_PIKA: Any = None


def _aio_pika() -> Any:
    # Imported on first use, so the pika form (kitobs.transport.amqp_sync) needs no aio-pika.
    global _AIO_PIKA
    module = _AIO_PIKA
    if module is None:
        import aio_pika

        module = _AIO_PIKA = aio_pika
    return module


def _kit(kit: Kit | None) -> Kit:
    if kit is None:
        from kitobs.kit import default

        return default()
    return kit


class Subscriber:
    """Subscriber serves an endpoint on a queue, go-kit's AMQP subscriber; `start` it.

    ``Subscriber(endpoint, decode, encode, queue="add", kit=kit)``: *decode* turns a message
    body into the request (e.g. `decode_json`), *encode* a response into a reply body (e.g.
    `encode_json`). *before* hooks (``hook(message)``) run before decoding, *after* hooks
    (``hook(message, response)``) after the endpoint, *finalizers* (``f(delivery)``, with
    ``delivery.error`` and ``delivery.settlement``) last, whatever happened. A failure (in a hook,
    the decoder, the endpoint, the encoder, or a `Failer` response's error) goes to
    *error_encoder* (default `default_error_encoder`). Sync endpoints run on the event loop:
    keep them short, or make them async.

    The queue is declared (durable unless *durable* is False, with *arguments* such as
    ``{"x-dead-letter-exchange": "dlx"}``) when *declare* is true. *encode* may return
    ``(body, headers)`` to set reply headers. *max_redeliveries* and
    *prefetch_count* default to the ``transport.amqp`` settings.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        decode: Callable[[bytes], Any] = decode_json,
        encode: Callable[[Any], bytes | tuple[bytes, Mapping[str, Any]]] = encode_json,
        *,
        queue: str,
        kit: Kit | None = None,
        before: Iterable[Callable[[Any], Any]] = (),
        after: Iterable[Callable[[Any, Any], Any]] = (),
        error_encoder: ErrorEncoder = default_error_encoder,
        finalizers: Iterable[Callable[[Delivery], Any]] = (),
        declare: bool = True,
        durable: bool = True,
        arguments: Mapping[str, Any] | None = None,
        max_redeliveries: int | None = None,
        prefetch_count: int | None = None,
        content_type: str = _CONTENT_TYPE,
        access_log: bool | None = None,
    ) -> None:
        from kitobs.errors import ConfigError

        if not queue:
            raise ConfigError("an AMQP Subscriber needs a queue name, e.g. queue='orders'")
        kit = _kit(kit)
        settings = kit.settings.transport.amqp
        self._kit = kit
        self._endpoint = endpoint
        self._async = is_async(endpoint)
        self._decode = decode
        self._encode = encode
        self.queue = queue
        self._before = tuple(before)
        self._after = tuple(after)
        self._error_encoder = error_encoder
        self._finalizers = tuple(finalizers)
        self._declare = declare
        self._durable = durable
        self._arguments = dict(arguments or {})
        self.max_redeliveries = (
            settings.max_redeliveries if max_redeliveries is None else max_redeliveries
        )
        self._prefetch = settings.prefetch_count if prefetch_count is None else prefetch_count
        self.content_type = content_type
        self._rec = Recorder(kit, "server", access_log=access_log)
        self._rec.prime(queue)
        self._server = self._rec.kinds["server"]
        self._consumer = self._rec.kinds["consumer"]
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None  # robust or not
        self._tag: str | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self, connection: AbstractRobustConnection) -> None:
        """start declares the queue (unless told not to) and consumes it on a channel of its own.

        Raises:
            BrokerUnavailable: the broker cannot be reached.
        """
        self._connection = connection
        _state(connection, self._kit).listeners.append(self)
        await self._open()

    async def _open(self) -> None:
        import aio_pika

        connection = self._connection
        if connection is None:
            return
        try:
            channel = await connection.channel(publisher_confirms=True)
            await channel.set_qos(prefetch_count=self._prefetch)
            queue: AbstractQueue
            if self._declare:
                queue = await channel.declare_queue(
                    self.queue, durable=self._durable, arguments=self._arguments or None
                )
            else:
                queue = await channel.get_queue(self.queue, ensure=False)
            self._channel, self._queue = channel, queue
            self._tag = await queue.consume(self._on_message)
        except (OSError, aio_pika.exceptions.AMQPError, RuntimeError) as exc:
            raise BrokerUnavailable(f"cannot consume queue {self.queue!r}: {exc}") from exc

    def connection_lost(self, exc: BaseException | None) -> None:
        """connection_lost is told by `watch` that the connection dropped."""

    async def connection_restored(self) -> None:
        """connection_restored opens a fresh channel and consumes again (told by `watch`)."""
        old = self._channel
        self._channel = self._queue = None
        if old is not None:
            with contextlib.suppress(
                Exception
            ):  # restored half-way or already closed: replaced either way
                await old.close()
        await self._open()

    async def close(self) -> None:
        """close stops consuming, waits for the messages in hand, and closes its channel."""
        connection = self._connection
        if connection is not None:
            state = _WATCHED.get(connection)
            if state is not None and self in state.listeners:
                state.listeners.remove(self)
        queue, tag = self._queue, self._tag
        if queue is not None and tag is not None:
            with contextlib.suppress(Exception):  # the channel may be gone already
                await queue.cancel(tag)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        channel = self._channel
        self._channel = self._queue = None
        if channel is not None:
            with contextlib.suppress(Exception):
                await channel.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        # aio-pika runs each consumer callback in a task of its own; tracked so `close` can wait.
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            try:
                await self.handle(message)
            finally:
                self._tasks.discard(task)
        else:
            await self.handle(message)

    async def handle(self, message: AbstractIncomingMessage) -> None:
        """handle serves one message: hooks, decode, endpoint, reply, settlement, records."""
        request_kind = bool(message.reply_to)
        inst = self._server if request_kind else self._consumer
        headers = message.headers or {}
        call = inst.start(
            f"process {self.queue}",
            _attributes(
                "process",
                self.queue,
                message.message_id,
                **{
                    "messaging.message.conversation_id": message.correlation_id,
                    "messaging.rabbitmq.destination.routing_key": message.routing_key,
                    "messaging.rabbitmq.message.delivery_tag": message.delivery_tag,
                    "messaging.message.body.size": len(message.body),
                },
            ),
            carrier=text_headers(headers),
        )
        delivery = Delivery(self, message)
        deadline = None
        expiration = message.expiration
        if expiration:
            deadline = time.monotonic() + float(expiration)  # type: ignore[arg-type]
        token = request_context.attach(
            request_context.from_fields(
                (
                    deadline,
                    request_context.Cancellation(),
                    request_context.Metadata(text_headers(headers)),
                    request_context.NO_VALUES,
                )
            )
        )
        error: BaseException | None = None
        try:
            for hook in self._before:
                await _maybe(hook(message))
            request = self._decode(message.body)
            response = await self._endpoint(request) if self._async else self._endpoint(request)
            _kind, failed = outcome(response, None)
            if failed is not None:
                raise failed
            for after in self._after:
                await _maybe(after(message, response))
            if message.reply_to:
                encoded = self._encode(response)
                if isinstance(encoded, tuple):  # (body, headers)
                    await delivery.reply(*encoded)
                else:
                    await delivery.reply(encoded)
            await delivery.ack()
        except asyncio.CancelledError as exc:
            # Shutting down mid-message: unsettled, so the broker redelivers it; recorded.
            error = exc
            raise
        except Exception as exc:
            error = exc
            try:
                await self._error_encoder(exc, delivery)
                if not delivery.settlement:
                    await delivery.ack()
            except Exception as answering:  # the broker went away: settled by redelivery
                error = error or answering
        finally:
            request_context.detach(token)
            if isinstance(error, asyncio.CancelledError):
                self._record(call, inst, delivery, error)
        delivery.error = error
        for finalizer in self._finalizers:
            with contextlib.suppress(
                Exception
            ):  # a finalizer must not stop the others or the record
                await _maybe(finalizer(delivery))
        self._record(call, inst, delivery, error)

    def _record(
        self, call: Call, inst: Instruments, delivery: Delivery, error: BaseException | None
    ) -> None:
        error_type = exception_type(error) if error is not None else ""
        inst.finish(
            call,
            (SYSTEM, "process", self.queue, error_type),
            (self.queue, delivery.settlement or "none"),
            error is not None,
            error_type,
            error,
        )
        self._rec.count("consumed", SYSTEM, "process", self.queue, error_type)


def _reply_text(exc: Any) -> str:
    delivery = getattr(getattr(exc, "message", None), "delivery", None)
    return str(getattr(delivery, "reply_text", "") or "NO_ROUTE")


async def _maybe(result: Any) -> Any:
    if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
        return await result
    return result


class Publisher:
    """Publisher is go-kit's AMQP publisher: an async endpoint sending requests, e.g. to "add".

    ``Publisher(routing_key, encode, decode, kit=kit)``; `start` it on a connection, then
    ``await publisher(request)`` publishes ``encode(request)`` to *exchange* (default: the
    default exchange, routing by queue name) with a correlation id and
    ``reply_to=amq.rabbitmq.reply-to``, and returns ``decode(reply_body)``. One reply consumer
    serves all of a publisher's requests. `send` publishes without waiting for a reply.

    *before* functions (``f(message)``, an ``aio_pika.Message`` about to go out) set headers or
    properties; *after* functions (``f(reply_message)``) see the reply. *timeout* (default
    ``transport.amqp.timeout``) bounds the wait; the request context's deadline shortens it and
    is sent as the message's expiration, so a request nobody took in time is dropped.

    Raises (from a call): `BrokerUnavailable`, `Unroutable` (nobody consumes *routing_key*),
    `ReplyTimeout`, `RemoteError` (the subscriber answered an error), or what *decode* raises.
    """

    def __init__(
        self,
        routing_key: str,
        encode: Callable[[Any], bytes] = encode_json,
        decode: Callable[[bytes], Any] = decode_json,
        *,
        exchange: str = "",
        kit: Kit | None = None,
        timeout: float | None = None,
        before: Iterable[Callable[[Any], Any]] = (),
        after: Iterable[Callable[[Any], Any]] = (),
        content_type: str = _CONTENT_TYPE,
        persistent: bool = False,
    ) -> None:
        kit = _kit(kit)
        self._kit = kit
        self.routing_key = routing_key
        self.exchange = exchange
        self.destination = exchange or routing_key
        self._encode = encode
        self._decode = decode
        self._timeout = kit.settings.transport.amqp.timeout if timeout is None else timeout
        self._before = tuple(before)
        self._after = tuple(after)
        self._content_type = content_type
        self._persistent = persistent
        self._rec = Recorder(kit, "client")
        self._rec.prime(self.destination)
        self._client = self._rec.kinds["client"]
        self._producer = self._rec.kinds["producer"]
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: Any = None
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._up = False
        self._opening: asyncio.Lock | None = None

    async def start(self, connection: AbstractRobustConnection) -> None:
        """start opens the publisher's channel (publisher confirms on) and its reply consumer.

        Raises:
            BrokerUnavailable: the broker cannot be reached.
        """
        self._connection = connection
        _state(connection, self._kit).listeners.append(self)
        await self._open()

    async def _open(self) -> None:
        import aio_pika

        connection = self._connection
        if connection is None:
            return
        try:
            # on_return_raises: a mandatory message the broker returns fails the publish.
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            reply_queue = await channel.get_queue(DIRECT_REPLY_TO, ensure=False)
            await reply_queue.consume(self._on_reply, no_ack=True)
            if self.exchange:
                exchange = await channel.get_exchange(self.exchange, ensure=False)
            else:
                exchange = channel.default_exchange
        except (OSError, aio_pika.exceptions.AMQPError, RuntimeError) as exc:
            raise BrokerUnavailable(f"cannot open a publisher channel: {exc}") from exc
        self._channel, self._exchange, self._up = channel, exchange, True

    def connection_lost(self, exc: BaseException | None) -> None:
        """connection_lost fails the requests waiting for a reply: it will not come."""
        self._up = False
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(
                    BrokerUnavailable("the broker connection was lost while waiting for the reply")
                )
                # A caller that already gave up no longer awaits it: seen here, so asyncio does
                # not log "exception was never retrieved"; a waiting caller still gets it.
                future.add_done_callback(_retrieved)

    async def connection_restored(self) -> None:
        """connection_restored opens a fresh channel and reply consumer (told by `watch`)."""
        old = self._channel
        self._channel = None
        if old is not None:
            with contextlib.suppress(Exception):
                await old.close()
        await self._open()

    async def close(self) -> None:
        """close fails waiting requests and closes the publisher's channel."""
        connection = self._connection
        if connection is not None:
            state = _WATCHED.get(connection)
            if state is not None and self in state.listeners:
                state.listeners.remove(self)
        self.connection_lost(None)
        channel, self._channel = self._channel, None
        if channel is not None:
            with contextlib.suppress(Exception):
                await channel.close()

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._pending.pop(message.correlation_id or "", None)
        if future is not None and not future.done():
            future.set_result(message)

    def _message(self, body: bytes, headers: dict[str, Any], **properties: Any) -> Any:
        aio_pika = _aio_pika()
        return aio_pika.Message(
            body,
            headers=headers,
            content_type=self._content_type,
            delivery_mode=(
                aio_pika.DeliveryMode.PERSISTENT
                if self._persistent
                else aio_pika.DeliveryMode.NOT_PERSISTENT
            ),
            message_id=uuid.uuid4().hex,
            **properties,
        )

    async def _publish(self, message: Any) -> None:
        import aio_pika

        exchange = self._exchange
        if self._connection is None:
            raise BrokerUnavailable(
                f"publisher to {self.destination!r} not started: await publisher.start(connection)"
            )
        if not self._up or exchange is None or self._channel is None or self._channel.is_closed:
            raise BrokerUnavailable(
                f"cannot publish to {self.destination!r}: the broker connection is down"
            )
        try:
            await exchange.publish(message, self.routing_key, mandatory=True)
        except aio_pika.exceptions.DeliveryError as exc:
            self._rec.count("returned", SYSTEM, self.destination)
            raise Unroutable(
                f"the broker returned the message to {self.destination!r}: no queue takes it "
                f"({_reply_text(exc)})",
                self.destination,
            ) from exc
        except (OSError, aio_pika.exceptions.AMQPError, RuntimeError) as exc:
            raise BrokerUnavailable(f"cannot publish to {self.destination!r}: {exc}") from exc

    async def send(self, request: Any) -> None:
        """send publishes *request* without waiting for a reply, once the broker confirmed it.

        Raises:
            BrokerUnavailable: the broker cannot be reached.
            Unroutable: no queue takes the message.
        """
        headers: dict[str, Any] = {}
        call = self._producer.start(f"send {self.destination}", None, inject=headers, current=False)
        message = None
        error: BaseException | None = None
        try:
            message = self._message(self._encode(request), headers)
            for before in self._before:
                await _maybe(before(message))
            await self._publish(message)
        except BaseException as exc:  # cancelled too: recorded, then re-raised
            error = exc
            raise
        finally:
            self._record(call, self._producer, message, error)

    async def __call__(self, request: Any) -> Any:
        """A request: publish, wait for the reply (bounded), decode it."""
        headers: dict[str, Any] = {}
        call = self._client.start(f"send {self.destination}", None, inject=headers, current=False)
        message = None
        error: BaseException | None = None
        correlation_id = uuid.uuid4().hex
        future: asyncio.Future[Any] | None = None
        try:
            timeout = _timeout(self._timeout)
            if timeout is not None and timeout <= 0:
                raise request_context.DeadlineExceeded(
                    f"request to {self.destination!r}: the deadline has passed; nothing was sent"
                )
            message = self._message(
                self._encode(request),
                headers,
                correlation_id=correlation_id,
                reply_to=DIRECT_REPLY_TO,
                expiration=timeout,
            )
            for before in self._before:
                await _maybe(before(message))
            future = asyncio.get_running_loop().create_future()
            self._pending[correlation_id] = future
            await self._publish(message)
            try:
                reply = await asyncio.wait_for(future, timeout)
            except TimeoutError:
                raise ReplyTimeout(
                    f"no reply from {self.destination!r} within {timeout:.3g} s"
                ) from None
            for after in self._after:
                await _maybe(after(reply))
            error_type = (reply.headers or {}).get(ERROR_TYPE_HEADER)
            if error_type:
                raise _remote_error(reply.body, str(error_type))
            return self._decode(reply.body)
        except BaseException as exc:  # cancelled too: recorded, then re-raised
            error = exc
            raise
        finally:
            self._pending.pop(correlation_id, None)
            self._record(call, self._client, message, error)

    def _record(
        self, call: Call, inst: Instruments, message: Any, error: BaseException | None
    ) -> None:
        error_type = exception_type(error) if error is not None else ""
        labels = (SYSTEM, "send", self.destination, error_type)
        attributes = _attributes(
            "send",
            self.destination,
            getattr(message, "message_id", None),
            **{
                "messaging.message.conversation_id": getattr(message, "correlation_id", None),
                "messaging.rabbitmq.destination.routing_key": self.routing_key,
            },
        )
        inst.finish(call, labels, None, error is not None, error_type, error, attributes)
        self._rec.count("sent", *labels)


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
