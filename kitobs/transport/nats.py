"""kitobs.transport.nats: go-kit's NATS transport on nats-py (asyncio), instrumented.

- `connect` dials NATS with the ``[transport.nats]`` settings (URL, timeouts, reconnect buffer)
  and callbacks that log reconnections at warn and count them
  (``kitobs_messaging_reconnects_total``), and count slow-consumer drops;
- `Subscriber` (go-kit's ``Subscriber``) serves an endpoint on a subject: decode, endpoint,
  encode, and a reply (with headers) when the message has a reply subject; before and after
  hooks, an error encoder, finalizers. Each message gets a SERVER (request/reply) or CONSUMER
  span whose parent comes from the message headers, ``messaging_process_duration_seconds`` and a
  log line, and the span is current while the endpoint runs;
- `Publisher` (go-kit's ``Publisher``) is an endpoint making a request/reply call (CLIENT span,
  ``messaging_client_operation_duration_seconds``) with a timeout the request context's deadline
  shortens; `Publisher.publish` sends fire-and-forget (PRODUCER span).

Trace context travels in the message headers with the Kit tracer's propagators (W3C, B3), and
the Kit's ``tracing.public_edge`` applies to what arrives as it does on the HTTP servers. Labels
are bounded: ``messaging_destination_name`` is the subscription's subject *pattern* (or the
Publisher's subject, fixed in code), never a concrete subject a client chose.

Example::

    nc = await connect(kit)
    server = Subscriber(add, kit=kit)
    await server.serve(nc, "calc.add", queue="calc")
    add_client = Publisher(nc, "calc.add", kit=kit, timeout=2.0)
    await add_client({"a": 1, "b": 2})  # -> {"v": 3}
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import nats
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from kitobs.contract import (
    MESSAGING_CLIENT_CONSUMED_MESSAGES,
    MESSAGING_CLIENT_OPERATION_DURATION,
    MESSAGING_CLIENT_SENT_MESSAGES,
    MESSAGING_PROCESS_DURATION,
    MESSAGING_RECONNECTS,
)
from kitobs.endpoint import BUSINESS_ERROR, Endpoint, RequestError, is_async, outcome
from kitobs.endpoint.context import (
    NO_VALUES,
    OUTGOING_METADATA,
    Cancellation,
    DeadlineExceeded,
    LazyMetadata,
    RequestContext,
    attach,
    current,
    detach,
    from_fields,
)
from kitobs.transport.core import Instruments, exception_type
from kitobs.transport.http import BadRequest, encode_error, server_timeout

if TYPE_CHECKING:
    from kitobs.kit import Kit
    from kitobs.metrics import Counter

__all__ = [
    "SYSTEM",
    "ERROR_HEADER",
    "ERROR_CODE_HEADER",
    "PublishError",
    "ReplyError",
    "connect",
    "Subscriber",
    "Publisher",
    "decode_json_request",
    "encode_json_response",
    "encode_json_request",
    "decode_json_response",
    "default_error_encoder",
]

#: SYSTEM is the ``messaging_system`` label and ``messaging.system`` attribute: ``"nats"``.
SYSTEM = "nats"
#: ERROR_HEADER carries an error reply's description (the NATS services convention).
ERROR_HEADER = "Nats-Service-Error"
#: ERROR_CODE_HEADER carries an error reply's code, e.g. ``"500"``.
ERROR_CODE_HEADER = "Nats-Service-Error-Code"

_SLOW_CONSUMER = exception_type(nats.errors.SlowConsumerError("", "", 0, None))  # type: ignore[arg-type]
# A slow consumer drops messages in bursts: its line is written for the first drop of a
# subscription and then once per this many, with the count so far.
_SLOW_LOG_EVERY = 1000


class PublishError(nats.errors.Error):
    """PublishError is a message that could not be sent, e.g. while the server is unreachable.

    Raised by `Publisher` (both calls) when nats-py refuses the publish: the connection is
    reconnecting and its reconnect buffer (``transport.nats.reconnect_buffer_size``) is full, or
    the connection is closed. nats-py's error is the ``__cause__``; a subclass of
    ``nats.errors.Error``, so ``except nats.errors.Error`` still catches it.
    """


class ReplyError(Exception):
    """ReplyError is an error reply, raised by `decode_json_response`, e.g. ``ReplyError("no")``.

    *code* is the reply's `ERROR_CODE_HEADER` (``"500"``, ``"400"``...), ``""`` without one.
    """

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _wrap_publish_error(exc: Exception, subject: str, nc: NATS) -> Exception:
    if isinstance(exc, nats.errors.OutboundBufferLimitError):
        size = nc._max_pending_size  # nats-py keeps the reconnect buffer size only here
        err = PublishError(
            f"nats: message to {subject!r} not sent: the connection is down (reconnecting) and "
            f"its reconnect buffer ({size} bytes, transport.nats.reconnect_buffer_size) is full"
        )
    elif isinstance(exc, nats.errors.ConnectionClosedError):
        err = PublishError(f"nats: message to {subject!r} not sent: the connection is closed")
    else:
        return exc
    err.__cause__ = exc
    return err


def _kit(kit: Kit | None) -> Kit:
    if kit is None:
        from kitobs.kit import default

        return default()
    return kit


# --------------------------------------------------------------------------------------------
# Codecs.


def decode_json_request(msg: Msg) -> Any:
    """decode_json_request decodes a message body as JSON, e.g. ``b'{"a": 1}'`` → ``{"a": 1}``.

    Raises:
        kitobs.transport.http.BadRequest: the body is not JSON (answered with code 400).
    """
    try:
        return json.loads(msg.data)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"message body is not valid JSON: {exc}") from exc


def encode_json_response(response: Any) -> bytes:
    """encode_json_response encodes an endpoint response as a JSON reply body."""
    return json.dumps(response).encode()


def encode_json_request(request: Any) -> bytes:
    """encode_json_request encodes a request as a JSON message body."""
    return json.dumps(request).encode()


def decode_json_response(msg: Msg) -> Any:
    """decode_json_response decodes a JSON reply, e.g. ``{"v": 3}``.

    Raises:
        ReplyError: the reply is an error reply (it has an `ERROR_HEADER`).
    """
    headers = msg.headers
    if headers:
        error = headers.get(ERROR_HEADER)
        if error is not None:
            raise ReplyError(error, headers.get(ERROR_CODE_HEADER, ""))
    return json.loads(msg.data)


def default_error_encoder(error: BaseException) -> tuple[bytes, dict[str, str]]:
    """default_error_encoder gives the reply to an error: ``{"error": "..."}`` and its headers.

    As on the HTTP servers (`kitobs.transport.http.encode_error`): an error with a
    ``status_code`` (a `kitobs.endpoint.RequestError`, ``BadRequest``) is answered with its
    message and code; anything else with ``internal server error`` and ``500``, never quoting
    the exception. The headers are `ERROR_HEADER` and `ERROR_CODE_HEADER`.
    """
    code, _, body = encode_error(error)
    message = json.loads(body)["error"]
    return body, {ERROR_HEADER: message, ERROR_CODE_HEADER: str(code)}


# --------------------------------------------------------------------------------------------
# Connection.


async def connect(
    kit: Kit | None = None, servers: str | Sequence[str] | None = None, **options: Any
) -> NATS:
    """connect dials NATS with *kit*'s ``[transport.nats]`` settings, e.g. ``await connect(kit)``.

    *servers* defaults to ``transport.nats.url``; ``connect_timeout``, ``reconnect_time_wait``,
    ``max_reconnect_attempts`` and ``pending_size`` (the reconnect buffer,
    ``reconnect_buffer_size``) default to the settings too; any other ``nats.connect`` option
    passes through. The connection's callbacks (yours, given, run after kitobs's):

    - a lost connection is logged at warn; a reconnection is logged at warn and counted in
      ``kitobs_messaging_reconnects_total{messaging_system="nats"}``; nats-py restores the
      subscriptions itself;
    - a message a slow consumer dropped is counted in
      ``messaging_client_consumed_messages_total`` with ``error_type`` =
      ``nats.errors.SlowConsumerError`` under its subscription's subject pattern, and logged at
      warn (the first drop, then every 1000th); other errors are logged at error.

    The callbacks never raise (a raising callback would stop nats-py reconnecting).
    """
    kit = _kit(kit)
    cfg = kit.settings.transport.nats
    if servers is None:
        servers = [url.strip() for url in cfg.url.split(",") if url.strip()]
    options.setdefault("connect_timeout", cfg.connect_timeout)
    options.setdefault("reconnect_time_wait", cfg.reconnect_time_wait)
    options.setdefault("max_reconnect_attempts", cfg.max_reconnect_attempts)
    options.setdefault("pending_size", cfg.reconnect_buffer_size)
    events = _Events(kit, options)
    options["error_cb"] = events.error
    options["disconnected_cb"] = events.disconnected
    options["reconnected_cb"] = events.reconnected
    nc = await nats.connect(list(servers) if not isinstance(servers, str) else servers, **options)
    events.nc = nc
    return nc


class _Events:
    """The connection callbacks `connect` installs: log, count, then the user's own."""

    def __init__(self, kit: Kit, options: dict[str, Any]) -> None:
        self.nc: NATS | None = None
        logger: Any = kit.logger.with_("transport", SYSTEM)
        self._warn = getattr(logger, "warn", logger.log)
        self._error = getattr(logger, "error", logger.log)
        metrics = kit.metrics
        self._reconnects = metrics.declare(MESSAGING_RECONNECTS).labels(SYSTEM)
        self._consumed = metrics.declare(MESSAGING_CLIENT_CONSUMED_MESSAGES)
        self._dropped_metrics = metrics.dropped("metrics", f"{SYSTEM}_error")
        self._dropped_logs = metrics.dropped("logs", f"{SYSTEM}_error")
        self._slow: dict[str, int] = {}
        self._user_error = options.get("error_cb")
        self._user_disconnected = options.get("disconnected_cb")
        self._user_reconnected = options.get("reconnected_cb")

    def _url(self) -> str:
        nc = self.nc
        url = getattr(nc, "connected_url", None) if nc is not None else None
        if url is None:
            return ""
        # netloc only: a URL may carry credentials.
        return f"{url.hostname}:{url.port}"

    async def disconnected(self) -> None:
        nc = self.nc
        if nc is not None and (nc.is_closed or nc.is_draining):  # closed on purpose
            await _call_quietly(self._user_disconnected)
            return
        try:
            self._warn("event", "disconnected", "msg", "lost the connection to NATS; reconnecting")
        except Exception:
            Instruments.drop(self._dropped_logs)
        await _call_quietly(self._user_disconnected)

    async def reconnected(self) -> None:
        try:
            self._reconnects.add(1.0)
        except Exception:
            Instruments.drop(self._dropped_metrics)
        try:
            self._warn("event", "reconnected", "server", self._url())
        except Exception:
            Instruments.drop(self._dropped_logs)
        await _call_quietly(self._user_reconnected)

    async def error(self, exc: Exception) -> None:
        try:
            if isinstance(exc, nats.errors.SlowConsumerError):
                pattern = exc.sub.subject if exc.sub is not None else ""
                try:
                    self._consumed.labels(SYSTEM, "process", pattern, _SLOW_CONSUMER).add(1.0)
                except Exception:
                    Instruments.drop(self._dropped_metrics)
                seen = self._slow.get(pattern, 0) + 1
                if len(self._slow) < 4096 or pattern in self._slow:
                    self._slow[pattern] = seen
                if seen == 1 or seen % _SLOW_LOG_EVERY == 0:
                    self._warn(
                        "event",
                        "slow_consumer",
                        "subject",
                        pattern,
                        "dropped",
                        seen,
                        "msg",
                        "messages dropped: the subscription's pending limits were reached",
                    )
            else:
                self._error("event", "error", "error", exception_type(exc), "msg", str(exc))
        except Exception:
            Instruments.drop(self._dropped_logs)
        await _call_quietly(self._user_error, exc)


