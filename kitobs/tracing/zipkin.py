"""zipkin exports spans to a Zipkin collector as v2 JSON (``POST /api/v2/spans``).

kitobs' own encoder and sender: it needs neither the OpenTelemetry Zipkin exporter (deprecated
upstream) nor protobuf. Every body validates against ``ListOfSpans`` of the Zipkin v2 API:

- ``traceId`` 32 and ``id``/``parentId`` 16 lowercase hex characters; ``timestamp`` and
  ``duration`` integer microseconds, ``duration`` at least 1;
- ``kind`` only for CLIENT, SERVER, PRODUCER and CONSUMER (an internal span has none) and no
  field is ever sent as null;
- ``localEndpoint.serviceName`` is the service name, lowercased as Zipkin expects;
- a CLIENT or PRODUCER span with a ``server.address`` (or ``net.peer.name``) attribute gets a
  ``remoteEndpoint`` (``ipv4``/``ipv6`` when the address is an IP, else ``serviceName``, plus
  ``port`` from ``server.port``/``net.peer.port``);
- attributes become string tags (``true``/``false``, numbers in decimal, sequences as JSON
  arrays); an ERROR status becomes the ``error`` tag (its description) and
  ``otel.status_code``; events become annotations (the name, or ``{"name": {attributes}}`` as
  JSON, as OpenTelemetry writes them; equal ones in the same microsecond once); links become
  one ``otel.links`` tag, ``trace_id-span_id`` pairs separated by commas (Zipkin has no links).

Encoding runs on the batching processor's thread, never in the request. Behind the processor,
spans are redacted while they are encoded (`Exporter.export_redacted`): the values of secret span
and event attributes, by the processor's `kitobs.redact.Rule`, are sent as its marker, also in
``remoteEndpoint``; link attributes are never sent. Each key's tag prefix (``"http.route":``) is
kept per rule, so a span whose keys were seen before costs one set test per key for redaction.

Example::

    >>> from kitobs.tracing import Span
    >>> span = Span("get", 0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, start_ns=1_000)
    >>> span.end(3_000)
    >>> encode([span], "Shop")
    b'[{"traceId":"4bf92f3577b34da6a3ce929d0e0e4736","id":"00f067aa0ba902b7","name":"get","timestamp":1,"duration":2,"localEndpoint":{"serviceName":"shop"}}]'
"""

from __future__ import annotations

import ipaddress
import json
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from json.encoder import encode_basestring_ascii as _esc
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import SpanKind
from opentelemetry.trace.status import StatusCode

from kitobs.config import ZipkinSettings, key_name
from kitobs.errors import ConfigError
from kitobs.redact import Rule
from kitobs.tracing._span import Span

if TYPE_CHECKING:
    from kitobs.config import Settings
    from kitobs.tracing.config import Export, ExporterContext

__all__ = ["Exporter", "from_settings", "encode", "DEFAULT_ENDPOINT"]

#: Where a local Zipkin listens by default.
DEFAULT_ENDPOINT = "http://127.0.0.1:9411/api/v2/spans"

_KINDS = {
    SpanKind.CLIENT: ',"kind":"CLIENT"',
    SpanKind.SERVER: ',"kind":"SERVER"',
    SpanKind.PRODUCER: ',"kind":"PRODUCER"',
    SpanKind.CONSUMER: ',"kind":"CONSUMER"',
}
_REMOTE_KINDS = (SpanKind.CLIENT, SpanKind.PRODUCER)
_ERROR = StatusCode.ERROR
_dumps = json.JSONEncoder(separators=(",", ":"), default=str).encode


def _tag(value: Any) -> str:
    """Return *value* as a JSON string literal, the way Zipkin wants tag values."""
    if value.__class__ is str:
        return _esc(value)
    if value is True:
        return '"true"'
    if value is False:
        return '"false"'
    if isinstance(value, int | float):
        return _esc(str(value))
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return _esc(_dumps([_TEXT[v] if isinstance(v, bool) else v for v in value]))
    return _esc(str(value))


_TEXT = {True: "true", False: "false"}


