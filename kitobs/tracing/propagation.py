"""Propagation writes the current trace into request headers and reads it back on the other side.

Formats, by OpenTelemetry's names (``OTEL_PROPAGATORS``):

- ``tracecontext``: W3C ``traceparent`` and ``tracestate`` (`TraceContext`);
- ``baggage``: W3C ``baggage`` (`Baggage`), stored as OpenTelemetry baggage;
- ``b3``: one ``b3`` header (`B3Single`); ``b3multi``: ``X-B3-TraceId``, ``X-B3-SpanId``,
  ``X-B3-Sampled`` (`B3Multi`).

A carrier is a headers mapping. Reading matches names case-insensitively and ignores malformed
headers (a bad header never fails a request); writing uses lowercase names, as HTTP/2 requires
and as OpenTelemetry's propagators (whose dict getter is case-sensitive) expect. What `extract`
returns is an OpenTelemetry `Context` holding a non-recording remote span, so it works as the
*context* argument of `kitobs.tracing.Tracer.start_span` and of OpenTelemetry's own tracers.

A B3 header without a sampling decision is read as unsampled, as OpenTelemetry does.

Example::

    >>> headers = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    >>> ctx = TraceContext().extract(headers, Context())
    >>> out = {}
    >>> B3Single().inject(out, ctx)
    >>> out
    {'b3': '0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1'}
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, MutableMapping
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

from opentelemetry import baggage as otel_baggage
from opentelemetry.context.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from kitobs._otel_context import SPAN_KEY
from kitobs.config import TracingSettings, key_name
from kitobs.errors import ConfigError
from kitobs.tracing._span import span_ids

if TYPE_CHECKING:
    from kitobs.tracing._api import Propagator

__all__ = [
    "TraceContext",
    "Baggage",
    "B3Single",
    "B3Multi",
    "NAMES",
    "from_names",
    "inject",
    "extract",
]

#: Propagator names accepted by `from_names`; ``none`` turns propagation off.
NAMES: tuple[str, ...] = ("tracecontext", "baggage", "b3", "b3multi", "none")

_set_item = dict.__setitem__
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_HEX32 = re.compile(r"[0-9a-f]{32}|[0-9a-f]{16}")
_HEX16 = re.compile(r"[0-9a-f]{16}")
_MAX_BAGGAGE_ENTRIES = 180
_MAX_BAGGAGE_BYTES = 8192


def _header(carrier: Mapping[str, str], name: str) -> str | None:
    """Return header *name* (lowercase), looked up case-insensitively; lists give their first."""
    value: object = carrier.get(name)
    if value is None:
        for key, candidate in carrier.items():
            if key.lower() == name:
                value = candidate
                break
        else:
            return None
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    return value.strip() if isinstance(value, str) else None


def _with_remote(
    context: Context, trace_id: int, span_id: int, sampled: bool, state: TraceState | None = None
) -> Context:
    span = NonRecordingSpan(
        SpanContext(
            trace_id,
            span_id,
            True,
            TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT),
            state,
        )
    )
    ctx = Context(context)
    _set_item(ctx, SPAN_KEY, span)
    return ctx


class TraceContext:
    """TraceContext reads and writes W3C ``traceparent`` and ``tracestate``.

    Implements `kitobs.tracing.Propagator`. Version ``ff``, all-zero ids and malformed values are
    ignored; later versions are read by their version-00 prefix, as the spec asks.
    """

    __slots__ = ()

    def inject(self, carrier: MutableMapping[str, str], context: Context) -> None:
        """inject writes ``traceparent`` (and ``tracestate`` when not empty)."""
        ids = span_ids(context)
        if ids is None:
            return
        trace_id, span_id, sampled, state = ids
        carrier["traceparent"] = f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"
        if state:
            carrier["tracestate"] = state.to_header()

    def extract(self, carrier: Mapping[str, str], context: Context) -> Context:
        """extract returns *context* with the remote parent of ``traceparent``, if valid."""
        value = _header(carrier, "traceparent")
        if not value:
            return context
        match = _TRACEPARENT.fullmatch(value)
        if match is None:
            return context
        version, trace_hex, span_hex, flags, rest = match.groups()
        if version == "ff" or (version == "00" and rest):
            return context
        trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
        if not trace_id or not span_id:
            return context
        state = None
        raw_state = _header(carrier, "tracestate")
        if raw_state:
            state = TraceState.from_header([raw_state])
        return _with_remote(context, trace_id, span_id, bool(int(flags, 16) & 1), state)


class Baggage:
    """Baggage reads and writes the W3C ``baggage`` header as OpenTelemetry baggage.

    Implements `kitobs.tracing.Propagator`. Entry properties are dropped; more than 180 entries or
    8192 bytes are cut off, as the spec allows.
    """

    __slots__ = ()

    def inject(self, carrier: MutableMapping[str, str], context: Context) -> None:
        """inject writes ``baggage`` when the context carries any."""
        entries = otel_baggage.get_all(context)
        if entries:
            carrier["baggage"] = ",".join(
                f"{quote(str(k), safe='')}={quote(str(v), safe='')}" for k, v in entries.items()
            )

    def extract(self, carrier: Mapping[str, str], context: Context) -> Context:
        """extract returns *context* with the header's entries added to its baggage."""
        value = _header(carrier, "baggage")
        if not value or len(value) > _MAX_BAGGAGE_BYTES:
            return context
        for count, member in enumerate(value.split(",")):
            if count >= _MAX_BAGGAGE_ENTRIES:
                break
            pair = member.split(";", 1)[0]
            name, sep, raw = pair.partition("=")
            name = name.strip()
            if not sep or not name:
                continue
            context = otel_baggage.set_baggage(unquote(name), unquote(raw.strip()), context)
        return context


