"""json encodes a line as one JSON object, keys in the order logged.

Keys are the text of the key (``str()`` of a non-string key). A key logged twice appears twice;
``json.loads`` keeps the last. Values: strings, ``None``, booleans, integers and finite floats
are native JSON; NaN and infinities become the strings ``"NaN"``, ``"+Inf"`` and ``"-Inf"``
(JSON has no such numbers); dicts, lists and tuples are encoded as JSON with ``str()`` for what
JSON cannot hold; bytes are decoded as UTF-8 with replacement; anything else goes through
``str()``, and a value whose ``str()`` raises becomes ``"(UNPRINTABLE TypeName)"``. Lone
surrogates are replaced by U+FFFD. Non-ASCII text is written as UTF-8, not escaped, except
U+0085, U+2028 and U+2029 (written ``\\u0085``, ``\\u2028``, ``\\u2029``): with the control
characters JSON escapes anyway, these are every character ``str.splitlines()`` (and log shippers
splitting the same way) breaks a line at, so a record is always one line.

Example::

    >>> CODEC.string('say "hi"')
    '"say \\\\"hi\\\\""'
    >>> CODEC.float_(float("inf"))
    '"+Inf"'
"""

from __future__ import annotations

import json as _json
import math
from collections.abc import Callable
from json.encoder import encode_basestring

from kitobs.log._core import Codec, render_other

__all__ = ["CODEC"]

# The C escaper behind json.dumps, without its per-call dispatch.
_encode: Callable[[str], str] = encode_basestring
# Line breaks for str.splitlines() that JSON allows raw in strings (the others are below U+0020).
_BREAKS = {0x85: "\\u0085", 0x2028: "\\u2028", 0x2029: "\\u2029"}


def _one_line(encoded: str) -> str:
    # In JSON text these characters can only be inside strings, where the escape means the same.
    # Three C searches: each returns at once for text whose widest character is narrower.
    if encoded.isascii() or not ("\u2028" in encoded or "\u2029" in encoded or "\x85" in encoded):
        return encoded
    return encoded.translate(_BREAKS)


def _string(text: str) -> str:
    encoded = _encode(text)
    if encoded.isascii() or not ("\u2028" in encoded or "\u2029" in encoded or "\x85" in encoded):
        return encoded
    return encoded.translate(_BREAKS)


def _float(value: float) -> str:
    if math.isfinite(value):
        return repr(value)
    if value != value:
        return '"NaN"'
    return '"+Inf"' if value > 0 else '"-Inf"'


def _other(value: object) -> str:
    if isinstance(value, dict | list | tuple):
        try:
            return _one_line(
                _json.dumps(
                    value, default=str, ensure_ascii=False, allow_nan=False, separators=(",", ":")
                )
            )
        except (TypeError, ValueError, RecursionError):
            pass  # NaN inside, a cycle, a key JSON cannot hold: fall back to str() below
    return render_other(value, _string, _float)


def _key_text(key: str) -> str:
    return _string(key) + ":"


#: CODEC is the JSON encoding used by `kitobs.log.new` with ``format="json"``.
CODEC = Codec(
    name="json",
    sep=",",
    open_="{",
    close="}\n",
    key_text=_key_text,
    string=_string,
    float_=_float,
    other=_other,
)
