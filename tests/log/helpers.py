"""Helpers for the log tests: a Writer keeping lines, and a logfmt parser to go-logfmt's grammar.

The parser is written from go-logfmt's grammar, not from kitobs' encoder::

    ident_byte = any byte greater than ' ', excluding '=' and '"'
    string_byte = any byte excluding '"' and '\\'
    garbage = !ident_byte
    ident = ident_byte, { ident byte }
    key = ident
    value = ident | '"', { string_byte | '\\', '"' }, '"'
    pair = key, '=', value | key, '=' | key
    message = { garbage, pair }, garbage

`parse_logfmt_strict` reads only what go-logfmt's encoder writes: one space between pairs, every
pair ``key=value``, keys free of U+FFFD, quoted values with no raw control characters.

Quoted values are unescaped as go-logfmt does (JSON string escapes, ``\\uXXXX`` included).
"""

from __future__ import annotations


class Lines:
    """A Writer keeping each line as text."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, data: bytes) -> None:
        self.lines.append(data.decode("utf-8"))  # strict: a line must be valid UTF-8

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _unquote(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        esc = text[i + 1]
        if esc == "u":
            code = int(text[i + 2 : i + 6], 16)
            i += 6
            if 0xD800 <= code < 0xDC00 and text[i : i + 2] == "\\u":
                low = int(text[i + 2 : i + 6], 16)
                code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                i += 6
            out.append(chr(code))
        else:
            out.append(_ESCAPES[esc])
            i += 2
    return "".join(out)


def _ident_char(c: str) -> bool:
    return c > " " and c not in '="'


def parse_logfmt(line: str) -> list[tuple[str, str | None]]:
    """Parse one logfmt line (without its newline) into (key, value) pairs; None for a bare key."""
    pairs: list[tuple[str, str | None]] = []
    i, n = 0, len(line)
    while i < n:
        while i < n and not _ident_char(line[i]):  # garbage
            i += 1
        if i >= n:
            break
        start = i
        while i < n and _ident_char(line[i]):
            i += 1
        key = line[start:i]
        if i >= n or line[i] != "=":
            pairs.append((key, None))
            continue
        i += 1  # '='
        if i < n and line[i] == '"':
            i += 1
            start = i
            while line[i] != '"':
                i += 2 if line[i] == "\\" else 1
            pairs.append((key, _unquote(line[start:i])))
            i += 1
        else:
            start = i
            while i < n and _ident_char(line[i]):
                i += 1
            pairs.append((key, line[start:i]))
    return pairs


def sanitized(key: str) -> str:
    """The key as a go-logfmt ident: characters that cannot be in one become '_'."""
    out = "".join(
        c
        if c > " "
        and c not in '="\ufffd'
        and not ("\x7f" <= c <= "\x9f")
        and c not in "\u2028\u2029"
        else "_"
        for c in key
    )
    return out or "_"


class LogfmtSyntaxError(ValueError):
    """A line go-logfmt's encoder could not have written (or its decoder would refuse)."""


def _strict_unquote(text: str, line: str) -> str:
    for c in text:
        if c < " ":
            raise LogfmtSyntaxError(f"raw control character {c!r} in a quoted value: {line!r}")
    i = 0
    while i < len(text):
        if text[i] == "\\":
            esc = text[i + 1 : i + 2]
            if esc == "u":
                if not all(h in "0123456789abcdefABCDEF" for h in text[i + 2 : i + 6]) or (
                    len(text) < i + 6
                ):
                    raise LogfmtSyntaxError(f"bad \\u escape in {line!r}")
                i += 6
                continue
            if esc not in _ESCAPES:
                raise LogfmtSyntaxError(f"bad escape {esc!r} in {line!r}")
            i += 2
            continue
        i += 1
    return _unquote(text)


def parse_logfmt_strict(line: str) -> list[tuple[str, str | None]]:
    """Parse one whole logfmt line as go-logfmt's encoder writes it, refusing anything else.

    The line must be pairs ``key=value`` separated by exactly one space, with nothing before,
    after or in between: a key is one or more characters above space other than ``=``, ``"``
    and U+FFFD (go-logfmt's invalidKeyRune); a value is empty, a run of such characters (U+FFFD
    allowed), or a quoted string holding no raw control character and only JSON escapes.
    """
    if "\n" in line or "\r" in line:
        raise LogfmtSyntaxError(f"line break inside the line: {line!r}")
    if len(line.splitlines()) > 1:
        raise LogfmtSyntaxError(f"str.splitlines() cuts the line: {line!r}")
    pairs: list[tuple[str, str | None]] = []
    i, n = 0, len(line)
    while True:
        start = i
        while i < n and line[i] > " " and line[i] not in '="':
            i += 1
        key = line[start:i]
        if not key:
            raise LogfmtSyntaxError(f"empty or invalid key at {start} in {line!r}")
        if "\ufffd" in key:
            raise LogfmtSyntaxError(f"U+FFFD in key {key!r}: go-logfmt refuses it")
        if i >= n or line[i] != "=":
            raise LogfmtSyntaxError(f"key {key!r} without '=' in {line!r}")
        i += 1
        if i < n and line[i] == '"':
            i += 1
            start = i
            while i < n and line[i] != '"':
                i += 2 if line[i] == "\\" else 1
            if i >= n:
                raise LogfmtSyntaxError(f"unterminated quoted value in {line!r}")
            pairs.append((key, _strict_unquote(line[start:i], line)))
            i += 1
        else:
            start = i
            while i < n and line[i] > " " and line[i] not in '="':
                i += 1
            pairs.append((key, line[start:i]))
        if i == n:
            return pairs
        if line[i] != " " or i + 1 >= n:
            raise LogfmtSyntaxError(f"unexpected {line[i]!r} at {i} in {line!r}")
        i += 1
