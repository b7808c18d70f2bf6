"""kitobs.transport.amqp_sync: the AMQP transport on pika, for threads (WSGI services).

The same pair as `kitobs.transport.amqp`, with the same records, errors and settlements, for
code without an event loop. pika's connections are not thread-safe, so this module gives each
thread a connection of its own and never shares one:

- `Publisher` keeps one connection, one channel (publisher confirms on) and one direct reply-to
  consumer *per thread that calls it* (a `threading.local`), made on the thread's first call;
  a WSGI server's worker threads each get theirs. A request waits for its reply inside
  ``process_data_events`` on that connection, so heartbeats are served while waiting.
- `Subscriber.run` consumes on a connection owned by the thread that runs it (`start` runs it
  in a thread of its own); `Subscriber.stop` is the one method other threads call, and hands the
  stop to that thread (``add_callback_threadsafe``).

After a lost connection, a publisher thread's next call reconnects (counted in
``kitobs_messaging_reconnects_total`` and logged at warn); the call that found it lost raises
`BrokerUnavailable`. A subscriber reconnects every ``transport.amqp.reconnect_interval`` seconds
until it is back, then declares its queue and consumes again. pika serves heartbeats only while
inside its own calls: an endpoint that runs longer than the heartbeat timeout (60 s by default)
gets the connection dropped by the broker, and the message redelivered.

Example::

    publisher = amqp_sync.Publisher("add", kit=kit)
    publisher({"a": 1, "b": 2})  # {"v": 3}
    subscriber = amqp_sync.Subscriber(add, queue="add", kit=kit)
    thread = subscriber.start()
    ...
    subscriber.stop()
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pika
import pika.exceptions

from kitobs.endpoint import Endpoint, outcome
from kitobs.endpoint import context as request_context
from kitobs.transport.amqp import (
    DIRECT_REPLY_TO,
    ERROR_TYPE_HEADER,
    REDELIVERIES_HEADER,
    SYSTEM,
    BrokerUnavailable,
    Recorder,
    ReplyTimeout,
    Unroutable,
    _attributes,
    _kit,
    _remote_error,
    _timeout,
    _warn,
    decode_json,
    encode_json,
    error_body,
    redeliveries,
    text_headers,
)
from kitobs.transport.core import exception_type

if TYPE_CHECKING:
    from kitobs.kit import Kit

__all__ = [
    "Delivery",
    "ErrorEncoder",
    "Publisher",
    "Subscriber",
    "reply_error",
    "nack_requeue",
    "reject",
    "default_error_encoder",
]

_CONTENT_TYPE = "application/json"
# What pika raises when the connection or channel is gone.
_LOST: tuple[type[BaseException], ...] = (
    pika.exceptions.AMQPConnectionError,
    pika.exceptions.AMQPChannelError,
    pika.exceptions.StreamLostError,
    OSError,
)


def _parameters(url: str) -> pika.URLParameters:
    return pika.URLParameters(url)


class Delivery:
    """Delivery is one message being served, as in `kitobs.transport.amqp.Delivery`, but sync.

    ``properties`` are pika's ``BasicProperties``, ``body`` the bytes; `reply`, `ack`, `nack`,
    `requeue` and `reject` settle it once.
    """

    __slots__ = (
        "_channel",
        "_method",
        "_sub",
        "body",
        "error",
        "properties",
        "queue",
        "replied",
        "settlement",
    )

    def __init__(
        self, subscriber: Subscriber, channel: Any, method: Any, properties: Any, body: bytes
    ) -> None:
        self._sub = subscriber
        self._channel = channel
        self._method = method
        self.properties = properties
        self.body = body
        self.queue = subscriber.queue
        self.settlement = ""
        self.replied = False
        self.error: BaseException | None = None

    def reply(self, body: bytes, headers: Mapping[str, Any] | None = None) -> None:
        """reply publishes *body* to the message's ``reply_to``, if it has one."""
        props = self.properties
        if not props.reply_to or self.replied:
            return
        self.replied = True
        self._channel.basic_publish(
            "",
            props.reply_to,
            body,
            pika.BasicProperties(
                headers=dict(headers or {}),
                correlation_id=props.correlation_id,
                content_type=self._sub.content_type,
            ),
        )

    def ack(self) -> None:
        """ack acknowledges the message."""
        self._settle("ack")

    def nack(self) -> None:
        """nack negatively acknowledges the message without requeue."""
        self._settle("nack")

    def requeue(self) -> None:
        """requeue puts a copy back with ``x-kitobs-redeliveries`` one higher, at most
        ``max_redeliveries`` times; then it rejects the message (dead-lettered, counted)."""
        if self.settlement:
            return
        headers = dict(self.properties.headers or {})
        count = redeliveries(headers)
        if count >= self._sub.max_redeliveries:
            self._settle("reject")
            self._sub._rec.count("dead", SYSTEM, self.queue)
            return
        if "x-delivery-count" in headers:
            self._settle("requeue")
            return
        headers[REDELIVERIES_HEADER] = count + 1
        props = self.properties
        copy = pika.BasicProperties(
            headers=headers,
            content_type=props.content_type,
            content_encoding=props.content_encoding,
            correlation_id=props.correlation_id,
            reply_to=props.reply_to,
            message_id=props.message_id,
            delivery_mode=props.delivery_mode,
            type=props.type,
            expiration=props.expiration,
        )
        # Confirmed (the channel is in confirm mode) before the original is acknowledged.
        self._channel.basic_publish("", self.queue, self.body, copy, mandatory=True)
        self._settle("requeue", ack=True)

    def reject(self) -> None:
        """reject rejects the message without requeue."""
        self._settle("reject")

    def _settle(self, settlement: str, *, ack: bool = False) -> None:
        if self.settlement:
            return
        self.settlement = settlement
        tag = self._method.delivery_tag
        if settlement == "ack" or ack:
            self._channel.basic_ack(tag)
        elif settlement == "requeue":
            self._channel.basic_nack(tag, requeue=True)
        elif settlement == "nack":
            self._channel.basic_nack(tag, requeue=False)
        else:
            self._channel.basic_reject(tag, requeue=False)
        self._sub._rec.count("settlements", SYSTEM, self.queue, settlement)