def _remote(attrs: Mapping[str, Any]) -> str | None:
    host = attrs.get("server.address") or attrs.get("net.peer.name")
    if not host or not isinstance(host, str):
        return None
    endpoint: dict[str, Any] = {}
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        endpoint["serviceName"] = host.lower()
    else:
        endpoint["ipv4" if ip.version == 4 else "ipv6"] = str(ip)
    port = attrs.get("server.port") or attrs.get("net.peer.port")
    try:
        port = int(port) if port is not None else 0
    except (TypeError, ValueError):
        port = 0
    if 0 < port < 65536:
        endpoint["port"] = port
    return _dumps(endpoint)


class _Keys(dict[str, str]):
    """Attribute key -> its tag prefix (``"key":``) for the keys a rule leaves alone.

    A missing key is new or secret: ``secret`` maps each secret key seen to its whole tag (the
    marker as its value), so a span with secrets is still encoded by one comprehension. Both are
    filled on first sight, up to `_KEYS_MAX` keys; past that a key is decided every time.
    """

    __slots__ = ("rule", "secret")

    def __init__(self, rule: Rule | None) -> None:
        super().__init__()
        self.rule = rule
        self.secret: dict[str, str] = {}

    def tags(self, attrs: Mapping[str, Any]) -> list[str]:
        # The slow path: a key not seen before. Secret values never reach _tag.
        rule, out = self.rule, []
        for key, value in attrs.items():
            if value is None:
                continue
            prefix = self.get(key)
            if prefix is not None:
                out.append(prefix + _tag(value))
                continue
            tag = self.secret.get(key)
            if tag is None:
                prefix = _esc(key) + ":"
                if rule is not None and rule.is_redacted(key):
                    tag = prefix + _esc(rule.marker)
                    if len(self.secret) < _KEYS_MAX:
                        self.secret[key] = tag
                else:
                    if len(self) < _KEYS_MAX:
                        self[key] = prefix
                    tag = prefix + _tag(value)
            out.append(tag)
        return out


# Distinct attribute keys whose tag prefix (or secret tag) is kept per rule.
_KEYS_MAX = 4096


def _encode_span(span: Span, local: str, keys: _Keys) -> str:
    # Written by hand rather than through json.dumps of a dict: the keys are fixed, so only the
    # user's strings need escaping, and this is about twice as fast.
    start = span.start_ns // 1000
    duration = span.end_ns // 1000 - start
    out = (
        f'{{"traceId":"{span.trace_id:032x}","id":"{span.span_id:016x}",'
        f'"name":{_esc(span.name)},"timestamp":{start},'
        f'"duration":{duration if duration > 0 else 1},"localEndpoint":{local}'
    )
    if span.parent_id:
        out += f',"parentId":"{span.parent_id:016x}"'
    kind = _KINDS.get(span.kind)
    if kind is not None:
        out += kind
    attrs = span.attributes
    if attrs:
        # Redaction costs one set test per key here: a secret key's tag (marker included) comes
        # whole from keys.secret, a plain key's prefix from keys; a new key takes the slow path.
        secret = keys.secret
        try:
            tags = [
                keys[k] + _tag(v) if k not in secret else secret[k]
                for k, v in attrs.items()
                if v is not None
            ]
        except KeyError:
            tags = keys.tags(attrs)
        if span.kind in _REMOTE_KINDS:
            rule = keys.rule
            remote = _remote(attrs if rule is None else rule.attributes(attrs))
            if remote:
                out += f',"remoteEndpoint":{remote}'
    else:
        tags = []
    if span.status_code is _ERROR:
        tags.append('"otel.status_code":"ERROR"')
        tags.append(f'"error":{_esc(span.status_description or "true")}')
    if span.links:  # only the ids are sent: link attributes never reach Zipkin
        links = ",".join(
            f"{ln.context.trace_id:032x}-{ln.context.span_id:016x}" for ln in span.links
        )
        tags.append(f'"otel.links":"{links}"')
    if tags:
        out += ',"tags":{' + ",".join(tags) + "}"
    if span.events:
        out += ',"annotations":[' + ",".join(_annotations(span.events, keys.rule)) + "]"
    return out + "}"