async def _call_quietly(callback: Callable[..., Awaitable[None]] | None, *args: Any) -> None:
    if callback is None:
        return
    # A raising callback would stop nats-py's reconnect loop.
    with contextlib.suppress(Exception):
        await callback(*args)


# --------------------------------------------------------------------------------------------
# Subscriber (server side).

Before = Callable[[Msg], None]
After = Callable[[Msg, dict[str, str]], None]
Finalizer = Callable[[Msg, "BaseException | None"], None]
ErrorEncoder = Callable[[BaseException], "tuple[bytes, dict[str, str]]"]


class Subscriber:
    """Subscriber serves one endpoint on NATS subjects, go-kit style, e.g. ``Subscriber(add)``.

    Per message: *before* hooks (msg), ``decode(msg)``, the endpoint, ``encode(response)`` to
    the reply body, *after* hooks (msg, reply headers: add to them); when the message has a
    reply subject the reply is published with those headers. An exception from any step, or a
    business error (a `kitobs.endpoint.Failer` response that failed), goes to *error_encoder*
    (`default_error_encoder`: ``{"error": ...}`` with `ERROR_HEADER`), whose body and headers are
    the reply. *finalizers* run last with (msg, the error or None). *decode*, the endpoint and
    *encode* may be async. The request context is current throughout: the message headers as
    its metadata, a deadline *timeout* seconds away when given.

    Each message records ``messaging_process_duration_seconds`` and
    ``messaging_client_consumed_messages_total`` (the subscription's subject pattern as
    ``messaging_destination_name``), a reply ``messaging_client_sent_messages_total``
    (``messaging_operation_name="reply"``), a SERVER span (message with a reply subject) or a
    CONSUMER span (without), child of the context in the headers, current while the endpoint
    runs, and, unless ``transport.nats.access_log`` is off, a line
    ``transport=nats subject=<pattern> status=ok|error duration=...``.

    Raises:
        ConfigError: *timeout* is not positive.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        decode: Callable[[Msg], Any] = decode_json_request,
        encode: Callable[[Any], Any] = encode_json_response,
        *,
        kit: Kit | None = None,
        before: Sequence[Before] = (),
        after: Sequence[After] = (),
        error_encoder: ErrorEncoder = default_error_encoder,
        finalizers: Sequence[Finalizer] = (),
        timeout: float | None = None,
    ) -> None:
        kit = _kit(kit)
        self._endpoint = endpoint
        self._endpoint_async = is_async(endpoint)
        self._decode = decode
        self._decode_async = is_async(decode)
        self._encode = encode
        self._encode_async = is_async(encode)
        self._before = tuple(before)
        self._after = tuple(after)
        self._error_encoder = error_encoder
        self._finalizers = tuple(finalizers)
        self._timeout = server_timeout(timeout)
        metrics = kit.metrics
        logger = kit.logger if kit.settings.transport.nats.access_log else None
        keys = ("subject", "status")
        self._server = Instruments(
            metrics,
            MESSAGING_PROCESS_DURATION,
            SYSTEM,
            kind="server",
            tracer=kit.tracer,
            logger=logger,
            log_keys=keys,
        )
        self._consumer = Instruments(
            metrics,
            MESSAGING_PROCESS_DURATION,
            SYSTEM,
            kind="consumer",
            tracer=kit.tracer,
            logger=logger,
            log_keys=keys,
        )
        self._consumed = metrics.declare(MESSAGING_CLIENT_CONSUMED_MESSAGES)
        self._sent = metrics.declare(MESSAGING_CLIENT_SENT_MESSAGES)

    async def serve(self, nc: NATS, subject: str, queue: str = "", **options: Any) -> Subscription:
        """serve subscribes to *subject* (a pattern, e.g. ``orders.*``), in queue group *queue*.

        Returns nats-py's subscription, registered on the server (``unsubscribe``/``drain`` it
        to stop); *options* go to ``nc.subscribe`` (e.g. ``pending_msgs_limit``).
        """
        sub = await nc.subscribe(
            subject, queue=queue, cb=self.handler(nc, subject, queue), **options
        )
        # Once the server has it: a request sent right after finds a responder.
        await nc.flush()
        return sub

    def handler(self, nc: NATS, subject: str, queue: str = "") -> Callable[[Msg], Awaitable[None]]:
        """handler is the ``cb`` for ``nc.subscribe(subject, queue=queue, cb=...)`` (ServeMsg).

        *subject* must be the subscription's pattern: it labels the metrics.
        """
        return _Handler(self, nc, subject, queue).__call__


class _Headers(LazyMetadata):
    """A message's headers as request metadata, decoded only when an endpoint reads them."""

    __slots__ = ("_headers",)

    def __init__(self, headers: dict[str, str] | None) -> None:
        self._decoded = None
        self._headers = headers

    def pairs(self) -> Any:
        headers = self._headers
        return headers.items() if headers else ()