ErrorEncoder = Callable[[BaseException, Delivery], None]
"""ErrorEncoder answers a failed message, e.g. `reply_error`: ``encoder(exc, delivery)``."""


def reply_error(exc: BaseException, delivery: Delivery) -> None:
    """reply_error answers a request with an error body and acknowledges it."""
    delivery.reply(error_body(exc), {ERROR_TYPE_HEADER: exception_type(exc)})
    delivery.ack()


def nack_requeue(exc: BaseException, delivery: Delivery) -> None:
    """nack_requeue requeues the message, a bounded number of times (`Delivery.requeue`)."""
    delivery.requeue()


def reject(exc: BaseException, delivery: Delivery) -> None:
    """reject rejects the message without requeue."""
    delivery.reject()


def default_error_encoder(exc: BaseException, delivery: Delivery) -> None:
    """default_error_encoder replies with the error to a request, requeues other messages."""
    if delivery.properties.reply_to:
        reply_error(exc, delivery)
    else:
        nack_requeue(exc, delivery)


class Subscriber:
    """Subscriber serves an endpoint on a queue from a thread, e.g. ``Subscriber(add, queue="q")``.

    The arguments are those of `kitobs.transport.amqp.Subscriber` (sync hooks, a sync endpoint,
    a sync *error_encoder*); *url* defaults to ``transport.amqp.url``. `run` consumes in the
    calling thread until `stop`; `start` runs it in a new daemon thread and returns once it
    consumes.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        decode: Callable[[bytes], Any] = decode_json,
        encode: Callable[[Any], bytes | tuple[bytes, Mapping[str, Any]]] = encode_json,
        *,
        queue: str,
        kit: Kit | None = None,
        url: str | None = None,
        before: Iterable[Callable[[Delivery], Any]] = (),
        after: Iterable[Callable[[Delivery, Any], Any]] = (),
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
        self._url = url or settings.url
        self._interval = settings.reconnect_interval
        self._endpoint = endpoint
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
        self._connection: Any = None
        self._channel: Any = None
        self._stopping = threading.Event()
        self.consuming = threading.Event()

    def start(self, timeout: float = 10.0) -> threading.Thread:
        """start runs `run` in a daemon thread and waits until it consumes (or *timeout*).

        Raises:
            BrokerUnavailable: it did not consume within *timeout* seconds.
        """
        thread = threading.Thread(target=self.run, name=f"kitobs-amqp-{self.queue}", daemon=True)
        thread.start()
        if not self.consuming.wait(timeout):
            self.stop()
            thread.join(timeout)
            raise BrokerUnavailable(f"cannot consume queue {self.queue!r} within {timeout} s")
        return thread

    def run(self) -> None:
        """run consumes until `stop`, reconnecting (counted, logged) when the connection drops."""
        lost = False
        while not self._stopping.is_set():
            try:
                connection = pika.BlockingConnection(_parameters(self._url))
            except _LOST:
                self._stopping.wait(self._interval)
                continue
            self._connection = connection
            if lost:
                lost = False
                self._rec.count("reconnects", SYSTEM)
                _warn(self._kit.logger, "amqp connection re-established", "error", "")
            try:
                channel = self._channel = connection.channel()
                channel.confirm_delivery()
                channel.basic_qos(prefetch_count=self._prefetch)
                if self._declare:
                    channel.queue_declare(
                        self.queue, durable=self._durable, arguments=self._arguments or None
                    )
                channel.basic_consume(self.queue, self._on_message)
                self.consuming.set()
                if self._stopping.is_set():
                    break
                channel.start_consuming()
            except _LOST as exc:
                self.consuming.clear()
                lost = True
                _warn(self._kit.logger, "amqp connection lost", "error", exception_type(exc))
                self._stopping.wait(self._interval)
            finally:
                self._connection = self._channel = None
                if connection.is_open:
                    with contextlib.suppress(*_LOST):
                        connection.close()
        self.consuming.clear()

    def stop(self) -> None:
        """stop ends `run` after the message in hand; safe from any thread."""
        self._stopping.set()
        connection = self._connection
        if connection is not None:
            with contextlib.suppress(Exception):  # the connection is closing anyway
                connection.add_callback_threadsafe(self._stop_consuming)

    def _stop_consuming(self) -> None:
        # Runs in run()'s thread, inside pika: start_consuming returns after this.
        channel = self._channel
        if channel is not None:
            with contextlib.suppress(*_LOST):
                channel.stop_consuming()

    def _on_message(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        self.handle(Delivery(self, channel, method, properties, body))

    def handle(self, delivery: Delivery) -> None:
        """handle serves one message: hooks, decode, endpoint, reply, settlement, records."""
        props = delivery.properties
        rec = self._rec
        inst = rec.kinds["server" if props.reply_to else "consumer"]
        headers = text_headers(props.headers)
        call = inst.start(
            f"process {self.queue}",
            _attributes(
                "process",
                self.queue,
                props.message_id,
                **{
                    "messaging.message.conversation_id": props.correlation_id,
                    "messaging.message.body.size": len(delivery.body),
                },
            ),
            carrier=headers,
        )
        deadline = None
        if props.expiration:
            try:
                deadline = time.monotonic() + float(props.expiration) / 1000.0
            except ValueError:
                deadline = None
        token = request_context.attach(
            request_context.from_fields(
                (
                    deadline,
                    request_context.Cancellation(),
                    request_context.Metadata(headers),
                    request_context.NO_VALUES,
                )
            )
        )
        error: BaseException | None = None
        try:
            for hook in self._before:
                hook(delivery)
            response = self._endpoint(self._decode(delivery.body))
            _, failed = outcome(response, None)
            if failed is not None:
                raise failed
            for after in self._after:
                after(delivery, response)
            if props.reply_to:
                encoded = self._encode(response)
                if isinstance(encoded, tuple):  # (body, headers)
                    delivery.reply(*encoded)
                else:
                    delivery.reply(encoded)
            delivery.ack()
        except _LOST:
            raise  # the connection is gone: run() reconnects, the broker redelivers
        except Exception as exc:
            error = exc
            try:
                self._error_encoder(exc, delivery)
                if not delivery.settlement:
                    delivery.ack()
            except _LOST:
                raise
            except Exception as answering:
                error = error or answering
        finally:
            request_context.detach(token)
        delivery.error = error
        for finalizer in self._finalizers:
            with contextlib.suppress(Exception):
                finalizer(delivery)
        error_type = exception_type(error) if error is not None else ""
        inst.finish(
            call,
            (SYSTEM, "process", self.queue, error_type),
            (self.queue, delivery.settlement or "none"),
            error is not None,
            error_type,
            error,
        )
        rec.count("consumed", SYSTEM, "process", self.queue, error_type)


class _Link:
    """One thread's connection, channel and reply consumer."""

    __slots__ = ("channel", "connection", "replies")

    def __init__(self, url: str) -> None:
        self.connection = pika.BlockingConnection(_parameters(url))
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()
        self.replies: dict[str, Any] = {}
        self.channel.basic_consume(DIRECT_REPLY_TO, self._reply, auto_ack=True)

    def _reply(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        self.replies[properties.correlation_id or ""] = (properties, body)

    def close(self) -> None:
        try:
            if self.connection.is_open:
                self.connection.close()
        except _LOST:
            pass


class Publisher:
    """Publisher is the sync AMQP publisher endpoint, e.g. ``Publisher("add", kit=kit)(request)``.

    As `kitobs.transport.amqp.Publisher` (same arguments, errors and records), with one
    connection per calling thread (see the module). *url* defaults to ``transport.amqp.url``.
    `close` closes the connections of every thread: call it once no thread uses the publisher.
    """

    def __init__(
        self,
        routing_key: str,
        encode: Callable[[Any], bytes] = encode_json,
        decode: Callable[[bytes], Any] = decode_json,
        *,
        exchange: str = "",
        kit: Kit | None = None,
        url: str | None = None,
        timeout: float | None = None,
        before: Iterable[Callable[[Any], Any]] = (),
        after: Iterable[Callable[[Any, bytes], Any]] = (),
        content_type: str = _CONTENT_TYPE,
        persistent: bool = False,
    ) -> None:
        kit = _kit(kit)
        settings = kit.settings.transport.amqp
        self._kit = kit
        self._url = url or settings.url
        self.routing_key = routing_key
        self.exchange = exchange
        self.destination = exchange or routing_key
        self._encode = encode
        self._decode = decode
        self._timeout = settings.timeout if timeout is None else timeout
        self._before = tuple(before)
        self._after = tuple(after)
        self._content_type = content_type
        self._delivery_mode = 2 if persistent else 1
        self._rec = Recorder(kit, "client")
        self._rec.prime(self.destination)
        self._local = threading.local()
        self._links: list[_Link] = []
        self._lock = threading.Lock()

    def _link(self) -> _Link:
        link: _Link | None = getattr(self._local, "link", None)
        if link is not None and link.connection.is_open:
            return link
        lost = link is not None or getattr(self._local, "lost", False)
        if link is not None:
            self._forget(link)
        try:
            link = _Link(self._url)
        except _LOST as exc:
            self._local.lost = True
            raise BrokerUnavailable(
                f"cannot publish to {self.destination!r}: cannot connect to the broker ({exc!r})"
            ) from exc
        if lost:
            self._local.lost = False
            self._rec.count("reconnects", SYSTEM)
            _warn(self._kit.logger, "amqp connection re-established", "error", "")
        self._local.link = link
        with self._lock:
            self._links.append(link)
        return link

    def _forget(self, link: _Link) -> None:
        self._local.link = None
        link.close()
        with self._lock:
            if link in self._links:
                self._links.remove(link)

    def _publish(self, link: _Link, body: bytes, properties: Any) -> None:
        try:
            link.channel.basic_publish(
                self.exchange, self.routing_key, body, properties, mandatory=True
            )
        except pika.exceptions.UnroutableError as exc:
            self._rec.count("returned", SYSTEM, self.destination)
            raise Unroutable(
                f"the broker returned the message to {self.destination!r}: no queue takes it",
                self.destination,
            ) from exc
        except _LOST as exc:
            self._forget(link)
            self._local.lost = True
            _warn(self._kit.logger, "amqp connection lost", "error", exception_type(exc))
            raise BrokerUnavailable(f"cannot publish to {self.destination!r}: {exc!r}") from exc

    def send(self, request: Any) -> None:
        """send publishes *request* without waiting for a reply, once the broker confirmed it."""
        self._call(request, False)

    def __call__(self, request: Any) -> Any:
        """A request: publish, wait for the reply (bounded), decode it."""
        return self._call(request, True)

    def _call(self, request: Any, wait: bool) -> Any:
        inst = self._rec.kinds["client" if wait else "producer"]
        headers: dict[str, Any] = {}
        call = inst.start(f"send {self.destination}", None, inject=headers, current=False)
        correlation_id = uuid.uuid4().hex if wait else None
        message_id = uuid.uuid4().hex
        error: BaseException | None = None
        try:
            timeout = _timeout(self._timeout) if wait else None
            if timeout is not None and timeout <= 0:
                raise request_context.DeadlineExceeded(
                    f"request to {self.destination!r}: the deadline has passed; nothing was sent"
                )
            properties = pika.BasicProperties(
                headers=headers,
                content_type=self._content_type,
                delivery_mode=self._delivery_mode,
                message_id=message_id,
                correlation_id=correlation_id,
                reply_to=DIRECT_REPLY_TO if wait else None,
                expiration=str(max(1, int(timeout * 1000))) if timeout is not None else None,
            )
            for before in self._before:
                before(properties)
            body = self._encode(request)
            link = self._link()
            # Late replies of earlier, timed-out requests go; cleared before publishing, as the
            # reply can arrive while basic_publish waits for the broker's confirm.
            link.replies.clear()
            self._publish(link, body, properties)
            if not wait:
                return None
            return self._wait(link, correlation_id or "", timeout)
        except Exception as exc:
            error = exc
            raise
        finally:
            error_type = exception_type(error) if error is not None else ""
            labels = (SYSTEM, "send", self.destination, error_type)
            attributes = _attributes(
                "send",
                self.destination,
                message_id,
                **{
                    "messaging.message.conversation_id": correlation_id,
                    "messaging.rabbitmq.destination.routing_key": self.routing_key,
                },
            )
            inst.finish(call, labels, None, error is not None, error_type, error, attributes)
            self._rec.count("sent", *labels)

    def _wait(self, link: _Link, correlation_id: str, timeout: float | None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        replies = link.replies
        while correlation_id not in replies:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise ReplyTimeout(f"no reply from {self.destination!r} within {timeout:.3g} s")
            try:
                link.connection.process_data_events(time_limit=min(left or 1.0, 1.0))
            except _LOST as exc:
                self._forget(link)
                self._local.lost = True
                raise BrokerUnavailable(
                    f"the broker connection was lost while waiting for the reply ({exc!r})"
                ) from exc
        properties, body = replies.pop(correlation_id)
        for after in self._after:
            after(properties, body)
        error_type = (properties.headers or {}).get(ERROR_TYPE_HEADER)
        if error_type:
            raise _remote_error(body, str(error_type))
        return self._decode(body)

    def close(self) -> None:
        """close closes every thread's connection of this publisher."""
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.close()
        self._local = threading.local()