def _b3_sampled(value: str | None, debug: str | None) -> bool:
    return debug == "1" or (value or "").lower() in ("1", "true", "d")


class B3Single:
    """B3Single reads and writes the single ``b3`` header, ``{trace}-{span}-{sampled}``.

    Implements `kitobs.tracing.Propagator`. Reading accepts 16- or 32-hex trace ids (the short form
    is zero-padded) and the ``d`` (debug) flag, which counts as sampled; ``b3: 0`` is ignored.
    When no ``b3`` header is present it falls back to the multi-header form, as B3 readers do.
    """

    __slots__ = ()

    def inject(self, carrier: MutableMapping[str, str], context: Context) -> None:
        """inject writes ``b3``."""
        ids = span_ids(context)
        if ids is None:
            return
        trace_id, span_id, sampled, _ = ids
        carrier["b3"] = f"{trace_id:032x}-{span_id:016x}-{'1' if sampled else '0'}"

    def extract(self, carrier: Mapping[str, str], context: Context) -> Context:
        """extract returns *context* with the remote parent of ``b3``, if valid."""
        value = _header(carrier, "b3")
        if value is None:
            return B3Multi().extract(carrier, context)
        parts = value.lower().split("-")
        if len(parts) < 2 or len(parts) > 4:
            return context
        if not _HEX32.fullmatch(parts[0]) or not _HEX16.fullmatch(parts[1]):
            return context
        trace_id, span_id = int(parts[0], 16), int(parts[1], 16)
        if not trace_id or not span_id:
            return context
        sampled = _b3_sampled(parts[2] if len(parts) > 2 else None, None)
        return _with_remote(context, trace_id, span_id, sampled)


class B3Multi:
    """B3Multi reads and writes ``X-B3-TraceId``, ``X-B3-SpanId`` and ``X-B3-Sampled``.

    Implements `kitobs.tracing.Propagator`. ``X-B3-Flags: 1`` (debug) counts as sampled.
    """

    __slots__ = ()

    def inject(self, carrier: MutableMapping[str, str], context: Context) -> None:
        """inject writes ``x-b3-traceid``, ``x-b3-spanid`` and ``x-b3-sampled``."""
        ids = span_ids(context)
        if ids is None:
            return
        trace_id, span_id, sampled, _ = ids
        carrier["x-b3-traceid"] = f"{trace_id:032x}"
        carrier["x-b3-spanid"] = f"{span_id:016x}"
        carrier["x-b3-sampled"] = "1" if sampled else "0"

    def extract(self, carrier: Mapping[str, str], context: Context) -> Context:
        """extract returns *context* with the remote parent of the ``X-B3-*`` headers, if valid."""
        trace_hex = (_header(carrier, "x-b3-traceid") or "").lower()
        span_hex = (_header(carrier, "x-b3-spanid") or "").lower()
        if not _HEX32.fullmatch(trace_hex) or not _HEX16.fullmatch(span_hex):
            return context
        trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
        if not trace_id or not span_id:
            return context
        sampled = _b3_sampled(_header(carrier, "x-b3-sampled"), _header(carrier, "x-b3-flags"))
        return _with_remote(context, trace_id, span_id, sampled)


def from_names(names: Iterable[str]) -> tuple[Propagator, ...]:
    """from_names builds propagators by name, e.g. ``from_names(["tracecontext", "baggage"])``.

    ``none`` alone turns propagation off.

    Raises:
        ConfigError: an unknown name, or ``none`` together with other names.
    """
    wanted = [n.strip().lower() for n in names if n.strip()]
    if "none" in wanted:
        if len(wanted) > 1:
            raise ConfigError(
                "'none' cannot be combined with other propagators",
                key=key_name(TracingSettings, "propagators"),
                value=",".join(wanted),
                allowed=NAMES,
            )
        return ()
    out: list[Propagator] = []
    for name in wanted:
        if name == "tracecontext":
            out.append(TraceContext())
        elif name == "baggage":
            out.append(Baggage())
        elif name == "b3":
            out.append(B3Single())
        elif name == "b3multi":
            out.append(B3Multi())
        else:
            raise ConfigError(
                "unknown propagator",
                key=key_name(TracingSettings, "propagators"),
                value=name,
                allowed=NAMES,
            )
    return tuple(out)


def inject(
    propagators: Iterable[Propagator], carrier: MutableMapping[str, str], context: Context
) -> None:
    """inject writes *context* into *carrier* with each of *propagators*."""
    for propagator in propagators:
        propagator.inject(carrier, context)


def extract(
    propagators: Iterable[Propagator], carrier: Mapping[str, str], context: Context
) -> Context:
    """extract reads *carrier* with each of *propagators* in turn, later ones winning."""
    for propagator in propagators:
        context = propagator.extract(carrier, context)
    return context