class _Handler:
    """One subscription's message callback, with its label values and attributes bound."""

    __slots__ = (
        "_attrs",
        "_consumed",
        "_error_labels",
        "_nc",
        "_ok_labels",
        "_ok_log",
        "_pattern",
        "_reply_sent",
        "_span_name",
        "_srv",
    )

    def __init__(self, server: Subscriber, nc: NATS, pattern: str, queue: str) -> None:
        self._srv = server
        self._nc = nc
        self._pattern = pattern
        self._ok_labels = (SYSTEM, "process", pattern, "")
        self._ok_log = (pattern, "ok")
        self._error_labels: dict[str, tuple[str, ...]] = {}
        self._span_name = f"process {pattern}"
        attrs: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.operation.name": "process",
            "messaging.operation.type": "process",
            "messaging.destination.template": pattern,
        }
        if queue:
            attrs["messaging.consumer.group.name"] = queue
        self._attrs = attrs
        self._consumed: Counter = server._consumed.labels(SYSTEM, "process", pattern, "")
        self._reply_sent: Counter = server._sent.labels(SYSTEM, "reply", pattern, "")

    def _labels(self, error_type: str) -> tuple[str, ...]:
        labels = self._error_labels.get(error_type)
        if labels is None:
            labels = (SYSTEM, "process", self._pattern, error_type)
            if len(self._error_labels) < 256:
                self._error_labels[error_type] = labels
        return labels

    async def __call__(self, msg: Msg) -> None:
        srv = self._srv
        reply_to = msg.reply
        inst = srv._server if reply_to else srv._consumer
        headers = msg.headers
        attrs = {
            **self._attrs,
            "messaging.destination.name": msg.subject,
            "messaging.message.body.size": len(msg.data),
        }
        call = inst.start(self._span_name, attrs, carrier=headers or {})
        try:
            self._consumed.add(1.0)
        except Exception:
            inst.drop(inst.dropped_metrics)
        timeout = srv._timeout
        deadline = time.monotonic() + timeout if timeout is not None else None
        token = attach(from_fields((deadline, Cancellation(), _Headers(headers), NO_VALUES)))
        error: BaseException | None = None
        reply_headers: dict[str, str] = {}
        try:
            for before in srv._before:
                before(msg)
            request = srv._decode(msg)
            if srv._decode_async:
                request = await request
            response = srv._endpoint(request)
            if srv._endpoint_async:
                response = await response
            kind, err = outcome(response, None)
            if kind == BUSINESS_ERROR and err is not None:
                error = err
                body, reply_headers = srv._error_encoder(err)
            else:
                body = srv._encode(response)
                if srv._encode_async:
                    body = await body
                for after in srv._after:
                    after(msg, reply_headers)
        except Exception as exc:
            error = exc
            body, reply_headers = srv._error_encoder(exc)
        finally:
            detach(token)
        if reply_to:
            try:
                await self._nc.publish(reply_to, body, headers=reply_headers or None)
                self._reply_sent.add(1.0)
            except Exception as exc:
                wrapped = _wrap_publish_error(exc, reply_to, self._nc)
                self._count_reply_error(exception_type(exc), inst)
                if error is None:
                    error = wrapped
        if error is None:
            inst.finish(call, self._ok_labels, self._ok_log)
        else:
            cause = error.__cause__ if isinstance(error, PublishError) else None
            error_type = exception_type(cause or error)
            # A RequestError is an answer chosen on purpose (e.g. a 400), still not an "ok".
            inst.finish(
                call,
                self._labels(error_type),
                (self._pattern, "error"),
                True,
                error_type,
                None if isinstance(error, RequestError) else error,
            )
        for finalizer in srv._finalizers:
            finalizer(msg, error)

    def _count_reply_error(self, error_type: str, inst: Instruments) -> None:
        try:
            self._srv._sent.labels(SYSTEM, "reply", self._pattern, error_type).add(1.0)
        except Exception:
            inst.drop(inst.dropped_metrics)


