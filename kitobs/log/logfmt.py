"""logfmt encodes a line as ``key=value`` pairs separated by spaces, following go-logfmt.

Rules (go-logfmt's, so its decoder reads kitobs lines back exactly):

- Keys keep their order. A key's characters must be above space and not ``=``, ``"`` or U+FFFD
  (go-logfmt's rule); any other character (also U+007F-U+009F, U+2028 and U+2029) is replaced by
  ``_`` (an empty key becomes ``_``). So values decode back exactly, keys may be sanitised.
- A value is quoted when it holds a space, ``=``, ``"``, a control character or text that is not
  valid Unicode; inside quotes ``\\``, ``"``, ``\\n``, ``\\r`` and ``\\t`` are escaped and other
  control characters (also U+007F-U+009F, U+2028 and U+2029) are written as ``\\u00XX``. A lone
  surrogate becomes ``\\ufffd``. The empty string is written as nothing (``key=``).
- ``None`` is ``null`` and the string ``"null"`` is quoted; booleans are ``true``/``false``;
  numbers use Python's shortest round-tripping form (``inf``, ``nan`` included); bytes are
  decoded as UTF-8 with replacement; anything else goes through ``str()``, and a value whose
  ``str()`` raises becomes ``(UNPRINTABLE TypeName)``.

Example::

    >>> CODEC.string("hello world")
    '"hello world"'
    >>> CODEC.key_text("user id")
    'user_id='
"""

from __future__ import annotations

import re

from kitobs.log._core import Codec, render_other

__all__ = ["CODEC", "sanitize_key"]

# Characters that force quoting (go-logfmt's needsQuotedValueRune, plus C1 controls and the
# Unicode line separators, which some viewers split lines on).
_SPECIAL = r'[\x00-\x20="\x7f-\x9f\u2028\u2029\ud800-\udfff]'
_needs_quote = re.compile(_SPECIAL).search
# go-logfmt refuses U+FFFD (its utf8.RuneError) in a key, though not in a value.
_bad_key = re.compile(r'[\x00-\x20="\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffd]').sub

_ESCAPES: dict[int, str] = {c: f"\\u{c:04x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_ESCAPES.update({0x2028: "\\u2028", 0x2029: "\\u2029"})
_ESCAPES.update({c: "\\ufffd" for c in range(0xD800, 0xE000)})
_ESCAPES.update({ord("\\"): "\\\\", ord('"'): '\\"', ord("\n"): "\\n", ord("\r"): "\\r"})
_ESCAPES[ord("\t")] = "\\t"


def sanitize_key(key: str) -> str:
    """sanitize_key makes *key* a valid logfmt key, e.g. ``"a b"`` -> ``"a_b"``; ``""`` is ``_``."""
    return _bad_key("_", key) or "_"


def _string(text: str) -> str:
    if _needs_quote(text) is None:
        return text if text != "null" else '"null"'
    return '"' + text.translate(_ESCAPES) + '"'


def _float(value: float) -> str:
    return repr(value)


def _other(value: object) -> str:
    return render_other(value, _string, _float)


def _key_text(key: str) -> str:
    return sanitize_key(key) + "="


#: CODEC is the logfmt encoding used by `kitobs.log.new` with ``format="logfmt"``.
CODEC = Codec(
    name="logfmt",
    sep=" ",
    open_="",
    close="\n",
    key_text=_key_text,
    string=_string,
    float_=_float,
    other=_other,
)
