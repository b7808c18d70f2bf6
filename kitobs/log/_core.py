"""The logger behind `kitobs.log.new`: context, levels, timestamps, caller and trace ids.

Everything that can be decided when a logger is built is decided then: bound values are encoded
once into a string, disabled levels are a no-op function, the timestamp, caller and trace-id code
is only present when configured. A call then encodes its own key/values and makes one write.

The key/values go through a function compiled for the call's *shape* (its tuple of keys) the
first time that shape is logged, the way dataclasses and attrs generate ``__init__``: the key
fragments and redaction are fixed in it, and each value is encoded by an expression chosen for the
type seen then, with a type check falling back to the general encoder. Generated source holds only
generated names; keys and values reach it as data, never as code.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol, cast

from kitobs.config import LogSettings, key_name
from kitobs.errors import ConfigError
from kitobs.log.level import LEVELS, enabled, parse_level
from kitobs.redact import Rule
from kitobs.redact import scrub as _scrub

__all__ = [
    "Codec",
    "ContextLogger",
    "Emit",
    "ErrorHandler",
    "MISSING",
    "Writer",
    "TraceContext",
    "build",
    "nop_emit",
    "render_other",
]

#: MISSING is written as the value of a key that has none, e.g. ``log("a", 1, "b")``.
MISSING = "(MISSING)"

# Caches stop growing here, so a program logging unbounded keys or values cannot leak memory.
_CACHE_MAX = 4096
# Only short strings are worth caching: they repeat (messages, methods, routes), long ones rarely.
_STR_CACHE_LEN = 64
_SURROGATES = re.compile("[\ud800-\udfff]")
# Values whose own keys are redacted (see `kitobs.redact.scrub`).
_CONTAINERS = (dict, list, tuple)
# Compiled call shapes per logger family: call sites are few, but a program building keys from
# data must not compile without end; past the limits the general loop encodes the line.
_SHAPES_MAX = 512
_SHAPE_PAIRS_MAX = 64


class Emit(Protocol):
    """Emit writes one line from alternating keys and values, e.g. ``emit("msg", "hi")``."""

    def __call__(self, *keyvals: object) -> None: ...


class Writer(Protocol):
    """Writer receives whole encoded lines, e.g. `kitobs.log.writer.FileWriter`."""

    def write(self, data: bytes) -> None:
        """write takes one or more whole encoded lines, each ending in a newline."""

    def flush(self) -> None:
        """flush sends what is buffered on to the operating system."""

    def close(self) -> None:
        """close flushes and releases the output; later writes are dropped."""


#: TraceContext returns the active ``(trace_id, span_id)`` in hex, or None outside a span.
#: A hook whose ids are always lowercase hex str (like `kitobs.tracing.current_ids`) may say so
#: with an attribute ``hex_ids = True``: its ids are then written without being checked.
TraceContext = Callable[[], tuple[str, str] | None]
#: ErrorHandler receives errors a logger could not raise, e.g. a failed write.
ErrorHandler = Callable[[BaseException], None]


@dataclass(frozen=True, slots=True)
class Codec:
    """Codec is one line encoding, e.g. `kitobs.log.logfmt.CODEC`.

    ``key_text`` returns a key with its ``=``/``:``; ``string``, ``float_`` and ``other`` encode
    values and never raise; a line is ``open_`` + fragments joined by ``sep`` + ``close``.
    """

    name: str
    sep: str
    open_: str
    close: str
    key_text: Callable[[str], str]
    string: Callable[[str], str]
    float_: Callable[[float], str]
    other: Callable[[object], str]


def render_other(
    value: object, string: Callable[[str], str], float_: Callable[[float], str]
) -> str:
    """render_other encodes any value with a codec's string and float encoders; it never raises.

    For example ``render_other(None, ...)`` is ``null`` and an object whose ``str()`` raises is
    ``(UNPRINTABLE TypeName)``.
    """
    try:
        if value is None:
            return "null"
        if value is True:
            return "true"
        if value is False:
            return "false"
        if isinstance(value, str):
            return string(str.__str__(value))
        if isinstance(value, int):
            return int.__repr__(value)
        if isinstance(value, float):
            return float_(float(value))
        if isinstance(value, bytes | bytearray | memoryview):
            return string(bytes(value).decode("utf-8", "replace"))
        text = str(value)
        if not isinstance(text, str):  # pragma: no cover - str() always returns a str
            raise TypeError
        return string(str.__str__(text))
    except Exception:
        return string(f"(UNPRINTABLE {type(value).__name__})")


def _text(key: object) -> str:
    """Return a key as text; keys are usually str already."""
    if type(key) is str:
        return key
    try:
        if key is None:
            return "null"
        if isinstance(key, bytes):
            return key.decode("utf-8", "replace")
        return str.__str__(str(key))
    except Exception:
        return f"(UNPRINTABLE {type(key).__name__})"


class _Missing:
    """The value bound to a trailing key without one (go-kit's ErrMissingValue)."""

    __slots__ = ()

    def __str__(self) -> str:
        return MISSING


_MISSING_VALUE = _Missing()


def nop_emit(*keyvals: object) -> None:
    """nop_emit does nothing: it is what a filtered-out level method is, e.g. ``logger.debug``."""


# --------------------------------------------------------------------------------------------
# Timestamps: the date part is formatted once per second, only the microseconds per call.


def _stamper(time_format: str, open_: str, key: str, codec: Codec) -> Callable[[], str]:
    if time_format == "none":
        return open_.__str__  # a C call returning the constant: cheaper than a lambda
    quote = '"' if codec.name == "json" else ""
    head = open_ + key
    time_ns = time.time_ns
    gmtime = time.gmtime
    cached: tuple[int, str] = (-1, "")

    def date(sec: int) -> str:
        return "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}".format(*gmtime(sec)[:6])

    if time_format == "rfc3339":

        def stamp() -> str:
            nonlocal cached
            sec = time_ns() // 1_000_000_000
            c = cached
            if c[0] != sec:
                c = cached = (sec, head + quote + date(sec) + "Z" + quote)
            return c[1]

    elif time_format == "unix":

        def stamp() -> str:
            ns = time_ns()
            return f"{head}{ns // 1_000_000_000}.{ns // 1000 % 1_000_000:06d}"

    elif time_format == "unix_ms":

        def stamp() -> str:
            return head + str(time_ns() // 1_000_000)

    else:
        raise ConfigError(
            "is not a time format",
            key=key_name(LogSettings, "time_format"),
            value=time_format,
            allowed=("rfc3339_micro", "rfc3339", "unix", "unix_ms", "none"),
        )
    return stamp


# The last three digits of the microseconds, by microsecond within the millisecond.
_DIGITS3 = tuple(f"{i:03d}" for i in range(1000))


class _Clock:
    """The rfc3339_micro timestamp up to the millisecond, re-formatted once a millisecond.

    ``state`` is ``(start, end, text)``: the cached millisecond in ns since the epoch and the line
    up to its digits. One attribute holding a tuple, so a thread reads a consistent triple even
    while another refreshes it; a time outside the triple's millisecond refreshes.
    """

    __slots__ = ("head", "sec", "sec_text", "state", "tail")

    def __init__(self, head: str, tail: str) -> None:
        self.head = head
        self.tail = tail
        self.sec = -1
        self.sec_text = ""  # the line up to the decimal point, for second `sec`
        self.state: tuple[int, int, str] = (0, 0, "")

    def stamp(self) -> str:
        """Return the whole timestamp fragment; the emitters inline this."""
        ns = time.time_ns()
        start, end, text = self.state
        if not start <= ns < end:
            start, end, text = self.refresh(ns)
        return text + _DIGITS3[(ns - start) // 1000] + self.tail

    def refresh(self, ns: int) -> tuple[int, int, str]:
        """Return (and keep) the state for the millisecond holding *ns*."""
        ms = ns // 1_000_000
        sec = ms // 1000
        if sec != self.sec:
            date = "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}.".format(*time.gmtime(sec)[:6])
            self.sec_text = self.head + date
            self.sec = sec
        start = ms * 1_000_000
        state = self.state = (start, start + 1_000_000, self.sec_text + _DIGITS3[ms % 1000])
        return state


# --------------------------------------------------------------------------------------------
# The state one logger and all its children share.


class _Family:
    __slots__ = (
        "caller",
        "callers",
        "clock",
        "codec",
        "encode",
        "generic",
        "hidden",
        "id_quote",
        "keys",
        "level_key",
        "level_keys",
        "marker",
        "minimum",
        "missing",
        "nonfinite",
        "on_error",
        "redacted",
        "scrub",
        "shapes",
        "sink",
        "stamp",
        "stamped",
        "strs",
        "trace_context",
        "trace_keys",
        "trusted_ids",
    )

    def __init__(
        self,
        codec: Codec,
        sink: Writer,
        *,
        level: str,
        level_key: str,
        time_key: str,
        time_format: str,
        caller: bool,
        redacted: Callable[[str], bool] | None,
        marker: str,
        trace_context: TraceContext | None,
        on_error: ErrorHandler,
    ) -> None:
        for name, value in (("log.level_key", level_key), ("log.time_key", time_key)):
            if not isinstance(value, str) or not value:
                raise ConfigError("must be a non-empty key name", key=name, value=value)
        self.codec = codec
        self.sink = sink
        self.minimum = parse_level(level)
        self.level_key = level_key
        # Keys that, leading a `ContextLogger.log` call with a level name as value, set its level.
        self.level_keys = ("level",) if level_key == "level" else ("level", level_key)
        self.caller = caller
        self.redacted = redacted
        # Dict, list and tuple values have the values of their own secret keys replaced.
        self.scrub: Callable[[object], object] | None = None
        if redacted is not None:
            # A Rule's cached verdicts are asked directly (a C call rather than its __call__), and
            # its known-plain keys clear a whole dict at once.
            if isinstance(redacted, Rule):
                self.scrub = partial(
                    _scrub,
                    is_redacted=redacted.is_redacted,
                    marker=marker,
                    known_plain=redacted.known_plain,
                )
            else:
                self.scrub = partial(_scrub, is_redacted=redacted, marker=marker)
        self.trace_context = trace_context
        self.on_error = on_error
        self.stamped = time_format != "none"
        # For the default format the emitters read the clock inline (see _Clock); other formats
        # call a stamp function.
        self.clock: _Clock | None = None
        if time_format == "rfc3339_micro":
            quote = '"' if codec.name == "json" else ""
            self.clock = _Clock(codec.open_ + codec.key_text(time_key) + quote, "Z" + quote)
            self.stamp = self.clock.stamp
        else:
            self.stamp = _stamper(time_format, codec.open_, codec.key_text(time_key), codec)
        self.marker = codec.string(marker)
        self.missing = codec.string(MISSING)
        # The float spellings a codec changes (JSON has no inf/nan), looked up after float repr.
        self.nonfinite = {
            r: codec.float_(float(r)) for r in ("inf", "-inf", "nan") if codec.float_(float(r)) != r
        }
        self.keys: dict[object, str] = {}
        self.hidden: dict[object, str] = {}
        self.strs: dict[object, str] = {}
        self.callers: dict[str, tuple[str, str]] = {}
        self.encode = _value_encoder(self)
        # Functions encoding a call's key/values, by the tuple of its keys (see `body`).
        self.shapes: dict[tuple[object, ...], Callable[..., str]] = {}
        self.generic = _generic_body(self)
        sep = codec.sep
        self.trace_keys = (sep + codec.key_text("trace_id"), sep + codec.key_text("span_id"))
        # How the codec quotes a plain alphanumeric string: '"' for JSON, nothing for logfmt.
        plain = codec.string("a")
        self.id_quote = plain[: plain.index("a")]
        self.trusted_ids = getattr(trace_context, "hex_ids", False) is True

    def key(self, key: object) -> tuple[str, bool]:
        """Return a key's fragment (separator included) and whether its value is redacted."""
        try:
            frag = self.hidden.get(key)
            if frag is not None:
                return frag, True
        except TypeError:
            pass  # an unhashable key: encoded, never cached
        text = _text(key)
        frag = self.codec.sep + self.codec.key_text(text)
        hide = self.redacted is not None and self.redacted(text)
        cache = self.hidden if hide else self.keys
        # Only str keys are cached: 1, 1.0 and True are one dict key but three different texts.
        if type(key) is str and len(cache) < _CACHE_MAX:
            cache[key] = frag
        return frag, hide

    def body(self, keyvals: tuple[object, ...]) -> Callable[..., str]:
        """Return the function encoding calls shaped like *keyvals*, compiled on first sight.

        The function takes the call's key/values and returns their fragments joined. Shapes with
        non-str keys, an odd count, too many pairs, or past the cache limit get the general loop.
        """
        n = len(keyvals)
        if n % 2 or n > 2 * _SHAPE_PAIRS_MAX or len(self.shapes) >= _SHAPES_MAX:
            return self.generic
        keys = keyvals[::2]
        for key in keys:
            if type(key) is not str:
                return self.generic
        if keys and keys[0] in self.level_keys:
            # Not cached: `log` must see each such call to read its level (see `_Relevel`).
            return self.generic
        try:
            fn = _compile_shape(self, keyvals)
        except Exception:  # pragma: no cover - generated source always compiles
            fn = self.generic  # kept, so a shape that fails is not compiled again per call
        self.shapes[keys] = fn
        return fn

    def string(self, value: str) -> str:
        """Encode a str value, caching short ones."""
        enc = self.codec.string(value)
        if len(value) <= _STR_CACHE_LEN and len(self.strs) < _CACHE_MAX:
            self.strs[value] = enc
        return enc

    def where(self, filename: str) -> tuple[str, str]:
        """Return the caller fragment up to the line number, and what closes it."""
        enc = self.codec.string(os.path.basename(filename) + ":")
        opened = enc.endswith('"')  # quoted: the line number goes inside the quotes
        head = self.codec.sep + self.codec.key_text("caller") + (enc[:-1] if opened else enc)
        entry = (head, '"' if opened else "")
        if len(self.callers) < _CACHE_MAX:
            self.callers[filename] = entry
        return entry

    def trace(self, ids: tuple[str, str]) -> str:
        """Encode the trace and span ids; ids from a well-behaved hook are str."""
        trace_id, span_id = ids
        tk, sk = self.trace_keys
        if type(trace_id) is str and type(span_id) is str:
            # Hex ids (what tracers give) need no escaping in either format: skip the encoder.
            if (
                trace_id.isascii()
                and trace_id.isalnum()
                and span_id.isascii()
                and span_id.isalnum()
            ):
                q = self.id_quote
                return f"{tk}{q}{trace_id}{q}{sk}{q}{span_id}{q}"
            return tk + self.codec.string(trace_id) + sk + self.codec.string(span_id)
        return tk + self.codec.other(trace_id) + sk + self.codec.other(span_id)

    def pairs(self, keyvals: tuple[object, ...]) -> str:
        """Encode key/values slowly and safely: for bound context and the fallback path."""
        out = []
        n = len(keyvals)
        for i in range(0, n, 2):
            frag, hide = self.key(keyvals[i])
            if hide:
                out.append(frag + self.marker)
            elif i + 1 < n:
                value = keyvals[i + 1]
                if self.scrub is not None and isinstance(value, _CONTAINERS):
                    value = self.scrub(value)
                out.append(frag + self.codec.other(value))
            else:
                out.append(frag + self.missing)
        return "".join(out)

    def safe_line(
        self, head: str, ctx: str, tail: str, keyvals: tuple[object, ...], frame: object
    ) -> bytes:
        """Build a line without the fast paths, for when they raised; never raises itself."""
        parts = [self.stamp(), head]
        if frame is not None:
            code = getattr(frame, "f_code", None)
            prefix, close = self.where(getattr(code, "co_filename", "?"))
            parts.append(prefix + str(getattr(frame, "f_lineno", 0)) + close)
        if self.trace_context is not None:
            try:
                ids = self.trace_context()
                if ids is not None:
                    parts.append(self.trace(ids))
            except Exception as err:
                self.on_error(err)
        parts.append(ctx)
        parts.append(self.pairs(keyvals))
        parts.append(tail)
        return _SURROGATES.sub("\ufffd", "".join(parts)).encode("utf-8", "replace")


def _value_encoder(fam: _Family) -> Callable[[object], str]:
    """Build the encoder for values the short-string cache missed; it never raises."""
    str_slow = fam.string
    other = fam.codec.other
    scrub = fam.scrub
    nonfinite = fam.nonfinite
    int_repr, float_repr = int.__repr__, float.__repr__
    str_, int_, float_ = str, int, float

    def encode(v: object) -> str:
        # Ordered by how often each type is logged after short strings and ints (handled inline).
        t = v.__class__
        if t is float_:
            e = float_repr(v)
            # x - x is 0.0 for every finite float (no lookup, no hashing of the text).
            return e if v - v == 0.0 or e not in nonfinite else nonfinite[e]  # type: ignore[operator]
        if v is True:
            return "true"
        if v is False:
            return "false"
        if v is None:
            return "null"
        if t is str_:
            return str_slow(v)  # type: ignore[arg-type]
        if t is int_:
            return int_repr(v)
        if scrub is not None and isinstance(v, _CONTAINERS):
            v = scrub(v)
        return other(v)

    return encode


def _generic_body(fam: _Family) -> Callable[..., str]:
    """Build the loop that encodes any call's key/values, for shapes that are not compiled."""
    kget = fam.keys.get
    sget = fam.strs.get
    key_slow = fam.key
    encode = fam.encode
    marker = fam.marker
    join = "".join
    int_ = int
    int_repr = int.__repr__

    def body(*keyvals: object) -> str:
        if len(keyvals) % 2:
            raise ValueError("odd key/values")  # the safe path marks the missing value
        parts: list[str] = []
        append = parts.append
        it = iter(keyvals)
        for k in it:
            ek = kget(k)
            v = next(it)
            if ek is None:
                ek, hide = key_slow(k)
                if hide:
                    append(ek)
                    append(marker)
                    continue
            append(ek)
            e = sget(v)
            if e is None:
                e = int_repr(v) if v.__class__ is int_ else encode(v)
            append(e)
        return join(parts)

    return body


def _compile_shape(
    fam: _Family, keyvals: tuple[object, ...], *, values_only: bool = False
) -> Callable[..., str]:
    """Generate the function for one shape: its keys' fragments fixed, values typed by *keyvals*.

    For ``("msg", "hi", "n", 7)`` the source is, with ``k0``, ``k1`` the encoded keys::

        def body(_k0, v0, _k1, v1):
            return f"{k0}{sget(v0) or E(v0)}{k1}{int_repr(v1) if v1.__class__ is int_ else E(v1)}"

    Every value expression checks its type, so a later call with other types is still encoded
    right (by ``E``, the general encoder). A redacted key writes the marker and ignores its value.
    With *values_only* the function takes the values alone (``body(v0, v1)``), for `prepared`.
    """
    ns: dict[str, object] = {
        "E": fam.encode,
        "sget": fam.strs.get,
        "int_repr": int.__repr__,
        "float_repr": float.__repr__,
        "int_": int,
        "float_": float,
        "NF": fam.nonfinite,
        "M": fam.marker,
    }
    params: list[str] = []
    out: list[str] = []
    for i in range(0, len(keyvals), 2):
        n = i // 2
        v = f"v{n}"
        params += [v] if values_only else [f"_k{n}", v]
        frag, hide = fam.key(keyvals[i])
        # The key's fragment as a literal: repr() of a str is a Python literal for exactly it.
        out.append(repr(frag))
        if hide:
            out.append(repr(fam.marker))
            continue
        t = type(keyvals[i + 1])
        if t is str:
            expr = f"sget({v}) or E({v})"  # "" encodes to "" (falsy): E then returns it again
        elif t is int:
            expr = f"int_repr({v}) if {v}.__class__ is int_ else E({v})"
        elif t is float and fam.nonfinite:
            # x - x is 0.0 for every finite float and NaN for inf and NaN: no hashing of the text.
            expr = (
                f"(float_repr({v}) if {v} - {v} == 0.0 else NF[float_repr({v})])"
                f" if {v}.__class__ is float_ else E({v})"
            )
        elif t is float:
            expr = f"float_repr({v}) if {v}.__class__ is float_ else E({v})"
        elif t is bool:
            expr = f"'true' if {v} is True else 'false' if {v} is False else E({v})"
        elif t is type(None):
            expr = f"'null' if {v} is None else E({v})"
        else:
            expr = f"E({v})"
        out.append(f'f"{{({expr})}}"')
    # Adjacent literals join at compile time into one f-string.
    source = f"def body({', '.join(params)}):\n    return f'' {' '.join(out)}\n"
    exec(compile(source, "<kitobs.log shape>", "exec"), ns)
    return cast(Callable[..., str], ns["body"])


class _Relevel(Exception):
    """Raised by `log`'s shape lookup for a call led by a level key: write it at that level."""

    __slots__ = ("level",)

    def __init__(self, level: str) -> None:
        self.level = level


# The level values a leading level key may name, in lowercase, with the aliases parse_level takes.
_LEVEL_NAMES = {
    **{name: name for name in LEVELS},
    "warning": "warn",
    "err": "error",
    "critical": "error",
    "fatal": "error",
}

#: _LevelWriter writes a `log` call led by a level key at that level: ``relevel(level, keyvals)``.
_LevelWriter = Callable[[str, tuple[object, ...]], None]


def _leading_level(fam: _Family, keyvals: tuple[object, ...]) -> str | None:
    """Return the level a call's leading level key names, or None; it never raises."""
    try:
        if len(keyvals) >= 2 and keyvals[0] in fam.level_keys:
            value = keyvals[1]
            if type(value) is str:
                return _LEVEL_NAMES.get(value.lower())
    except Exception:  # a key whose __eq__ raises is no level key
        pass
    return None


def _emitter(
    fam: _Family,
    head: str,
    ctx: str,
    tail: str,
    dynamic_caller: bool,
    depth: int = 1,
    relevel: _LevelWriter | None = None,
) -> Emit:
    """Build the function that writes one line at one level; every branch is fixed here.

    *depth* is how many frames up the caller is (for a dynamic caller): 1 is whoever calls it.
    With *relevel* it is `log`: a call led by a level key naming a level goes to *relevel*. The
    compiled shapes never hold such calls (`_Family.body`), so only a shape miss checks for one,
    and an ordinary call runs exactly the code it runs without *relevel*.
    """
    stamp = fam.stamp
    clock = fam.clock
    plain_head = head  # the safe path stamps the whole timestamp itself
    if clock is not None:
        head = clock.tail + head
    refresh = clock.refresh if clock is not None else None
    time_ns = time.time_ns
    shape = fam.shapes.get
    body_for = fam.body
    if relevel is not None:
        plain_body_for = fam.body

        def body_for(keyvals: tuple[object, ...]) -> Callable[..., str]:
            level = _leading_level(fam, keyvals)
            if level is not None:
                raise _Relevel(level)
            return plain_body_for(keyvals)

        relevel_to: _LevelWriter = relevel
    else:
        relevel_to = _no_relevel
    cget = fam.callers.get
    where = fam.where
    trace = fam.trace
    trace_context = fam.trace_context
    write = fam.sink.write
    on_error = fam.on_error
    safe_line = fam.safe_line
    getframe = sys._getframe
    join = "".join
    str_ = str
    digits3 = _DIGITS3

    if clock is not None and not dynamic_caller and trace_context is None:
        # The default configuration: its own copy of the code below, without the branches for
        # other time formats, the caller and trace ids, and with the context joined to the head.
        fast_clock, fast_refresh, head_ctx = clock, clock.refresh, head + ctx

        def emit_default(*keyvals: object) -> None:
            try:
                ns = time_ns()
                start, end, text = fast_clock.state
                if not start <= ns < end:
                    start, end, text = fast_refresh(ns)
                # The call's shape picks its compiled body; an odd count, an unhashable key or
                # text that is not Unicode raises here and takes the safe path.
                body = shape(keyvals[::2]) or body_for(keyvals)
                us = digits3[(ns - start) // 1000]
                data = f"{text}{us}{head_ctx}{body(*keyvals)}{tail}".encode()
            except _Relevel as lead:
                relevel_to(lead.level, keyvals)
                return
            except Exception:
                data = safe_line(plain_head, ctx, tail, keyvals, None)
            try:
                write(data)
            except Exception as err:
                on_error(err)

        return emit_default

    if clock is not None and not dynamic_caller:
        # The default configuration with a trace hook (what a Kit builds): the same straight
        # line, plus the span's ids when there is one.
        traced_clock, traced_refresh, traced_ctx = clock, clock.refresh, head + ctx
        hook = trace_context
        # Ids known to be hex (a hook with ``hex_ids = True``) need no check and no encoder: the
        # fragments around them are fixed here, e.g. ``,"trace_id":"`` + id + ``","span_id":"``.
        trusted = fam.trusted_ids
        q = fam.id_quote
        tk, sk = fam.trace_keys
        open_ids, mid_ids, close_ids = head + tk + q, q + sk + q, q + ctx

        def emit_traced(*keyvals: object) -> None:
            try:
                ns = time_ns()
                start, end, text = traced_clock.state
                if not start <= ns < end:
                    start, end, text = traced_refresh(ns)
                body = shape(keyvals[::2]) or body_for(keyvals)
                us = digits3[(ns - start) // 1000]
                ids = hook()  # type: ignore[misc]
                if ids is None:
                    data = f"{text}{us}{traced_ctx}{body(*keyvals)}{tail}".encode()
                elif trusted:
                    data = (
                        f"{text}{us}{open_ids}{ids[0]}{mid_ids}{ids[1]}{close_ids}"
                        f"{body(*keyvals)}{tail}"
                    ).encode()
                else:
                    data = f"{text}{us}{head}{trace(ids)}{ctx}{body(*keyvals)}{tail}".encode()
            except _Relevel as lead:
                relevel_to(lead.level, keyvals)
                return
            except Exception:
                data = safe_line(plain_head, ctx, tail, keyvals, None)
            try:
                write(data)
            except Exception as err:
                on_error(err)

        return emit_traced

    def emit(*keyvals: object) -> None:
        try:
            if clock is not None:
                ns = time_ns()
                start, end, text = clock.state
                if not start <= ns < end:
                    start, end, text = refresh(ns)  # type: ignore[misc]
                parts = [text, digits3[(ns - start) // 1000], head]
            else:
                parts = [stamp(), head]
            append = parts.append
            if dynamic_caller:
                frame = getframe(depth)
                filename = frame.f_code.co_filename
                prefix, close = cget(filename) or where(filename)
                append(prefix + str_(frame.f_lineno) + close)
            if trace_context is not None:
                ids = trace_context()
                if ids is not None:
                    append(trace(ids))
            append(ctx)
            append((shape(keyvals[::2]) or body_for(keyvals))(*keyvals))
            append(tail)
            data = join(parts).encode()
        except _Relevel as lead:
            relevel_to(lead.level, keyvals)
            return
        except Exception:
            # An odd count, an unhashable key or value, text that is not Unicode, a failing hook.
            data = safe_line(
                plain_head, ctx, tail, keyvals, getframe(depth) if dynamic_caller else None
            )
        try:
            write(data)
        except Exception as err:
            on_error(err)

    return emit


def _no_relevel(level: str, keyvals: tuple[object, ...]) -> None:  # pragma: no cover
    """Stands in for *relevel* in emitters that are not `log`, whose lookup never raises."""


def _interleave(keys: tuple[str, ...], values: tuple[object, ...]) -> tuple[object, ...]:
    """Return key/values from *keys* and *values*; a missing value is marked, extras are kept."""
    out: list[object] = []
    for i, key in enumerate(keys):
        out.append(key)
        out.append(values[i] if i < len(values) else _MISSING_VALUE)
    for j, extra in enumerate(values[len(keys) :]):
        out.append(f"(EXTRA_{j})")
        out.append(extra)
    return tuple(out)


def _prepared(
    fam: _Family, head: str, ctx: str, tail: str, dynamic_caller: bool, keys: tuple[str, ...]
) -> Callable[..., None]:
    """Build a function writing lines with *keys* that takes only their values (`prepare`).

    In the default configuration (rfc3339_micro time, no per-call caller) it is the emitters'
    straight line with the shape fixed: no matching of keys to a compiled body. Otherwise it
    pairs keys and values and calls the general emitter.
    """
    clock = fam.clock
    if clock is None or dynamic_caller or len(keys) > _SHAPE_PAIRS_MAX:
        emit = _emitter(fam, head, ctx, tail, dynamic_caller, depth=2)

        def prepared_general(*values: object) -> None:
            emit(*_interleave(keys, values))

        return prepared_general

    plain_head = head
    head = clock.tail + head
    refresh = clock.refresh
    time_ns = time.time_ns
    write = fam.sink.write
    on_error = fam.on_error
    safe_line = fam.safe_line
    digits3 = _DIGITS3
    hook = fam.trace_context
    trusted = fam.trusted_ids
    trace = fam.trace
    head_ctx = head + ctx
    q = fam.id_quote
    tk, sk = fam.trace_keys
    open_ids, mid_ids, close_ids = head + tk + q, q + sk + q, q + ctx
    # Compiled at the first call, for the types of its values (as shapes are).
    body: Callable[..., str] | None = None

    def prepared(*values: object) -> None:
        nonlocal body
        try:
            ns = time_ns()
            start, end, text = clock.state
            if not start <= ns < end:
                start, end, text = refresh(ns)
            fn = body
            if fn is None:
                fn = body = _compile_shape(fam, _interleave(keys, values), values_only=True)
            us = digits3[(ns - start) // 1000]
            ids = hook() if hook is not None else None
            if ids is None:
                data = f"{text}{us}{head_ctx}{fn(*values)}{tail}".encode()
            elif trusted:
                data = (
                    f"{text}{us}{open_ids}{ids[0]}{mid_ids}{ids[1]}{close_ids}{fn(*values)}{tail}"
                ).encode()
            else:
                data = f"{text}{us}{head}{trace(ids)}{ctx}{fn(*values)}{tail}".encode()
        except Exception:
            # A wrong number of values, text that is not Unicode, a failing hook.
            data = safe_line(plain_head, ctx, tail, _interleave(keys, values), None)
        try:
            write(data)
        except Exception as err:
            on_error(err)

    return prepared


def _releveler(
    fam: _Family, level_head: str, fixed: str, ctx: str, tail: str, dynamic_caller: bool
) -> _LevelWriter:
    """Build `log`'s *relevel*: write a call's key/values after its leading level pair at that
    level, under the configured level key, or not at all if the level is filtered out.

    The level's emitter is built at its first use: most loggers never get such a call.
    """
    emits: dict[str, Emit] = {}
    codec = fam.codec
    on_error = fam.on_error

    def relevel(level: str, keyvals: tuple[object, ...]) -> None:
        try:
            emit = emits.get(level)
            if emit is None:
                if enabled(fam.minimum, level):
                    head = level_head + codec.string(level) + fixed
                    # Depth 3: past this function and `log`, to the call site.
                    emit = _emitter(fam, head, ctx, tail, dynamic_caller, depth=3)
                else:
                    emit = nop_emit
                emits[level] = emit
            emit(*keyvals[2:])
        except Exception as err:  # pragma: no cover - emitters do not raise
            on_error(err)

    return relevel


def _filtered_log(fam: _Family, relevel: _LevelWriter) -> Emit:
    """Build `log` for a logger whose info level is filtered out: it writes only calls led by a
    level key naming an enabled level."""
    level_keys = fam.level_keys

    def log_filtered(*keyvals: object) -> None:
        try:
            if keyvals[0] in level_keys:
                level = _leading_level(fam, keyvals)
                if level is not None:
                    relevel(level, keyvals)
        except Exception:  # no key/values, or a key whose __eq__ raises: nothing to write
            pass

    return log_filtered


def _pad(keyvals: tuple[object, ...]) -> tuple[object, ...]:
    return (*keyvals, _MISSING_VALUE) if len(keyvals) % 2 else keyvals


class ContextLogger:
    """ContextLogger writes structured lines with bound context, e.g. ``logger.info("msg", "hi")``.

    Build one with `kitobs.log.new` or `kitobs.log.from_settings`. ``log``, ``debug``, ``info``,
    ``warn`` and ``error`` are attributes holding functions made when the logger is built: a level
    below the configured one holds a no-op, so a filtered-out call costs one empty call. ``log``
    writes at info (every line carries a level), unless its first key is ``level`` (or the
    configured level key) with a level name as value: ``log("level", "warn", "msg", "slow")`` is
    ``warn("msg", "slow")``, filtered like it, under the configured level key. Lines read, in
    order: timestamp, level, caller, ``trace_id``/``span_id``, bound context (`with_prefix`, then
    `with_`), the call's key/values, then `with_suffix` values.

    Example::

        >>> from kitobs.log import capture
        >>> logger, records = capture.new()
        >>> logger.with_("svc", "api").info("msg", "ready")
        >>> records
        [{'level': 'info', 'svc': 'api', 'msg': 'ready'}]
    """

    __slots__ = (
        "_caller",
        "_ctx",
        "_fam",
        "_parts",
        "_suffix",
        "debug",
        "error",
        "info",
        "log",
        "warn",
    )

    log: Emit
    debug: Emit
    info: Emit
    warn: Emit
    error: Emit

    def __init__(
        self,
        fam: _Family,
        ctx: tuple[object, ...] = (),
        suffix: tuple[object, ...] = (),
        caller: str | None = None,
    ) -> None:
        self._fam = fam
        self._ctx = ctx
        self._suffix = suffix
        self._caller = caller
        codec = fam.codec
        ctx_text = fam.pairs(ctx)
        tail = fam.pairs(suffix) + codec.close
        lead = codec.sep if fam.stamped else ""
        level_key = codec.key_text(fam.level_key)
        fixed = ""
        if caller is not None and fam.caller:
            fixed = codec.sep + codec.key_text("caller") + codec.other(caller)
        dynamic = fam.caller and caller is None
        emits: dict[str, Emit] = {}
        for name in LEVELS:
            if enabled(fam.minimum, name):
                head = lead + level_key + codec.string(name) + fixed
                emits[name] = _emitter(fam, head, ctx_text, tail, dynamic)
            else:
                emits[name] = nop_emit
        self._parts = (lead + level_key, fixed, ctx_text, tail, dynamic)
        self.debug = emits["debug"]
        self.info = emits["info"]
        self.warn = emits["warn"]
        self.error = emits["error"]
        relevel = _releveler(fam, lead + level_key, fixed, ctx_text, tail, dynamic)
        if enabled(fam.minimum, "info"):
            info_head = lead + level_key + codec.string("info") + fixed
            self.log = _emitter(fam, info_head, ctx_text, tail, dynamic, relevel=relevel)
        else:
            self.log = _filtered_log(fam, relevel)

    def with_(self, *keyvals: object) -> ContextLogger:
        """with_ returns a logger that adds *keyvals* to every line, e.g. ``with_("req", 7)``."""
        return ContextLogger(self._fam, self._ctx + _pad(keyvals), self._suffix, self._caller)

    def with_prefix(self, *keyvals: object) -> ContextLogger:
        """with_prefix returns a logger with *keyvals* before the bound context, e.g. ``"svc"``."""
        return ContextLogger(self._fam, _pad(keyvals) + self._ctx, self._suffix, self._caller)

    def with_suffix(self, *keyvals: object) -> ContextLogger:
        """with_suffix returns a logger with *keyvals* after each call's own, e.g. ``"host"``."""
        return ContextLogger(self._fam, self._ctx, self._suffix + _pad(keyvals), self._caller)

    def with_caller(self, where: str) -> ContextLogger:
        """with_caller returns a logger whose caller is fixed, e.g. ``with_caller("api.py:12")``.

        For lines written on behalf of other code, such as the logging middleware naming the
        endpoint it wraps. Nothing changes if the logger does not write callers.
        """
        if not self._fam.caller:
            return self
        return ContextLogger(self._fam, self._ctx, self._suffix, where)

    def prepare(self, level: str, *keys: str) -> Callable[..., None]:
        """prepare returns a function writing lines with *keys* that takes only their values.

        For the hottest call sites: the keys are encoded once and a call skips matching them to
        a compiled line shape. Prepare once (at construction, not per call): each prepared
        function compiles its line at its first call. A level below the logger's gives a no-op.
        A call with too few values marks the missing ones ``(MISSING)``, as `log` does; extra
        values are written under the keys ``(EXTRA_0)``, ``(EXTRA_1)``... so a mistake shows
        and nothing is lost.

        Example::

            >>> from kitobs.log import capture
            >>> logger, records = capture.new()
            >>> done = logger.prepare("info", "op", "ms")
            >>> done("charge", 12)
            >>> records
            [{'level': 'info', 'op': 'charge', 'ms': 12}]

        Raises:
            ConfigError: an unknown level.
            TypeError: a key that is not a str.
        """
        name = parse_level(level)
        for key in keys:
            if type(key) is not str:
                raise TypeError(f"prepare: keys must be str, got {key!r} ({type(key).__name__})")
        if not enabled(self._fam.minimum, name):
            return nop_emit
        level_head, fixed, ctx_text, tail, dynamic = self._parts
        head = level_head + self._fam.codec.string(name) + fixed
        return _prepared(self._fam, head, ctx_text, tail, dynamic, tuple(keys))

    @property
    def writes_caller(self) -> bool:
        """writes_caller says whether lines carry ``caller``, e.g. for bridges that supply it."""
        return self._fam.caller

    def enabled(self, level: str) -> bool:
        """enabled says whether lines at *level* are written, e.g. ``enabled("debug")``."""
        return enabled(self._fam.minimum, parse_level(level))

    def flush(self) -> None:
        """flush writes out buffered lines, e.g. before a fork; it never raises."""
        try:
            self._fam.sink.flush()
        except Exception as err:
            self._fam.on_error(err)

    def close(self) -> None:
        """close flushes and closes the output shared by this logger and its relatives."""
        try:
            self._fam.sink.close()
        except Exception as err:
            self._fam.on_error(err)


def build(
    codec: Codec,
    sink: Writer,
    *,
    level: str = "info",
    level_key: str = "level",
    time_key: str = "ts",
    time_format: str = "rfc3339_micro",
    caller: bool = False,
    redacted: Callable[[str], bool] | None = None,
    marker: str = "[REDACTED]",
    trace_context: TraceContext | None = None,
    on_error: ErrorHandler,
) -> ContextLogger:
    """build makes a `ContextLogger` writing *codec* lines to *sink*, e.g. for `kitobs.log.new`.

    Raises:
        ConfigError: a bad level, time format or key name.
    """
    fam = _Family(
        codec,
        sink,
        level=level,
        level_key=level_key,
        time_key=time_key,
        time_format=time_format,
        caller=caller,
        redacted=redacted,
        marker=marker,
        trace_context=trace_context,
        on_error=on_error,
    )
    return ContextLogger(fam)