# --------------------------------------------------------------------------------------------
# Publisher (client side).

PublisherBefore = Callable[[RequestContext, dict[str, str]], None]
PublisherAfter = Callable[[Msg], None]


class Publisher:
    """Publisher is an `Endpoint` making NATS requests, e.g. ``await Publisher(nc, "calc.add")(r)``.

    ``await publisher(request)`` encodes the request (*encode*: request → bytes), applies the
    *before* functions (request context, outgoing headers: add to them; the context's
    `kitobs.endpoint.context.OUTGOING_METADATA` is added first), sends it with ``nc.request``,
    runs the *after* functions (reply message) and returns ``decode(reply)``
    (`decode_json_response` raises `ReplyError` for an error reply). It waits *timeout* seconds
    (default ``transport.nats.request_timeout``), cut to the time left before the request
    context's deadline; once that has passed it raises
    `kitobs.endpoint.context.DeadlineExceeded` without sending. ``nats.errors.TimeoutError`` and
    ``nats.errors.NoRespondersError`` propagate; a publish nats-py refuses (connection down with
    a full reconnect buffer, or closed) raises `PublishError`.

    `publish` sends fire-and-forget. Each call records
    ``messaging_client_operation_duration_seconds`` and
    ``messaging_client_sent_messages_total`` (operation ``request`` or ``publish``, *subject* as
    destination, ``error_type`` on failure) and a CLIENT (request) or PRODUCER (publish) span
    whose context goes out in the headers.
    """

    def __init__(
        self,
        nc: NATS,
        subject: str,
        encode: Callable[[Any], bytes] = encode_json_request,
        decode: Callable[[Msg], Any] = decode_json_response,
        *,
        kit: Kit | None = None,
        before: Sequence[PublisherBefore] = (),
        after: Sequence[PublisherAfter] = (),
        timeout: float | None = None,
    ) -> None:
        kit = _kit(kit)
        self.nc = nc
        self.subject = subject
        self._encode = encode
        self._decode = decode
        self._before = tuple(before)
        self._after = tuple(after)
        if timeout is None:
            timeout = kit.settings.transport.nats.request_timeout
        server_timeout(timeout)
        self._timeout: float = timeout
        metrics = kit.metrics
        self._client = Instruments(
            metrics, MESSAGING_CLIENT_OPERATION_DURATION, SYSTEM, kind="client", tracer=kit.tracer
        )
        self._producer = Instruments(
            metrics,
            MESSAGING_CLIENT_OPERATION_DURATION,
            SYSTEM,
            kind="producer",
            tracer=kit.tracer,
        )
        self._sent_spec = metrics.declare(MESSAGING_CLIENT_SENT_MESSAGES)
        self._ok = {op: (SYSTEM, op, subject, "") for op in ("request", "publish")}
        self._sent_ok = {op: self._sent_spec.labels(*labels) for op, labels in self._ok.items()}
        base = {"messaging.system": SYSTEM, "messaging.destination.name": subject}
        self._attrs = {
            "request": {
                **base,
                "messaging.operation.name": "request",
                "messaging.operation.type": "send",
            },
            "publish": {
                **base,
                "messaging.operation.name": "publish",
                "messaging.operation.type": "send",
            },
        }
        self._names = {"request": f"request {subject}", "publish": f"publish {subject}"}

    def _headers(self, ctx: RequestContext) -> dict[str, str]:
        headers: dict[str, str] = {}
        outgoing = ctx.values.get(OUTGOING_METADATA)
        if outgoing:
            headers.update(outgoing)
        for before in self._before:
            before(ctx, headers)
        return headers

    def _failed(
        self, inst: Instruments, call: Any, op: str, exc: BaseException, counted: BaseException
    ) -> None:
        error_type = exception_type(counted)
        labels = (SYSTEM, op, self.subject, error_type)
        inst.finish(call, labels, None, True, error_type, exc)
        try:
            self._sent_spec.labels(*labels).add(1.0)
        except Exception:
            inst.drop(inst.dropped_metrics)

    async def __call__(self, request: Any) -> Any:
        """__call__ sends *request* and returns the decoded reply.

        Raises:
            DeadlineExceeded: the request context's deadline has passed; nothing was sent.
            PublishError: nats-py refused the publish (connection down, buffer full; closed).
        """
        ctx = current()
        timeout = self._timeout
        deadline = ctx.deadline
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceeded(
                    f"NATS request to {self.subject!r} not sent: the request's deadline passed "
                    f"{-remaining:.3f}s ago"
                )
            if remaining < timeout:
                timeout = remaining
        data = self._encode(request)
        headers = self._headers(ctx)
        inst = self._client
        call = inst.start(
            self._names["request"], self._attrs["request"], inject=headers, current=False
        )
        try:
            msg = await self.nc.request(
                self.subject, data, timeout=timeout, headers=headers or None
            )
            for after in self._after:
                after(msg)
            response = self._decode(msg)
        except Exception as exc:
            wrapped = _wrap_publish_error(exc, self.subject, self.nc)
            self._failed(inst, call, "request", wrapped, exc)
            if wrapped is exc:
                raise
            raise wrapped from exc
        except BaseException as exc:  # cancelled: recorded, then propagated
            self._failed(inst, call, "request", exc, exc)
            raise
        inst.finish(call, self._ok["request"])
        try:
            self._sent_ok["request"].add(1.0)
        except Exception:
            inst.drop(inst.dropped_metrics)
        return response

    async def publish(self, request: Any) -> None:
        """publish sends *request* without waiting for a reply (fire-and-forget).

        The message is handed to the connection's buffer; nats-py flushes it.

        Raises:
            PublishError: nats-py refused the publish (connection down, buffer full; closed).
        """
        data = self._encode(request)
        headers = self._headers(current())
        inst = self._producer
        call = inst.start(
            self._names["publish"], self._attrs["publish"], inject=headers, current=False
        )
        try:
            await self.nc.publish(self.subject, data, headers=headers or None)
        except Exception as exc:
            wrapped = _wrap_publish_error(exc, self.subject, self.nc)
            self._failed(inst, call, "publish", wrapped, exc)
            if wrapped is exc:
                raise
            raise wrapped from exc
        inst.finish(call, self._ok["publish"])
        try:
            self._sent_ok["publish"].add(1.0)
        except Exception:
            inst.drop(inst.dropped_metrics)