def _annotations(
    events: Sequence[tuple[str, int, Mapping[str, Any] | None]], rule: Rule | None
) -> list[str]:
    # The spec wants unique annotations: two equal events in one microsecond are sent once.
    seen: set[str] = set()
    out = []
    for name, ts, attributes in events:
        if not attributes:
            value = _esc(name)
        elif rule is None:
            value = _esc(_dumps({name: attributes}))
        else:
            value = _esc(_dumps({name: rule.attributes(attributes)}))
        item = f'{{"timestamp":{ts // 1000},"value":{value}}}'
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def _local(service_name: str) -> str:
    return _dumps({"serviceName": service_name.lower() or "unknown_service"})


def encode(spans: Sequence[Span], service_name: str, *, redact: Rule | None = None) -> bytes:
    """encode gives a Zipkin v2 ``ListOfSpans`` JSON body, e.g. ``encode(batch, "shop")``.

    With *redact*, the values of secret span and event attributes are sent as the rule's marker.
    """
    local, keys = _local(service_name), _Keys(redact)
    return ("[" + ",".join([_encode_span(span, local, keys) for span in spans]) + "]").encode()


class Exporter:
    """Exporter POSTs batches to a Zipkin collector, e.g. ``Exporter(url, service_name="shop")``.

    Implements `kitobs.tracing.Exporter`; put it behind the batching processor (see
    `kitobs.tracing.config.tracer_from_settings`). A non-2xx answer or a network error raises, so
    the processor counts the batch as dropped. Proxies from the environment are not used.

    Raises:
        ConfigError: *endpoint* is not an http(s) URL, or *timeout* is not positive.
    """

    __slots__ = ("_keys", "_local", "_opener", "endpoint", "service_name", "timeout")

    def __init__(
        self, endpoint: str = DEFAULT_ENDPOINT, *, service_name: str, timeout: float = 5.0
    ) -> None:
        if not endpoint.startswith(("http://", "https://")):
            raise ConfigError(
                "must be an http or https URL",
                key=key_name(ZipkinSettings, "endpoint"),
                value=endpoint,
                allowed="a URL such as http://127.0.0.1:9411/api/v2/spans",
            )
        if not timeout > 0:
            raise ConfigError(
                "must be positive", key=key_name(ZipkinSettings, "timeout"), value=timeout
            )
        self.endpoint = endpoint
        self.service_name = service_name
        self.timeout = timeout
        self._local = _local(service_name)
        # Tag prefixes per redaction rule (None: no rule), kept across batches.
        self._keys: dict[Rule | None, _Keys] = {}
        # A collector is reached directly: an HTTP proxy meant for outbound traffic would
        # otherwise intercept loopback and cluster-local URLs.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def export(self, spans: Sequence[Span], timeout: float) -> None:
        """export POSTs *spans* as one JSON body; raises on a network error or a non-2xx answer.

        Attributes are sent as they are; the batching processor calls `export_redacted`.
        """
        self.export_redacted(spans, timeout, None)

    def export_redacted(self, spans: Sequence[Span], timeout: float, rule: Rule | None) -> None:
        """export_redacted is `export` with secret span and event attribute values, by *rule*,
        sent as its marker: redacting while encoding costs about nothing per span.
        """
        keys = self._keys.get(rule)
        if keys is None:
            keys = self._keys.setdefault(rule, _Keys(rule))
        local = self._local
        body = ("[" + ",".join([_encode_span(span, local, keys) for span in spans]) + "]").encode()
        self._post(body, timeout)

    def _post(self, body: bytes, timeout: float) -> None:
        request = urllib.request.Request(
            self.endpoint,
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with self._opener.open(request, timeout=min(timeout, self.timeout)) as response:
                response.read()
        except urllib.error.HTTPError as err:
            err.close()
            raise OSError(f"zipkin answered {err.code} {err.reason}") from None


def from_settings(settings: Settings, context: ExporterContext) -> Export:
    """from_settings builds the exporter ``[tracing.zipkin]`` describes."""
    from kitobs.tracing.config import Export

    z = settings.tracing.zipkin
    return Export(
        Exporter(z.endpoint, service_name=context.service_name, timeout=z.timeout), z.timeout
    )
